//! Micro-benchmark: the per-request cost of choosing a route rule and a backend
//! from an outbound policy, on the policy model the proxy builds.
//!
//! ```text
//! cargo run --release -p linkerd-lite-proxy --example route_match [iterations]
//! ```
//!
//! Three policies: the destination's default (one catch-all rule, one backend),
//! a 90/10 split, and a route table of 10 HTTPRoutes × 4 rules (exact, prefix,
//! regex, header and method matches) where the request matches near the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{hint::black_box, time::Instant};

use linkerd_lite_proxy::policy::{
    PolicyState, RouteFamilies,
    convert::{Ctx, policy},
    matching::select,
    pick_weighted,
};
use linkerd2_proxy_api::{
    http_route as hr, meta,
    outbound::{self as api, backend, http_route as route, proxy_protocol},
};

fn backend(authority: &str) -> api::Backend {
    use backend::{BalanceP2c, EndpointDiscovery, Kind, endpoint_discovery};
    api::Backend {
        metadata: None,
        queue: None,
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

fn rule(matches: Vec<hr::HttpRouteMatch>, backends: &[(&str, u32)]) -> route::Rule {
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

fn path(kind: hr::path_match::Kind) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        path: Some(hr::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

fn named(name: String, rules: Vec<route::Rule>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default(name)),
        }),
        hosts: vec![],
        rules,
    }
}

fn compile(routes: Vec<api::HttpRoute>) -> PolicyState {
    use proxy_protocol::{Http1, Kind};
    let msg = api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol {
            kind: Some(Kind::Http1(Http1 {
                routes,
                failure_accrual: None,
            })),
        }),
        metadata: None,
    };
    policy(
        &msg,
        &Ctx {
            key: "web.shop.svc.cluster.local:80",
            families: &RouteFamilies::default(),
        },
    )
}

fn table() -> Vec<api::HttpRoute> {
    use hr::path_match::Kind;
    (0..10)
        .map(|i| {
            let mut header = path(Kind::Prefix(format!("/svc{i}/beta")));
            header.headers.push(hr::HeaderMatch {
                name: "x-canary".into(),
                value: Some(hr::header_match::Value::Exact(b"1".to_vec())),
            });
            let mut post = path(Kind::Exact(format!("/svc{i}/orders")));
            post.method = Some(http::Method::POST.into());
            named(
                format!("r{i}"),
                vec![
                    rule(
                        vec![path(Kind::Exact(format!("/svc{i}/health")))],
                        &[("a:80", 1)],
                    ),
                    rule(vec![header], &[("b:80", 1)]),
                    rule(vec![post], &[("c:80", 1)]),
                    rule(
                        vec![path(Kind::Regex(format!("/svc{i}/items/[0-9]+")))],
                        &[("d:80", 9), ("e:80", 1)],
                    ),
                ],
            )
        })
        .collect()
}

fn run(name: &str, state: &PolicyState, req: &http::Request<()>, n: u32) {
    let PolicyState::Known(p) = state else {
        panic!("{name}: no policy")
    };
    let mut rng = rand::rng();
    // Warm up, and check the request does match.
    let (_, rule) = select(&p.http1, req).expect("the request matches");
    assert!(pick_weighted(&rule.backends, |b| b.weight, &mut rng).is_some());
    let start = Instant::now();
    for _ in 0..n {
        let (_, rule) = select(black_box(&p.http1), black_box(req)).unwrap();
        black_box(pick_weighted(&rule.backends, |b| b.weight, &mut rng));
    }
    let per = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{name:<44} {per:>8.1} ns per request ({n} requests)");
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("iterations"))
        .unwrap_or(1_000_000);
    let get = |uri: &str| {
        http::Request::get(uri)
            .header("host", "web.shop.svc.cluster.local")
            .header("x-canary", "1")
            .body(())
            .unwrap()
    };
    let default = compile(vec![named(
        "default".into(),
        vec![rule(vec![], &[("web:80", 1)])],
    )]);
    run(
        "catch-all rule, one backend (the default)",
        &default,
        &get("/orders/42"),
        n,
    );
    let split = compile(vec![named(
        "split".into(),
        vec![rule(vec![], &[("v1:80", 900), ("v2:80", 100)])],
    )]);
    run("catch-all rule, 90/10 split", &split, &get("/orders/42"), n);
    let table = compile(table());
    run(
        "10 routes x 4 rules, regex match in the last",
        &table,
        &get("/svc9/items/12345"),
        n,
    );
    run(
        "10 routes x 4 rules, header match",
        &table,
        &get("/svc5/beta/x"),
        n,
    );
}
