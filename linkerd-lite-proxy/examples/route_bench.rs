//! Times `route::best` over a realistic five-route table: what every inbound request
//! pays to pick its route.
//!
//! `cargo run --release -p linkerd-lite-proxy --example route_bench`

#![allow(clippy::print_stdout)]

use std::{hint::black_box, time::Instant};

use http::{Method, Request};
use linkerd_lite_proxy::route::{self, RouteMatch};
use linkerd2_proxy_api::{
    http_route::{HeaderMatch, HttpRouteMatch, PathMatch, header_match, path_match},
    http_types::HttpMethod,
};

const CALLS: u32 = 1_000_000;

fn path(kind: path_match::Kind) -> Option<PathMatch> {
    Some(PathMatch { kind: Some(kind) })
}

fn table() -> anyhow::Result<Vec<Vec<RouteMatch>>> {
    let get = Some(HttpMethod::from(Method::GET));
    let protos: Vec<Vec<HttpRouteMatch>> = vec![
        // The catch-all default route.
        vec![HttpRouteMatch {
            path: path(path_match::Kind::Prefix("/".into())),
            ..Default::default()
        }],
        // SMI-style: GET and HEAD on a regex.
        vec![
            HttpRouteMatch {
                path: path(path_match::Kind::Regex("^(?:/api/v[0-9]+/books).*".into())),
                method: get.clone(),
                ..Default::default()
            },
            HttpRouteMatch {
                path: path(path_match::Kind::Regex("^(?:/api/v[0-9]+/books).*".into())),
                method: Some(HttpMethod::from(Method::HEAD)),
                ..Default::default()
            },
        ],
        // A prefix with a header.
        vec![HttpRouteMatch {
            path: path(path_match::Kind::Prefix("/api/v1/orders".into())),
            headers: vec![HeaderMatch {
                name: "x-tenant".into(),
                value: Some(header_match::Value::Regex("[a-z]+-[0-9]+".into())),
            }],
            ..Default::default()
        }],
        // Exact health and login paths.
        vec![
            HttpRouteMatch {
                path: path(path_match::Kind::Exact("/healthz".into())),
                ..Default::default()
            },
            HttpRouteMatch {
                path: path(path_match::Kind::Exact("/login".into())),
                method: Some(HttpMethod::from(Method::POST)),
                ..Default::default()
            },
        ],
        // An admin prefix.
        vec![HttpRouteMatch {
            path: path(path_match::Kind::Prefix("/admin".into())),
            method: get,
            ..Default::default()
        }],
    ];
    Ok(protos
        .iter()
        .map(|ms| RouteMatch::from_protos(ms))
        .collect::<Result<_, _>>()?)
}

fn main() -> anyhow::Result<()> {
    let routes = table()?;
    let requests = [
        Request::get("/api/v2/books/42")
            .header("host", "books.shop")
            .header("x-tenant", "acme-1")
            .body(())?,
        Request::get("/api/v1/orders/7")
            .header("x-tenant", "acme-1")
            .body(())?,
        Request::get("/static/app.js").body(())?,
        Request::post("/login").body(())?,
    ];
    for req in &requests {
        let picked = route::best(req, routes.iter().map(Vec::as_slice));
        println!("{} {} -> route {picked:?}", req.method(), req.uri());
    }
    // Warm up the regex caches.
    for req in &requests {
        black_box(route::best(req, routes.iter().map(Vec::as_slice)));
    }
    let start = Instant::now();
    for i in 0..CALLS {
        let req = &requests[i as usize % requests.len()];
        black_box(route::best(
            black_box(req),
            routes.iter().map(Vec::as_slice),
        ));
    }
    let elapsed = start.elapsed();
    println!(
        "{CALLS} best() calls over {} routes: {:.1} ns/op",
        routes.len(),
        elapsed.as_nanos() as f64 / f64::from(CALLS)
    );
    Ok(())
}
