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

#[test]
fn a_traffic_target_with_an_http_route_group_admits_get_api_only() {
    let shop = Shop::start(1, 0).expect("starting the mesh");
    // The mesh-wide default (all-unauthenticated) admits everything.
    assert_eq!(shop.curl_web("GET", "/").unwrap().0, 200);
    assert_eq!(shop.curl_web("POST", "/api/orders").unwrap().0, 200);

    // The TrafficTarget names `web`: now only its rule's route admits `client`.
    shop.set_access(Some(&integration::demo::api_access_yaml()))
        .unwrap();
    integration::assert_eventually!(
        shop.curl_web("GET", "/").unwrap().0 == 403,
        Duration::from_secs(10),
        "the TrafficTarget never reached the web proxies"
    );
    for (method, path, want) in [
        ("GET", "/api", 200),
        ("GET", "/api/books/1", 200),
        ("GET", "/", 403),
        ("GET", "/static/app.js", 403),
        ("POST", "/api/orders", 403),
    ] {
        let (status, reason) = shop.curl_web(method, path).unwrap();
        assert_eq!(status, want, "{method} {path}: {reason}");
        if want == 403 {
            assert_eq!(reason, "client is not authorized", "{method} {path}");
        }
    }
    let answers = shop.call_web(4).unwrap();
    assert!(answers.iter().all(|a| a.status == 403), "{answers:?}");

    // The web proxies counted the decisions per route.
    let metrics = shop.metrics(&shop.web[0]).unwrap() + &shop.metrics(&shop.web[1]).unwrap();
    assert!(
        metrics.contains("inbound_http_authz_allow_total{target_port=\"8080\",route_group=\"\",route_kind=\"default\",route_name=\"traffictarget:client-reads-web-api\",authz_group=\"access.smi-spec.io\",authz_kind=\"traffictarget\",authz_name=\"client-reads-web-api\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "inbound_http_authz_deny_total{target_port=\"8080\",route_group=\"\",route_kind=\"default\",route_name=\"default\"}"
        ),
        "{metrics}"
    );

    // Deleting the TrafficTarget restores the default.
    shop.set_access(None).unwrap();
    integration::assert_eventually!(
        shop.curl_web("POST", "/api/orders").unwrap().0 == 200,
        Duration::from_secs(10),
        "removing the TrafficTarget never reached the web proxies"
    );
}
