//! Traffic splits: the outbound proxy reads `dst_overrides` from a scripted
//! `Destination.GetProfile` stream over real gRPC and spreads requests over the
//! backends' own balancers, following live profile updates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use http::StatusCode;
use linkerd_lite_proxy::env::Config;

const ROOT: &str = "web.test:80";
const V1: &str = "web-v1.test:80";
const V2: &str = "web-v2.test:80";

struct Canary {
    dst: TestDestination,
    proxy: RunningProxy,
}

/// A client proxy whose discovery knows `web`, `web-v1` and `web-v2`, each served by
/// its own application (`root`, `v1`, `v2`).
async fn canary(tweak: impl FnOnce(&mut Config)) -> Canary {
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    let v1 = app_server("v1", Duration::ZERO).await;
    let v2 = app_server("v2", Duration::ZERO).await;
    let root = app_server("root", Duration::ZERO).await;
    dst.set(ROOT, vec![Ep::plain(root, "root")]);
    dst.set(V1, vec![Ep::plain(v1, "v1")]);
    dst.set(V2, vec![Ep::plain(v2, "v2")]);
    let mut cfg = Config {
        destination_addr: Some(dst_addr.to_string()),
        ..test_config()
    };
    tweak(&mut cfg);
    let proxy = start_proxy(cfg, None).await;
    Canary { dst, proxy }
}

/// Sends `n` requests for `web` on one connection; returns the (v1, v2) counts and
/// fails if the root service's own application answered.
async fn spread(outbound: SocketAddr, n: usize) -> (usize, usize) {
    let (v1, v2, root) = spread_root(outbound, n).await;
    assert_eq!(root, 0, "the root service answered despite the split");
    (v1, v2)
}

/// Like [`spread`], and also counts the root service's answers.
async fn spread_root(outbound: SocketAddr, n: usize) -> (usize, usize, usize) {
    let mut c = H1::connect(outbound).await;
    let (mut v1, mut v2, mut root) = (0, 0, 0);
    for _ in 0..n {
        let r = c.get("web.test", "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        match r.header("x-server") {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            "root" => root += 1,
            other => panic!("unexpected server {other:?}"),
        }
    }
    (v1, v2, root)
}

#[tokio::test]
async fn a_split_applies_from_the_first_request_and_follows_live_updates() {
    let c = canary(|_| {}).await;
    let out = c.proxy.addrs.outbound;
    c.dst.set_split(ROOT, &[(V1, 1000), (V2, 0)]);

    // From the very first request, nothing reaches the root's own endpoints or v2.
    assert_eq!(spread(out, 40).await, (40, 0));

    c.dst.set_split(ROOT, &[(V1, 500), (V2, 500)]);
    assert_eventually!(
        spread(out, 10).await.1 > 0,
        Duration::from_secs(5),
        "the 50/50 split never reached the proxy"
    );
    let (v1, v2) = spread(out, 200).await;
    assert!(v1 >= 60 && v2 >= 60, "50/50 split gave {v1}/{v2}");

    c.dst.set_split(ROOT, &[(V1, 0), (V2, 1000)]);
    assert_eventually!(
        spread(out, 10).await.0 == 0,
        Duration::from_secs(5),
        "promotion never reached the proxy"
    );
    assert_eq!(spread(out, 40).await, (0, 40));

    // A connection opened after the update sees it too.
    assert_eq!(spread(out, 10).await, (0, 10));
}

#[tokio::test]
async fn weights_are_relative_and_all_zero_sends_to_the_root() {
    let c = canary(|_| {}).await;
    let out = c.proxy.addrs.outbound;
    c.dst.set_split(ROOT, &[(V1, 3), (V2, 1)]);
    let (v1, v2) = spread(out, 400).await;
    assert!((240..=360).contains(&v1), "3:1 split gave {v1}/{v2}");

    // Every weight zero: the root service takes the traffic.
    c.dst.set_split(ROOT, &[(V1, 0), (V2, 0)]);
    assert_eventually!(
        spread_root(out, 1).await.2 == 1,
        Duration::from_secs(5),
        "an all-zero split never fell back to the root service"
    );
    assert_eq!(spread_root(out, 20).await, (0, 0, 20));

    // So does a profile without overrides.
    c.dst.set_split(ROOT, &[(V1, 1)]);
    assert_eventually!(
        spread_root(out, 1).await.0 == 1,
        Duration::from_secs(5),
        "the single-backend split never reached the proxy"
    );
    c.dst.set_split(ROOT, &[]);
    assert_eventually!(
        spread_root(out, 1).await.2 == 1,
        Duration::from_secs(5),
        "an empty split never fell back to the root service"
    );
}

#[tokio::test]
async fn without_profiles_the_target_balances_itself() {
    // The scripted destination answers GetProfile for unknown paths with
    // Unimplemented: requests must neither wait for the fail-fast timeout nor fail.
    let c = canary(|cfg| cfg.failfast_timeout = Duration::from_secs(30)).await;
    let started = tokio::time::Instant::now();
    assert_eq!(spread_root(c.proxy.addrs.outbound, 40).await, (0, 0, 40));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests waited for a profile"
    );
}

#[tokio::test]
async fn profile_streams_close_with_their_idle_target() {
    let c = canary(|cfg| cfg.cache_idle_timeout = Duration::from_millis(200)).await;
    c.dst.set_split(ROOT, &[(V1, 1), (V2, 0)]);
    assert_eq!(spread(c.proxy.addrs.outbound, 5).await, (5, 0));
    assert_eq!(c.dst.open_profile_streams(), 1);
    // The root and the chosen backend are cached; nothing opened a profile for v1.
    assert_eq!(c.proxy.outbound.cached_targets(), 2);
    assert_eventually!(
        c.proxy.outbound.cached_targets() == 0 && c.dst.open_profile_streams() == 0,
        Duration::from_secs(5),
        "the idle target's profile stream stayed open ({} open)",
        c.dst.open_profile_streams()
    );
}
