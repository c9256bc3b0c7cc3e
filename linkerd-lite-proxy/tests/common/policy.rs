//! Builders of `OutboundPolicy` messages for the scripted destination, shaped like
//! the real destination service's answers.

use std::time::Duration;

use linkerd2_proxy_api::{
    http_route as hr, meta,
    outbound::{self as api, backend, http_route as route, proxy_protocol},
};

fn pb(d: Duration) -> Option<prost_types::Duration> {
    Some(d.try_into().unwrap())
}

/// The Service metadata of an authority `name.ns:port`.
pub fn svc_meta(authority: &str) -> meta::Metadata {
    let (host, port) = authority.rsplit_once(':').unwrap();
    let mut parts = host.split('.');
    let name = parts.next().unwrap().to_string();
    let namespace = parts.next().unwrap_or("default").to_string();
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name,
            namespace,
            section: String::new(),
            port: port.parse().unwrap(),
        })),
    }
}

/// A balanced backend discovered at `authority`.
pub fn backend(authority: &str) -> api::Backend {
    use backend::{BalanceP2c, EndpointDiscovery, Kind, endpoint_discovery};
    api::Backend {
        metadata: Some(svc_meta(authority)),
        queue: Some(api::Queue {
            capacity: 100,
            failfast_timeout: pb(Duration::from_secs(1)),
        }),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: authority.into(),
                    },
                )),
            }),
            load: None,
        })),
    }
}

/// A rule sending requests that match any of `matches` (all, when empty) to the
/// weighted `backends`.
pub fn rule(matches: Vec<hr::HttpRouteMatch>, backends: &[(&str, u32)]) -> route::Rule {
    use route::distribution::{Kind, RandomAvailable};
    route::Rule {
        matches,
        backends: Some(route::Distribution {
            kind: Some(Kind::RandomAvailable(RandomAvailable {
                backends: backends
                    .iter()
                    .map(|(a, w)| route::WeightedRouteBackend {
                        backend: Some(route::RouteBackend {
                            backend: Some(backend(a)),
                            ..Default::default()
                        }),
                        weight: *w,
                    })
                    .collect(),
            })),
        }),
        ..Default::default()
    }
}

/// An HTTPRoute named `name`.
pub fn route(name: &str, rules: Vec<route::Rule>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                name: name.into(),
                namespace: "test".into(),
                ..Default::default()
            })),
        }),
        hosts: vec![],
        rules,
    }
}

/// The policy of Service `parent` (an authority) with `routes`, no failure accrual.
pub fn policy(parent: &str, routes: Vec<api::HttpRoute>) -> api::OutboundPolicy {
    use proxy_protocol::{Detect, Http1, Http2, Kind};
    api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol {
            kind: Some(Kind::Detect(Detect {
                timeout: pb(Duration::from_secs(10)),
                opaque: None,
                http1: Some(Http1 {
                    routes: routes.clone(),
                    failure_accrual: None,
                }),
                http2: Some(Http2 {
                    routes,
                    failure_accrual: None,
                }),
            })),
        }),
        metadata: Some(svc_meta(parent)),
    }
}

/// `p` with consecutive-failures accrual.
pub fn with_accrual(
    mut p: api::OutboundPolicy,
    max_failures: u32,
    min: Duration,
    max: Duration,
) -> api::OutboundPolicy {
    let a = api::FailureAccrual {
        kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
            api::failure_accrual::ConsecutiveFailures {
                max_failures,
                backoff: Some(api::ExponentialBackoff {
                    min_backoff: pb(min),
                    max_backoff: pb(max),
                    jitter_ratio: 0.0,
                    respect_retry_after_hint: false,
                }),
            },
        )),
        ejection: None,
    };
    if let Some(proxy_protocol::Kind::Detect(d)) = p.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        d.http1.as_mut().unwrap().failure_accrual = Some(a);
        d.http2.as_mut().unwrap().failure_accrual = Some(a);
    }
    p
}

/// Retries on 5xx, up to `max_retries`, for bodies up to `max_bytes`, with a 10 ms
/// to 20 ms backoff.
pub fn retry(max_retries: u32, max_bytes: u32) -> route::Retry {
    route::Retry {
        max_retries,
        max_request_bytes: max_bytes,
        conditions: Some(route::retry::Conditions {
            status_ranges: vec![route::retry::conditions::StatusRange {
                start: 500,
                end: 599,
            }],
        }),
        timeout: None,
        backoff: Some(api::ExponentialBackoff {
            min_backoff: pb(Duration::from_millis(10)),
            max_backoff: pb(Duration::from_millis(20)),
            jitter_ratio: 0.0,
            respect_retry_after_hint: false,
        }),
    }
}

/// A request timeout.
pub fn request_timeout(d: Duration) -> hr::Timeouts {
    hr::Timeouts {
        request: pb(d),
        response: None,
        idle: None,
    }
}

fn path(kind: hr::path_match::Kind) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        path: Some(hr::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

/// Matches a path prefix.
pub fn prefix(p: &str) -> hr::HttpRouteMatch {
    path(hr::path_match::Kind::Prefix(p.into()))
}

/// Matches an exact path.
pub fn exact(p: &str) -> hr::HttpRouteMatch {
    path(hr::path_match::Kind::Exact(p.into()))
}

/// Matches a path by regular expression.
pub fn regex(p: &str) -> hr::HttpRouteMatch {
    path(hr::path_match::Kind::Regex(p.into()))
}

/// `m` also requiring header `name: value`.
pub fn with_header(mut m: hr::HttpRouteMatch, name: &str, value: &str) -> hr::HttpRouteMatch {
    m.headers.push(hr::HeaderMatch {
        name: name.into(),
        value: Some(hr::header_match::Value::Exact(value.as_bytes().to_vec())),
    });
    m
}

/// `m` also requiring `method`.
pub fn with_method(mut m: hr::HttpRouteMatch, method: http::Method) -> hr::HttpRouteMatch {
    m.method = Some(method.into());
    m
}

/// A filter.
pub fn filter(kind: route::filter::Kind) -> route::Filter {
    route::Filter { kind: Some(kind) }
}
