use linkerd2_proxy_api::{destination::WeightedAddr, outbound::backend::*};
use prost_types::Duration as PbDuration;

use super::*;
use crate::policy::metrics::RouteFamilies;

const KEY: &str = "web.shop.svc.cluster.local:80";

fn pb(ms: u64) -> Option<PbDuration> {
    PbDuration::try_from(Duration::from_millis(ms)).ok()
}

fn svc_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name: name.into(),
            namespace: "shop".into(),
            section: String::new(),
            port: 80,
        })),
    }
}

fn backend(name: &str) -> api::Backend {
    api::Backend {
        metadata: Some(svc_meta(name)),
        queue: Some(api::Queue {
            capacity: 100,
            failfast_timeout: pb(3000),
        }),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: format!("{name}.shop.svc.cluster.local:80"),
                    },
                )),
            }),
            load: None,
        })),
    }
}

fn weighted(backends: &[(&str, u32)]) -> Option<route::Distribution> {
    Some(route::Distribution {
        kind: Some(route::distribution::Kind::RandomAvailable(
            route::distribution::RandomAvailable {
                backends: backends
                    .iter()
                    .map(|(name, weight)| route::WeightedRouteBackend {
                        backend: Some(route::RouteBackend {
                            backend: Some(backend(name)),
                            ..Default::default()
                        }),
                        weight: *weight,
                    })
                    .collect(),
            },
        )),
    })
}

fn http_route(name: &str, rules: Vec<route::Rule>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                name: name.into(),
                namespace: "shop".into(),
                ..Default::default()
            })),
        }),
        hosts: vec![],
        rules,
    }
}

fn rule(backends: &[(&str, u32)]) -> route::Rule {
    route::Rule {
        backends: weighted(backends),
        ..Default::default()
    }
}

fn policy_of(routes: Vec<api::HttpRoute>) -> api::OutboundPolicy {
    use proxy_protocol::{Detect, Http1, Http2, Kind};
    let accrual = api::FailureAccrual {
        kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
            api::failure_accrual::ConsecutiveFailures {
                max_failures: 7,
                backoff: Some(api::ExponentialBackoff {
                    min_backoff: pb(1000),
                    max_backoff: pb(60_000),
                    jitter_ratio: 0.5,
                    respect_retry_after_hint: false,
                }),
            },
        )),
        ejection: None,
    };
    api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol {
            kind: Some(Kind::Detect(Detect {
                timeout: pb(10_000),
                opaque: None,
                http1: Some(Http1 {
                    routes: routes.clone(),
                    failure_accrual: Some(accrual),
                }),
                http2: Some(Http2 {
                    routes,
                    failure_accrual: Some(accrual),
                }),
            })),
        }),
        metadata: Some(svc_meta("web")),
    }
}

fn convert(msg: &api::OutboundPolicy) -> PolicyState {
    policy(
        msg,
        &Ctx {
            key: KEY,
            families: &RouteFamilies::default(),
        },
    )
}

fn known(msg: &api::OutboundPolicy) -> Arc<OutboundPolicy> {
    match convert(msg) {
        PolicyState::Known(p) => p,
        other => panic!("expected a policy, got {other:?}"),
    }
}

#[test]
fn the_default_route_sends_to_the_parent_with_failure_accrual() {
    let p = known(&policy_of(vec![http_route(
        "default",
        vec![rule(&[("web", 1000)])],
    )]));
    assert_eq!(p.http1.len(), 1);
    assert!(
        Arc::ptr_eq(&p.http1, &p.http2),
        "identical routes are shared"
    );
    let rule = &p.http1[0].rules[0];
    assert_eq!(rule.backends.len(), 1);
    assert_eq!(rule.backends[0].target, BackendTarget::Parent);
    assert_eq!(
        rule.backends[0].queue,
        Some(Queue {
            capacity: 100,
            failfast: Duration::from_secs(3)
        })
    );
    assert!(rule.retry.is_none());
    assert_eq!(rule.timeouts, Timeouts::default());
    let a = p.accrual.unwrap();
    assert_eq!(a.max_failures, 7);
    assert_eq!(a.backoff.min, Duration::from_secs(1));
    assert_eq!(a.backoff.max, Duration::from_secs(60));
    assert_eq!(p.parent.name.as_ref(), "web");
    assert_eq!(p.parent.port, 80);
}

#[test]
fn splits_keep_their_weights_and_authorities() {
    let p = known(&policy_of(vec![http_route(
        "canary",
        vec![rule(&[("web-v1", 900), ("web-v2", 100)])],
    )]));
    let b = &p.http1[0].rules[0].backends;
    assert_eq!(
        b.iter()
            .map(|b| (b.target.clone(), b.weight))
            .collect::<Vec<_>>(),
        vec![
            (
                BackendTarget::Authority("web-v1.shop.svc.cluster.local:80".into()),
                900
            ),
            (
                BackendTarget::Authority("web-v2.shop.svc.cluster.local:80".into()),
                100
            ),
        ]
    );
}

#[test]
#[allow(deprecated)]
fn timeouts_and_retries_are_converted() {
    let mut r = rule(&[("web", 1)]);
    r.timeouts = Some(hr::Timeouts {
        request: pb(2000),
        response: None,
        idle: None,
    });
    r.request_timeout = pb(500);
    r.retry = Some(route::Retry {
        max_retries: 3,
        max_request_bytes: 65536,
        conditions: Some(route::retry::Conditions {
            status_ranges: vec![route::retry::conditions::StatusRange {
                start: 500,
                end: 504,
            }],
        }),
        timeout: pb(250),
        backoff: Some(api::ExponentialBackoff {
            min_backoff: pb(25),
            max_backoff: pb(250),
            jitter_ratio: 1.0,
            respect_retry_after_hint: false,
        }),
    });
    let p = known(&policy_of(vec![http_route("r", vec![r])]));
    let rule = &p.http1[0].rules[0];
    assert_eq!(
        rule.timeouts,
        Timeouts {
            request: Some(Duration::from_secs(2)),
            response: Some(Duration::from_millis(500)),
        }
    );
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.max_retries, 3);
    assert_eq!(retry.max_request_bytes, 65536);
    assert_eq!(retry.status_ranges, vec![500..=504]);
    assert_eq!(retry.timeout, Some(Duration::from_millis(250)));
    assert_eq!(retry.backoff.max, Duration::from_millis(250));
}

#[test]
fn invalid_routes_are_dropped_and_the_rest_kept() {
    let mut bad_retry = rule(&[("web", 1)]);
    bad_retry.retry = Some(route::Retry {
        conditions: Some(route::retry::Conditions {
            status_ranges: vec![route::retry::conditions::StatusRange {
                start: 599,
                end: 500,
            }],
        }),
        ..Default::default()
    });
    let mut bad_header = rule(&[("web", 1)]);
    bad_header.filters = vec![route::Filter {
        kind: Some(route::filter::Kind::RequestHeaderModifier(
            hr::RequestHeaderModifier {
                add: None,
                set: None,
                remove: vec!["bad header".into()],
            },
        )),
    }];
    let no_backends = route::Rule::default();
    let mut negative = rule(&[("web", 1)]);
    negative.timeouts = Some(hr::Timeouts {
        request: Some(PbDuration {
            seconds: -1,
            nanos: 0,
        }),
        ..Default::default()
    });
    let p = known(&policy_of(vec![
        http_route("bad-retry", vec![bad_retry]),
        http_route("good", vec![rule(&[("web", 1)])]),
        http_route("bad-header", vec![rule(&[("web", 1)]), bad_header]),
        http_route("no-backends", vec![no_backends]),
        http_route("no-rules", vec![]),
        http_route("negative", vec![negative]),
    ]));
    let names: Vec<_> = p.http1.iter().map(|r| r.meta.name.to_string()).collect();
    assert_eq!(names, vec!["good"]);
}

#[test]
fn field_errors_name_the_field() {
    let mut r = rule(&[("web", 1)]);
    r.retry = Some(route::Retry {
        conditions: Some(route::retry::Conditions {
            status_ranges: vec![route::retry::conditions::StatusRange { start: 0, end: 1 }],
        }),
        ..Default::default()
    });
    let parent = Arc::new(ResourceRef::default());
    let families = RouteFamilies::default();
    let ctx = Ctx {
        key: KEY,
        families: &families,
    };
    let err = super::http_route(
        &http_route("x", vec![rule(&[("web", 1)]), r]),
        &parent,
        &ctx,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rules[1].retry.conditions.status_ranges[0]: 0-1 is not a range of HTTP statuses"
    );
}

#[test]
fn filters_are_converted_and_unknown_kinds_kept_as_failures() {
    let mut r = rule(&[("web", 1)]);
    r.filters = vec![
        route::Filter {
            kind: Some(route::filter::Kind::RequestHeaderModifier(
                hr::RequestHeaderModifier {
                    add: Some(http_types::Headers {
                        headers: vec![http_types::headers::Header {
                            name: "x-canary".into(),
                            value: b"1".to_vec(),
                        }],
                    }),
                    set: None,
                    remove: vec!["x-debug".into()],
                },
            )),
        },
        route::Filter {
            kind: Some(route::filter::Kind::Redirect(hr::RequestRedirect {
                host: "new.example".into(),
                status: 302,
                ..Default::default()
            })),
        },
        route::Filter { kind: None },
    ];
    let p = known(&policy_of(vec![http_route("f", vec![r])]));
    let f = &p.http1[0].rules[0].filters;
    assert!(matches!(&f[0], Filter::RequestHeaders(m) if m.add.len() == 1 && m.remove.len() == 1));
    assert!(matches!(&f[1], Filter::Redirect(r) if r.status == StatusCode::FOUND));
    assert!(matches!(f[2], Filter::Unknown));
}

#[test]
fn targets_without_http_routes_fall_back() {
    let opaque = api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {
                routes: vec![],
            })),
        }),
        metadata: None,
    };
    assert!(matches!(convert(&opaque), PolicyState::Fallback));
    assert!(matches!(
        convert(&api::OutboundPolicy::default()),
        PolicyState::Fallback
    ));
}

#[test]
fn forward_backends_and_missing_accrual_backoffs() {
    let mut r = rule(&[]);
    r.backends = Some(route::Distribution {
        kind: Some(route::distribution::Kind::FirstAvailable(
            route::distribution::FirstAvailable {
                backends: vec![route::RouteBackend {
                    backend: Some(api::Backend {
                        kind: Some(Kind::Forward(WeightedAddr {
                            addr: Some(linkerd2_proxy_api::net::TcpAddress {
                                ip: Some(IpAddr::from([10, 0, 0, 9]).into()),
                                port: 8080,
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            },
        )),
    });
    let mut msg = policy_of(vec![http_route("fwd", vec![r])]);
    if let Some(proxy_protocol::Kind::Detect(d)) =
        msg.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        for a in [
            &mut d.http1.as_mut().unwrap().failure_accrual,
            &mut d.http2.as_mut().unwrap().failure_accrual,
        ] {
            *a = Some(api::FailureAccrual {
                kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
                    api::failure_accrual::ConsecutiveFailures {
                        max_failures: 3,
                        backoff: None,
                    },
                )),
                ejection: None,
            });
        }
    }
    let p = known(&msg);
    let b = &p.http1[0].rules[0].backends[0];
    assert_eq!(
        b.target,
        BackendTarget::Addr("10.0.0.9:8080".parse().unwrap())
    );
    assert_eq!(b.weight, 1);
    assert!(p.accrual.is_none(), "accrual without a backoff is off");
}

#[test]
fn bad_regexes_and_unknown_enums_drop_their_route_naming_the_field() {
    use linkerd2_proxy_api::http_types::{HttpMethod, http_method};
    let bad_regex = hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Regex("/items/(".into())),
        }),
        ..Default::default()
    };
    let unknown_method = hr::HttpRouteMatch {
        method: Some(HttpMethod {
            r#type: Some(http_method::Type::Registered(999)),
        }),
        ..Default::default()
    };
    let mut r1 = rule(&[("web", 1)]);
    r1.matches = vec![bad_regex];
    let mut r2 = rule(&[("web", 1)]);
    r2.matches = vec![hr::HttpRouteMatch::default(), unknown_method];
    let parent = Arc::new(ResourceRef::default());
    let families = RouteFamilies::default();
    let ctx = Ctx {
        key: KEY,
        families: &families,
    };
    let err = super::http_route(&http_route("x", vec![r1.clone()]), &parent, &ctx).unwrap_err();
    assert_eq!(err.field, "rules[0].matches[0].path.regex");
    assert!(
        err.reason.starts_with("invalid regex \"/items/(\""),
        "{err}"
    );
    let err = super::http_route(&http_route("y", vec![r2.clone()]), &parent, &ctx).unwrap_err();
    assert_eq!(err.field, "rules[0].matches[1].method");

    let p = known(&policy_of(vec![
        http_route("bad-regex", vec![r1]),
        http_route("bad-method", vec![r2]),
        http_route("good", vec![rule(&[("web", 1)])]),
    ]));
    let names: Vec<_> = p.http1.iter().map(|r| r.meta.name.to_string()).collect();
    assert_eq!(names, vec!["good"]);
}

#[test]
fn catch_all_rules_are_recognised() {
    let all = |matches: Vec<hr::HttpRouteMatch>| {
        let mut r = rule(&[("web", 1)]);
        r.matches = matches;
        let p = known(&policy_of(vec![http_route("r", vec![r])]));
        let rule = &p.http1[0].rules[0];
        rule.matches.catch_all
    };
    let prefix = |p: &str| hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    };
    assert!(all(vec![]));
    assert!(all(vec![prefix("/")]));
    assert!(all(vec![prefix("/api"), hr::HttpRouteMatch::default()]));
    assert!(!all(vec![prefix("/api")]));
    let mut get = prefix("/");
    get.method = Some(http::Method::GET.into());
    assert!(!all(vec![get]));
}
