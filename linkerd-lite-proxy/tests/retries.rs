//! Timeouts and retries from `OutboundPolicies`: a client proxy routes by a scripted
//! policy over real gRPC to scripted applications on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use common::{
    apps::{self, App},
    policy::*,
    *,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd2_proxy_api::outbound::http_route as route;

const WEB: &str = "web.test:80";

struct Setup {
    dst: TestDestination,
    proxy: RunningProxy,
}

/// A client proxy whose destination serves `web` with `app` as its only endpoint
/// and one catch-all rule built by `tweak`.
async fn setup(app: &App, tweak: impl FnOnce(&mut route::Rule)) -> Setup {
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    dst.set(WEB, vec![Ep::plain(app.addr, "web-0")]);
    let mut r = rule(vec![], &[(WEB, 1)]);
    tweak(&mut r);
    dst.set_outbound(WEB, policy(WEB, vec![route("web", vec![r])]));
    let cfg = linkerd_lite_proxy::env::Config {
        destination_addr: Some(dst_addr.to_string()),
        ..test_config()
    };
    let proxy = start_proxy(cfg, None).await;
    Setup { dst, proxy }
}

fn post(body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .header("host", "web.test")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// The value of the first metric line starting with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_503_then_200_is_retried_and_counted() {
    let app = apps::scripted("web", Arc::new(|n, _| if n == 0 { 503 } else { 200 })).await;
    let s = setup(&app, |r| r.retry = Some(retry(3, 1024))).await;
    let mut c = H1::connect(s.proxy.addrs.outbound).await;
    let r = c.get("web.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.hits(), 2);
    let m = metrics(s.proxy.addrs.admin).await;
    let labels = "{parent_group=\"core\",parent_kind=\"Service\",parent_namespace=\"test\",parent_name=\"web\",parent_port=\"80\",route_group=\"gateway.networking.k8s.io\",route_kind=\"HTTPRoute\",route_namespace=\"test\",route_name=\"web\"}";
    assert_eq!(
        metric(
            &m,
            &format!("outbound_http_route_retry_requests_total{labels}")
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            &format!("outbound_http_route_retry_successes_total{labels}")
        ),
        Some(1)
    );
    assert_eq!(s.dst.open_policy_streams(), 1);
}

#[tokio::test]
async fn post_bodies_are_replayed_intact() {
    let app = apps::scripted("web", Arc::new(|n, _| if n < 2 { 502 } else { 200 })).await;
    let s = setup(&app, |r| r.retry = Some(retry(3, 1024))).await;
    let mut c = H1::connect(s.proxy.addrs.outbound).await;
    let r = read(c.send(post("order=42&qty=3")).await).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "web /orders order=42&qty=3");
    let seen = app.requests();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.method, http::Method::POST);
        assert_eq!(&s.body[..], b"order=42&qty=3");
        assert_eq!(s.headers["content-length"], "14");
    }
}

#[tokio::test]
async fn grpc_request_trailers_are_replayed() {
    let app = apps::scripted("web", Arc::new(|n, _| if n == 0 { 503 } else { 200 })).await;
    let s = setup(&app, |r| r.retry = Some(retry(3, 1024))).await;
    let tcp = tokio::net::TcpStream::connect(s.proxy.addrs.outbound)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, BoxBody<Bytes, Infallible>>(
            TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = Request::post("http://web.test/shop.Orders/Place")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
            frames,
        ))))
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["x-request-trailer"], "abc123");
    let body = rsp.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
    let seen = app.requests();
    assert_eq!(seen.len(), 2, "the 503 was retried");
    for s in &seen {
        assert_eq!(&s.body[..], b"\0\0\0\0\x05hello");
        assert_eq!(s.trailers.as_ref().unwrap()["x-checksum"], "abc123");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_not_retried() {
    let app = apps::fixed("web", 503).await;
    let s = setup(&app, |r| r.retry = Some(retry(3, 8))).await;
    let mut c = H1::connect(s.proxy.addrs.outbound).await;
    let r = read(c.send(post("twelve bytes")).await).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.hits(), 1, "sent once");
    // A small body on the same route is retried.
    let r = read(c.send(post("small")).await).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.hits(), 1 + 4);
}

#[tokio::test]
async fn the_budget_caps_retries_in_a_failure_storm() {
    let app = apps::fixed("web", 503).await;
    let s = setup(&app, |r| r.retry = Some(retry(3, 1024))).await;
    // 20 % of requests, plus 1/s over 10 s: at most 0.2 × 200 + 10 = 50 retries.
    s.dst.set_retry_budget(WEB, 0.2, 1, Duration::from_secs(10));
    let mut c = H1::connect(s.proxy.addrs.outbound).await;
    let requests = 200;
    for _ in 0..requests {
        let r = c.get("web.test", "/", &[]).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "the last answer");
    }
    let retries = app.hits() - requests;
    let ratio = retries as f64 / requests as f64;
    eprintln!(
        "failure storm: {requests} requests, {retries} retries (ratio {ratio:.3}); without a budget: {}",
        requests * 3
    );
    assert!((45..=50).contains(&retries), "{retries} retries");
    let m = metrics(s.proxy.addrs.admin).await;
    let overflow = metric(&m, "outbound_http_route_retry_overflow_total{").unwrap();
    let limit = metric(&m, "outbound_http_route_retry_limit_exceeded_total{").unwrap();
    assert_eq!(
        overflow + limit,
        requests as u64,
        "every request ended one way"
    );
    assert!(overflow > 150, "{overflow} requests found the budget spent");
}

#[tokio::test]
async fn a_route_timeout_answers_504_and_cancels_the_upstream_request() {
    let app = apps::hanging().await;
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    dst.set(WEB, vec![Ep::plain(app.addr, "web-0")]);
    let mut r = rule(vec![], &[(WEB, 1)]);
    r.timeouts = Some(request_timeout(Duration::from_secs(30)));
    dst.set_outbound(WEB, policy(WEB, vec![route("web", vec![r])]));
    let cfg = linkerd_lite_proxy::env::Config {
        destination_addr: Some(dst_addr.to_string()),
        ..test_config()
    };
    let proxy = start_proxy(cfg, None).await;
    assert_eventually!(
        proxy.outbound.policy_known(WEB) || {
            // The first request opens the policy stream.
            let mut c = H1::connect(proxy.addrs.outbound).await;
            let _ =
                tokio::time::timeout(Duration::from_millis(50), c.get("web.test", "/", &[])).await;
            false
        },
        Duration::from_secs(5),
        "the policy never arrived"
    );

    // From here on the clock only moves when everything waits on a timer.
    tokio::time::pause();
    let mut c = H1::connect(proxy.addrs.outbound).await;
    let start = tokio::time::Instant::now();
    let r = c.get("web.test", "/slow", &[]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.header("l5d-proxy-error"), "request timed out");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    // Every request that reached the application was cancelled, the timed-out one
    // included: the proxy does not leave it running.
    use std::sync::atomic::Ordering::SeqCst;
    assert!(app.started.load(SeqCst) >= 1);
    assert_eventually!(
        app.cancelled.load(SeqCst) == app.started.load(SeqCst),
        Duration::from_secs(5),
        "the upstream request was not cancelled"
    );
}
