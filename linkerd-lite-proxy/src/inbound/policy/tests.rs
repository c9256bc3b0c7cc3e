use super::*;
use api::authn::{Permit, PermitMeshTls, PermitUnauthenticated, permit_mesh_tls};
use http::{Method, StatusCode};
use linkerd2_proxy_api::{
    http_route::{self as hr, path_match},
    http_types::HttpMethod,
    meta,
};

const APP: &str = "app.shop.serviceaccount.identity.linkerd-lite.cluster.local";
const WEB: &str = "web.shop.serviceaccount.identity.linkerd-lite.cluster.local";

fn identities(names: &[&str]) -> api::Authz {
    let ids = permit_mesh_tls::PermitClientIdentities {
        identities: names
            .iter()
            .map(|n| api::Identity { name: (*n).into() })
            .collect(),
        suffixes: vec![],
    };
    api::Authz {
        authentication: Some(api::Authn {
            permit: Some(Permit::MeshTls(PermitMeshTls {
                clients: Some(permit_mesh_tls::Clients::Identities(ids)),
            })),
        }),
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "access.smi-spec.io".into(),
                kind: "TrafficTarget".into(),
                name: names.join("+"),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

fn anyone() -> api::Authz {
    api::Authz {
        authentication: Some(api::Authn {
            permit: Some(Permit::Unauthenticated(PermitUnauthenticated {})),
        }),
        ..Default::default()
    }
}

fn route(name: &str, matches: Vec<hr::HttpRouteMatch>, authz: Vec<api::Authz>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default(name.into())),
        }),
        hosts: vec![],
        authorizations: authz,
        rules: vec![api::http_route::Rule {
            matches,
            filters: vec![],
        }],
    }
}

fn path(kind: path_match::Kind) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        path: Some(hr::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

fn get_api() -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        method: Some(HttpMethod::from(Method::GET)),
        ..path(path_match::Kind::Regex("^(?:/api).*".into()))
    }
}

fn detect(routes: Vec<api::HttpRoute>, authz: Vec<api::Authz>) -> api::Server {
    api::Server {
        protocol: Some(api::ProxyProtocol {
            kind: Some(Kind::Detect(api::proxy_protocol::Detect {
                http_routes: routes,
                ..Default::default()
            })),
        }),
        authorizations: authz,
        ..Default::default()
    }
}

/// What the destination sends for a TrafficTarget admitting APP to `GET /api*` only:
/// no server-level authorization, an empty default route, and the specific route.
fn smi_style() -> api::Server {
    detect(
        vec![
            route(
                "default",
                vec![path(path_match::Kind::Prefix("/".into()))],
                vec![],
            ),
            route(
                "traffictarget:api",
                vec![get_api()],
                vec![identities(&[APP])],
            ),
        ],
        vec![],
    )
}

fn req(method: Method, uri: &str) -> Request<()> {
    Request::builder().method(method).uri(uri).body(()).unwrap()
}

fn status(r: Result<(), ProxyError>) -> StatusCode {
    r.map_or_else(|e| e.status(), |()| StatusCode::OK)
}

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

#[test]
fn requests_are_authorized_by_their_best_route() {
    let m = Metrics::new();
    let p = PortPolicy::from_server(&smi_style(), 8080, &m).unwrap();
    // (method, path, client, status)
    let table: &[(Method, &str, Option<&str>, StatusCode)] = &[
        (Method::GET, "/api", Some(APP), StatusCode::OK),
        (Method::GET, "/api/books", Some(APP), StatusCode::OK),
        (Method::POST, "/api/books", Some(APP), StatusCode::FORBIDDEN),
        (Method::GET, "/other", Some(APP), StatusCode::FORBIDDEN),
        (Method::GET, "/api", Some(WEB), StatusCode::FORBIDDEN),
        (Method::GET, "/api", None, StatusCode::FORBIDDEN),
    ];
    for (method, path, client, want) in table {
        let got = status(p.authorize_http(&req(method.clone(), path), IP, *client));
        assert_eq!(got, *want, "{method} {path} by {client:?}");
    }
    // Opaque connections use the (empty) server-level authorizations.
    assert!(!p.authorize(IP, Some(APP)));
    assert!(!p.opaque);

    let text = m.encode();
    for want in [
        r#"inbound_http_authz_allow_total{target_port="8080",route_group="",route_kind="default",route_name="traffictarget:api",authz_group="access.smi-spec.io",authz_kind="traffictarget",authz_name="app.shop.serviceaccount.identity.linkerd-lite.cluster.local"} 2"#,
        r#"inbound_http_authz_deny_total{target_port="8080",route_group="",route_kind="default",route_name="traffictarget:api"} 2"#,
        r#"inbound_http_authz_deny_total{target_port="8080",route_group="",route_kind="default",route_name="default"} 2"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[test]
fn no_matching_route_is_404_and_hosts_narrow_routes() {
    let mut only_api = route("api", vec![get_api()], vec![anyone()]);
    only_api.hosts = vec![hr::HostMatch {
        r#match: Some(hr::host_match::Match::Exact("web.shop".into())),
    }];
    let p = PortPolicy::from_server(&detect(vec![only_api], vec![]), 80, &Metrics::new()).unwrap();
    let with_host =
        |host: &str, path: &str| Request::get(path).header("host", host).body(()).unwrap();
    let check = |r: Request<()>| status(p.authorize_http(&r, IP, None));
    assert_eq!(check(with_host("web.shop:80", "/api")), StatusCode::OK);
    assert_eq!(check(with_host("web.shop", "/x")), StatusCode::NOT_FOUND);
    assert_eq!(check(with_host("api.shop", "/api")), StatusCode::NOT_FOUND);
    assert_eq!(check(req(Method::GET, "/api")), StatusCode::NOT_FOUND);
}

#[test]
fn servers_without_routes_get_a_catch_all_route_with_server_authorizations() {
    let m = Metrics::new();
    let p = PortPolicy::from_server(&detect(vec![], vec![identities(&[APP])]), 80, &m).unwrap();
    assert_eq!(
        status(p.authorize_http(&req(Method::GET, "/x"), IP, Some(APP))),
        StatusCode::OK
    );
    assert_eq!(
        status(p.authorize_http(&req(Method::GET, "/x"), IP, None)),
        StatusCode::FORBIDDEN
    );
    assert!(p.authorize(IP, Some(APP)));
    assert!(!p.authorize(IP, None));

    let opaque = api::Server {
        protocol: Some(api::ProxyProtocol {
            kind: Some(Kind::Opaque(api::proxy_protocol::Opaque {})),
        }),
        authorizations: vec![anyone()],
        ..Default::default()
    };
    let p = PortPolicy::from_server(&opaque, 25, &m).unwrap();
    assert!(p.opaque);
    assert!(p.authorize(IP, None));
}

#[test]
fn defaults_keep_their_meaning() {
    let m = Metrics::new();
    let r = req(Method::GET, "/anything");
    for (default, plain, mtls) in [
        (DefaultPolicy::AllUnauthenticated, true, true),
        (DefaultPolicy::AllAuthenticated, false, true),
        (DefaultPolicy::Deny, false, false),
    ] {
        let p = PortPolicy::from_default(default, 80, &m);
        assert_eq!(p.authorize(IP, None), plain, "{default:?}");
        assert_eq!(p.authorize(IP, Some(APP)), mtls, "{default:?}");
        assert_eq!(p.authorize_http(&r, IP, None).is_ok(), plain, "{default:?}");
        assert_eq!(
            p.authorize_http(&r, IP, Some(APP)).is_ok(),
            mtls,
            "{default:?}"
        );
    }
    assert!(m.encode().contains(
        r#"inbound_http_authz_allow_total{target_port="80",route_group="",route_kind="default",route_name="default",authz_group="",authz_kind="default",authz_name="all-unauthenticated"} 2"#
    ));
}

#[test]
fn malformed_policies_name_the_field() {
    let m = Metrics::new();
    let bad_regex = detect(
        vec![
            route("ok", vec![get_api()], vec![]),
            route(
                "bad",
                vec![path(path_match::Kind::Regex("(".into()))],
                vec![],
            ),
        ],
        vec![],
    );
    let no_rules = {
        let mut r = route("x", vec![], vec![]);
        r.rules.clear();
        api::Server {
            protocol: Some(api::ProxyProtocol {
                kind: Some(Kind::Http1(api::proxy_protocol::Http1 {
                    routes: vec![r],
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    };
    let bad_route_authz = detect(
        vec![route("x", vec![], vec![api::Authz::default()])],
        vec![],
    );
    let bad_server_authz = detect(vec![], vec![anyone(), api::Authz::default()]);
    let bad_host = {
        let mut r = route("x", vec![], vec![]);
        r.hosts = vec![hr::HostMatch { r#match: None }];
        detect(vec![r], vec![])
    };
    for (server, want) in [
        (
            bad_regex,
            r#"protocol.detect.http_routes[1].rules[0].matches[0].path.regex: invalid regex "(": unclosed group"#,
        ),
        (
            no_rules,
            "protocol.http1.routes[0].rules: empty; a route needs a rule",
        ),
        (
            bad_route_authz,
            "protocol.detect.http_routes[0].authorizations[0].authentication: missing",
        ),
        (
            bad_server_authz,
            "authorizations[1].authentication: missing",
        ),
        (
            bad_host,
            "protocol.detect.http_routes[0].hosts[0].match: missing",
        ),
    ] {
        let err = PortPolicy::from_server(&server, 80, &m).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn an_invalid_update_keeps_the_previous_policy_or_admits_nobody() {
    let m = Metrics::new();
    let invalid = detect(
        vec![route(
            "bad",
            vec![path(path_match::Kind::Regex("(".into()))],
            vec![],
        )],
        vec![anyone()],
    );
    let r = req(Method::GET, "/api");
    let (tx, rx) = watch::channel(None);
    publish(&tx, &invalid, 80, &m);
    let first = rx.borrow().clone().unwrap();
    assert_eq!(
        status(first.authorize_http(&r, IP, None)),
        StatusCode::FORBIDDEN,
        "nobody is admitted by a policy that never compiled"
    );
    assert!(!first.authorize(IP, None));

    let open = detect(vec![route("all", vec![], vec![anyone()])], vec![anyone()]);
    publish(&tx, &open, 80, &m);
    publish(&tx, &invalid, 80, &m);
    let kept = rx.borrow().clone().unwrap();
    assert_eq!(status(kept.authorize_http(&r, IP, None)), StatusCode::OK);
}

#[tokio::test]
async fn without_a_policy_service_every_port_gets_the_default() {
    let policies = Policies::new(None, None, DefaultPolicy::AllAuthenticated, Metrics::new());
    let watch = policies.get(8080).await;
    let p = watch.current();
    assert!(!p.authorize(IP, None));
    assert!(p.authorize(IP, Some(APP)));
    assert!(
        Arc::ptr_eq(&p, &policies.get(8080).await.current()),
        "compiled once"
    );
}
