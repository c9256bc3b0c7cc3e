//! Routing by `OutboundPolicies`: a client proxy watches a scripted policy over real
//! gRPC and sends each request by its matched rule: backends, filters, splits, and
//! the fallback to profiles for targets without a policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{apps, policy::*, *};
use http::{Method, StatusCode};
use linkerd_lite_proxy::env::Config;
use linkerd2_proxy_api::{
    http_route as hr, http_types, outbound::http_route::filter::Kind as FilterKind,
};

const WEB: &str = "web.test:80";
const V1: &str = "web-v1.test:80";
const V2: &str = "web-v2.test:80";
const API: &str = "api.test:80";

struct Mesh {
    dst: TestDestination,
    proxy: RunningProxy,
}

/// A client proxy whose destination knows `web` (app `web`), `web-v1`, `web-v2`
/// and `api`, each served by its own application named after it.
async fn mesh() -> Mesh {
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    for (authority, name) in [(WEB, "web"), (V1, "v1"), (V2, "v2"), (API, "api")] {
        let app = app_server(name, Duration::ZERO).await;
        dst.set(authority, vec![Ep::plain(app, name)]);
    }
    let cfg = Config {
        destination_addr: Some(dst_addr.to_string()),
        ..test_config()
    };
    let proxy = start_proxy(cfg, None).await;
    Mesh { dst, proxy }
}

async fn server(c: &mut H1, path: &str, headers: &[(&str, &str)]) -> String {
    let r = c.get("web.test", path, headers).await;
    format!("{} {}", r.status.as_u16(), r.header("x-server"))
}

#[tokio::test]
async fn requests_route_by_path_header_and_method_and_follow_live_updates() {
    let m = mesh().await;
    m.dst.set_outbound(
        WEB,
        policy(
            WEB,
            vec![route(
                "web",
                vec![
                    rule(vec![prefix("/api")], &[(API, 1)]),
                    rule(vec![with_header(prefix("/"), "x-canary", "1")], &[(V2, 1)]),
                    rule(
                        vec![with_method(exact("/orders"), Method::POST)],
                        &[(V1, 1)],
                    ),
                    rule(vec![regex("/static/.*")], &[(V1, 1)]),
                    rule(vec![prefix("/")], &[(WEB, 1)]),
                ],
            )],
        ),
    );
    let mut c = H1::connect(m.proxy.addrs.outbound).await;
    assert_eq!(server(&mut c, "/api/users", &[]).await, "200 api");
    assert_eq!(
        server(&mut c, "/apiary", &[]).await,
        "200 web",
        "prefixes match whole segments"
    );
    assert_eq!(server(&mut c, "/", &[("x-canary", "1")]).await, "200 v2");
    // A longer prefix beats a header match.
    assert_eq!(
        server(&mut c, "/api", &[("x-canary", "1")]).await,
        "200 api"
    );
    assert_eq!(server(&mut c, "/static/app.js", &[]).await, "200 v1");
    assert_eq!(
        server(&mut c, "/orders", &[]).await,
        "200 web",
        "GET is not POST"
    );
    let post = http::Request::post("/orders")
        .header("host", "web.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(read(c.send(post).await).await.header("x-server"), "v1");

    // A live update moves /api to v2 on the same connection, without a new stream.
    m.dst.set_outbound(
        WEB,
        policy(
            WEB,
            vec![route(
                "web",
                vec![
                    rule(vec![prefix("/api")], &[(V2, 1)]),
                    rule(vec![prefix("/")], &[(WEB, 1)]),
                ],
            )],
        ),
    );
    assert_eventually!(
        server(&mut c, "/api/users", &[]).await == "200 v2",
        Duration::from_secs(5),
        "the update never applied"
    );
    assert_eq!(server(&mut c, "/static/app.js", &[]).await, "200 web");
    assert_eq!(
        m.dst.policy_watches.lock().unwrap().len(),
        1,
        "one Watch call"
    );
    assert_eq!(m.dst.open_policy_streams(), 1);
}

#[tokio::test]
async fn requests_no_rule_matches_answer_404_with_a_reason() {
    let m = mesh().await;
    m.dst.set_outbound(
        WEB,
        policy(
            WEB,
            vec![route("web", vec![rule(vec![exact("/only")], &[(WEB, 1)])])],
        ),
    );
    let mut c = H1::connect(m.proxy.addrs.outbound).await;
    assert_eq!(server(&mut c, "/only", &[]).await, "200 web");
    let r = c.get("web.test", "/other", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("l5d-proxy-error"), "no route found for request");
    // The connection survives.
    assert_eq!(server(&mut c, "/only", &[]).await, "200 web");
}

#[tokio::test]
async fn route_hosts_restrict_which_authorities_a_route_serves() {
    let m = mesh().await;
    let mut only_other = route("other-host", vec![rule(vec![prefix("/")], &[(V2, 1)])]);
    only_other.hosts = vec![hr::HostMatch {
        r#match: Some(hr::host_match::Match::Exact("other.example".into())),
    }];
    let mut this_host = route("this-host", vec![rule(vec![prefix("/")], &[(V1, 1)])]);
    this_host.hosts = vec![hr::HostMatch {
        r#match: Some(hr::host_match::Match::Exact("web.test".into())),
    }];
    m.dst
        .set_outbound(WEB, policy(WEB, vec![only_other, this_host]));
    let mut c = H1::connect(m.proxy.addrs.outbound).await;
    assert_eq!(server(&mut c, "/", &[]).await, "200 v1");
}

#[tokio::test]
async fn weighted_backends_split_traffic_and_override_profile_splits() {
    let m = mesh().await;
    // A profile split to v2 only; the policy wins.
    m.dst.set_split(WEB, &[(V2, 1)]);
    m.dst.set_outbound(
        WEB,
        policy(
            WEB,
            vec![route("canary", vec![rule(vec![], &[(V1, 800), (V2, 200)])])],
        ),
    );
    let mut c = H1::connect(m.proxy.addrs.outbound).await;
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..500 {
        match server(&mut c, "/", &[]).await.as_str() {
            "200 v1" => v1 += 1,
            "200 v2" => v2 += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let share = f64::from(v1) / 500.0;
    eprintln!("80/20 split through OutboundPolicies: v1 {v1}, v2 {v2} ({share:.3})");
    assert!((0.74..=0.86).contains(&share), "v1 share {share:.3}");

    // Zero weight receives nothing.
    m.dst.set_outbound(
        WEB,
        policy(
            WEB,
            vec![route("canary", vec![rule(vec![], &[(V1, 0), (V2, 1)])])],
        ),
    );
    assert_eventually!(
        server(&mut c, "/", &[]).await == "200 v2",
        Duration::from_secs(5),
        "the update never applied"
    );
    for _ in 0..50 {
        assert_eq!(server(&mut c, "/", &[]).await, "200 v2");
    }
}

#[tokio::test]
async fn targets_the_destination_does_not_know_fall_back_to_profiles() {
    let m = mesh().await;
    // No policy for `web` (NotFound), but a profile split.
    m.dst.set_split(WEB, &[(V1, 1)]);
    let started = tokio::time::Instant::now();
    let mut c = H1::connect(m.proxy.addrs.outbound).await;
    for _ in 0..10 {
        assert_eq!(server(&mut c, "/", &[]).await, "200 v1");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "requests waited"
    );
    assert_eq!(m.dst.policy_watches.lock().unwrap()[0], WEB);

    // An address target is asked about by address.
    let app = app_server("direct", Duration::ZERO).await;
    let r = c.get(&app.to_string(), "/", &[]).await;
    assert_eq!(r.header("x-server"), "direct");
    assert!(
        m.dst
            .policy_watches
            .lock()
            .unwrap()
            .contains(&app.to_string())
    );
}

fn headers(pairs: &[(&str, &str)]) -> Option<http_types::Headers> {
    Some(http_types::Headers {
        headers: pairs
            .iter()
            .map(|(n, v)| http_types::headers::Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
    })
}

#[tokio::test]
async fn filters_modify_headers_redirect_and_refuse_unknown_kinds() {
    let scripted = apps::fixed("web", 200).await;
    let m = mesh().await;
    m.dst.set(WEB, vec![Ep::plain(scripted.addr, "web")]);
    let mut r = rule(vec![], &[(WEB, 1)]);
    r.filters = vec![
        filter(FilterKind::RequestHeaderModifier(
            hr::RequestHeaderModifier {
                add: headers(&[("x-added", "1")]),
                set: headers(&[("x-env", "prod")]),
                remove: vec!["x-debug".into()],
            },
        )),
        filter(FilterKind::ResponseHeaderModifier(
            hr::ResponseHeaderModifier {
                add: None,
                set: headers(&[("x-routed", "yes")]),
                remove: vec![],
            },
        )),
    ];
    m.dst
        .set_outbound(WEB, policy(WEB, vec![route("web", vec![r])]));
    let mut c = H1::connect(m.proxy.addrs.outbound).await;
    let reply = c
        .get("web.test", "/", &[("x-env", "dev"), ("x-debug", "1")])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-routed"), "yes");
    let seen = &scripted.requests()[0];
    assert_eq!(seen.headers["x-added"], "1");
    assert_eq!(seen.headers["x-env"], "prod");
    assert!(!seen.headers.contains_key("x-debug"));

    // A redirect answers without forwarding.
    let mut r = rule(vec![], &[(WEB, 1)]);
    r.filters = vec![filter(FilterKind::Redirect(hr::RequestRedirect {
        host: "new.example".into(),
        status: 302,
        ..Default::default()
    }))];
    m.dst
        .set_outbound(WEB, policy(WEB, vec![route("web", vec![r])]));
    assert_eventually!(
        c.get("web.test", "/a?b=1", &[]).await.status == StatusCode::FOUND,
        Duration::from_secs(5),
        "the redirect never applied"
    );
    let before = scripted.hits();
    let reply = c.get("web.test", "/a?b=1", &[]).await;
    assert_eq!(reply.header("location"), "http://new.example/a?b=1");
    assert_eq!(scripted.hits(), before, "redirects are not forwarded");

    // A filter kind this proxy does not know fails the request, never skips it.
    let mut r = rule(vec![], &[(WEB, 1)]);
    r.filters = vec![linkerd2_proxy_api::outbound::http_route::Filter { kind: None }];
    m.dst
        .set_outbound(WEB, policy(WEB, vec![route("web", vec![r])]));
    assert_eventually!(
        c.get("web.test", "/", &[]).await.status == StatusCode::INTERNAL_SERVER_ERROR,
        Duration::from_secs(5),
        "the unknown filter never applied"
    );
    let before = scripted.hits();
    let reply = c.get("web.test", "/", &[]).await;
    assert_eq!(
        reply.header("l5d-proxy-error"),
        "route has a filter this proxy does not support"
    );
    assert_eq!(scripted.hits(), before, "nothing forwarded");
}

#[tokio::test]
async fn invalid_routes_are_dropped_without_harm() {
    let m = mesh().await;
    let mut bad = rule(vec![prefix("/")], &[(V2, 1)]);
    bad.retry = Some(linkerd2_proxy_api::outbound::http_route::Retry {
        conditions: Some(
            linkerd2_proxy_api::outbound::http_route::retry::Conditions {
                status_ranges: vec![
                    linkerd2_proxy_api::outbound::http_route::retry::conditions::StatusRange {
                        start: 600,
                        end: 100,
                    },
                ],
            },
        ),
        ..Default::default()
    });
    m.dst.set_outbound(
        WEB,
        policy(
            WEB,
            vec![
                route("broken", vec![bad]),
                route("web", vec![rule(vec![prefix("/")], &[(V1, 1)])]),
            ],
        ),
    );
    let mut c = H1::connect(m.proxy.addrs.outbound).await;
    for _ in 0..5 {
        assert_eq!(server(&mut c, "/", &[]).await, "200 v1");
    }
}

#[tokio::test]
async fn policy_streams_close_with_their_idle_target() {
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    let app = app_server("web", Duration::ZERO).await;
    dst.set(WEB, vec![Ep::plain(app, "web")]);
    dst.set_outbound(
        WEB,
        policy(WEB, vec![route("web", vec![rule(vec![], &[(WEB, 1)])])]),
    );
    let cfg = Config {
        destination_addr: Some(dst_addr.to_string()),
        cache_idle_timeout: Duration::from_millis(200),
        ..test_config()
    };
    let proxy = start_proxy(cfg, None).await;
    {
        let mut c = H1::connect(proxy.addrs.outbound).await;
        assert_eq!(server(&mut c, "/", &[]).await, "200 web");
    }
    assert_eq!(dst.open_policy_streams(), 1);
    assert_eventually!(
        proxy.outbound.cached_targets() == 0 && dst.open_policy_streams() == 0,
        Duration::from_secs(5),
        "the idle target's policy stream stayed open"
    );
    let _: SocketAddr = app;
}
