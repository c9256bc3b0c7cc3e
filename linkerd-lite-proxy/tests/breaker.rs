//! Failure accrual through a real proxy: an endpoint that keeps failing is taken out
//! of the balancer while a healthy one takes the traffic, then probed after the
//! backoff and restored once it recovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{apps, policy::*, *};
use http::StatusCode;

const WEB: &str = "web.test:80";

#[tokio::test]
async fn a_failing_endpoint_is_ejected_then_probed_and_restored() {
    let failing = Arc::new(AtomicBool::new(true));
    let bad = apps::scripted("bad", {
        let failing = failing.clone();
        Arc::new(move |_, _| {
            if failing.load(Ordering::SeqCst) {
                503
            } else {
                200
            }
        })
    })
    .await;
    // The healthy endpoint is slower: fast failures are what attract p2c traffic
    // to a broken endpoint, the case failure accrual exists for.
    let good = app_server("good", Duration::from_millis(40)).await;
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    dst.set(
        WEB,
        vec![Ep::plain(bad.addr, "bad"), Ep::plain(good, "good")],
    );
    let backoff = Duration::from_secs(5);
    dst.set_outbound(
        WEB,
        with_accrual(
            policy(WEB, vec![route("web", vec![rule(vec![], &[(WEB, 1)])])]),
            3,
            backoff,
            backoff * 2,
        ),
    );
    let cfg = linkerd_lite_proxy::env::Config {
        destination_addr: Some(dst_addr.to_string()),
        ..test_config()
    };
    let proxy = start_proxy(cfg, None).await;
    let mut c = H1::connect(proxy.addrs.outbound).await;

    // Three consecutive failures eject `bad`; from then on `good` takes everything.
    let started = tokio::time::Instant::now();
    let (mut failures, mut good_hits) = (0, 0);
    for _ in 0..30 {
        let r = c.get("web.test", "/", &[]).await;
        if r.status != StatusCode::OK {
            failures += 1;
        }
        good_hits += usize::from(r.header("x-server") == "good");
    }
    assert!(
        started.elapsed() < backoff,
        "too slow to observe the ejection"
    );
    assert_eq!(bad.hits(), 3, "bad kept receiving traffic");
    assert_eq!(failures, 3);
    assert_eq!(good_hits, 27);

    // It recovers; after the backoff one probe reaches it, succeeds, and it takes
    // traffic again.
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(backoff).await;
    let mut ok = 0;
    for _ in 0..100 {
        let r = c.get("web.test", "/", &[]).await;
        ok += usize::from(r.status == StatusCode::OK);
    }
    assert_eq!(ok, 100);
    let restored = bad.hits() - 3;
    assert!(restored >= 50, "the restored endpoint got {restored}/100");
    assert!(proxy.outbound.policy_known(WEB));
}
