//! The whole mesh end to end, the way it runs in a cluster (see [`integration::shop`]):
//! a client pod calls the `web` Service's cluster IP; its proxy intercepts the call
//! (real iptables), asks the destination service where to send it, and sends it over
//! mTLS to a web pod, whose proxy verifies the client and tells the application who
//! called. A TrafficSplit canary then moves traffic between the two web versions.
//!
//! Needs root (CI runs as root), iproute2 and iptables.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use integration::shop::{Shop, share};
use smi_crds::mesh::WorkloadIdentity;

#[test]
fn canary_over_mtls_with_real_interception() {
    let shop = Shop::start(1, 0).expect("starting the mesh");

    // All traffic to v1: the split gives v2 a zero weight.
    let client_id = WorkloadIdentity::new("shop", "client").dns_name();
    let answers = shop.call_web(40).unwrap();
    assert_eq!(answers.len(), 40);
    for a in &answers {
        assert_eq!(a.status, 200, "{answers:?}");
        assert_eq!(
            a.client_id, client_id,
            "the server saw the client's mTLS identity"
        );
    }
    assert_eq!(share(&answers, "v1"), 40, "{answers:?}");

    // Half and half.
    shop.set_split(1, 1).unwrap();
    integration::assert_eventually!(
        share(&shop.call_web(10).unwrap(), "v2") > 0,
        Duration::from_secs(10),
        "the 50/50 split never reached the proxy"
    );
    let answers = shop.call_web(200).unwrap();
    let (v1, v2) = (share(&answers, "v1"), share(&answers, "v2"));
    assert_eq!(v1 + v2, 200, "{answers:?}");
    assert!(v1 >= 60 && v2 >= 60, "50/50 split gave {v1}/{v2}");

    // Promote the canary: everything to v2.
    shop.set_split(0, 1).unwrap();
    integration::assert_eventually!(
        share(&shop.call_web(10).unwrap(), "v1") == 0,
        Duration::from_secs(10),
        "promotion never reached the proxy"
    );
    let answers = shop.call_web(40).unwrap();
    assert_eq!(share(&answers, "v2"), 40, "{answers:?}");

    // The client's proxy counted the requests under Linkerd's metric names.
    let metrics = shop.metrics(&shop.client).unwrap();
    assert!(metrics.contains("request_total"), "{metrics}");
}
