//! Certify over real loopback gRPC against the real service, with a local tokens file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use identity::pki::{self, PkiParams};
use tonic::Code;

#[tokio::test]
async fn certifies_a_leaf_that_chains_to_the_anchor() {
    let f = files();
    let svc = start(config(&f), identity::system_clock()).await;
    let mut client = svc.client().await;
    let web = id("shop", "web");
    let before = SystemTime::now();
    let rsp = client
        .certify(request(&web, "tok-web"))
        .await
        .unwrap()
        .into_inner();
    verify(
        &f.pki.trust_anchor_pem,
        &rsp,
        &web.dns_name(),
        SystemTime::now(),
    )
    .unwrap();
    // Not valid for another identity.
    assert!(
        verify(
            &f.pki.trust_anchor_pem,
            &rsp,
            &id("shop", "api").dns_name(),
            SystemTime::now()
        )
        .is_err()
    );
    // The issuer comes back as the intermediate.
    assert_eq!(rsp.intermediate_certificates.len(), 1);
    assert_eq!(
        issuer_of(&rsp.leaf_certificate),
        "CN=identity.linkerd-lite.cluster.local"
    );
    // valid_until is 24 h away.
    let until: SystemTime = rsp.valid_until.unwrap().try_into().unwrap();
    let life = until.duration_since(before).unwrap();
    assert!(
        life > Duration::from_secs(24 * 3600 - 5) && life <= Duration::from_secs(24 * 3600 + 1),
        "{life:?}"
    );

    let (status, body) = http_get(svc.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("identity_certificates_issued_total 1\n"),
        "{body}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn each_bad_input_gets_its_status() {
    let f = files();
    let svc = start(config(&f), identity::system_clock()).await;
    let mut client = svc.client().await;
    let web = id("shop", "web");
    let api = id("shop", "api");

    let mut cases = Vec::new();
    // The CSR names another identity.
    let mut r = request(&web, "tok-web");
    r.certificate_signing_request = csr(&[api.dns_name()]);
    cases.push((
        "csr for another identity",
        r,
        Code::InvalidArgument,
        "does not match",
    ));
    // An RSA key.
    let mut r = request(&web, "tok-web");
    r.certificate_signing_request = include_bytes!("fixtures/rsa-web-shop.csr.der").to_vec();
    cases.push(("rsa key", r, Code::InvalidArgument, "not ECDSA P-256"));
    // A token for another service account.
    cases.push((
        "token for shop/api",
        request(&web, "tok-api"),
        Code::PermissionDenied,
        "token was not accepted",
    ));
    // An unknown token.
    cases.push((
        "unknown token",
        request(&web, "nope"),
        Code::PermissionDenied,
        "token was not accepted",
    ));
    // Token bytes that are not UTF-8.
    let mut r = request(&web, "");
    r.token = vec![0xff, 0xfe, 0x00];
    cases.push((
        "binary token",
        r,
        Code::PermissionDenied,
        "token was not accepted",
    ));
    // Truncated and garbage CSRs.
    let mut r = request(&web, "tok-web");
    let half = r.certificate_signing_request.len() / 2;
    r.certificate_signing_request.truncate(half);
    cases.push((
        "truncated csr",
        r,
        Code::InvalidArgument,
        "not a DER PKCS#10",
    ));
    let mut r = request(&web, "tok-web");
    r.certificate_signing_request = b"\x00\x01garbage\xff".to_vec();
    cases.push(("garbage csr", r, Code::InvalidArgument, "not a DER PKCS#10"));
    let mut r = request(&web, "tok-web");
    r.certificate_signing_request.clear();
    cases.push(("empty csr", r, Code::InvalidArgument, "not a DER PKCS#10"));
    // An identity outside this control plane.
    let mut r = request(&web, "tok-web");
    r.identity = "web.shop.serviceaccount.identity.linkerd.cluster.local".into();
    cases.push((
        "foreign identity",
        r,
        Code::InvalidArgument,
        "identity is not valid",
    ));

    for (what, req, code, needle) in cases {
        let status = client.certify(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{what}: {}",
            status.message()
        );
    }
    // The permission messages say nothing about why.
    let a = client.certify(request(&web, "tok-api")).await.unwrap_err();
    let b = client.certify(request(&web, "nope")).await.unwrap_err();
    assert_eq!(a.message(), b.message());

    // The service is still healthy after all that.
    client.certify(request(&web, "tok-web")).await.unwrap();
    let (_, body) = http_get(svc.admin, "/metrics").await;
    assert!(
        body.contains("identity_certify_failures_total{reason=\"csr\"} 5\n"),
        "{body}"
    );
    assert!(
        body.contains("identity_certify_failures_total{reason=\"token\"} 5\n"),
        "{body}"
    );
    assert!(
        body.contains("identity_certify_failures_total{reason=\"identity\"} 1\n"),
        "{body}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn expired_issuer_is_unavailable_and_not_ready() {
    let f = files();
    let clock = TestClock::default();
    let svc = start(config(&f), clock.clock()).await;
    let mut client = svc.client().await;
    assert_eq!(http_get(svc.admin, "/ready").await.0, 200);

    clock.advance(pki::DEFAULT_ISSUER_VALIDITY + Duration::from_secs(3600));
    let status = client
        .certify(request(&id("shop", "web"), "tok-web"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(http_get(svc.admin, "/ready").await.0, 503);
    assert_eq!(http_get(svc.admin, "/live").await.0, 200);
    svc.stop().await;
}

#[tokio::test]
async fn issuer_rotation_by_rewriting_files() {
    let f = files();
    let svc = start(config(&f), identity::system_clock()).await;
    let mut client = svc.client().await;
    let web = id("shop", "web");
    let old = client
        .certify(request(&web, "tok-web"))
        .await
        .unwrap()
        .into_inner();

    // A new issuer from the same anchor, under a new name so the test can tell them apart.
    let params = PkiParams {
        control_plane_ns: "rotated".into(),
        ..PkiParams::default()
    };
    let next = pki::generate_issuer(
        &f.pki.trust_anchor_pem,
        &f.pki.trust_anchor_key_pem,
        &params,
    )
    .unwrap();
    // The key lands first: for a moment the pair does not match, and must be refused.
    write_atomic(&f.issuer.issuer_key, &next.key_pem);
    assert_eventually!(
        metric(
            svc.admin,
            "identity_issuer_reloads_total{outcome=\"refused\"}"
        )
        .await
            >= 1,
        "half-written rotation not refused"
    );
    let during = client
        .certify(request(&web, "tok-web"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        issuer_of(&during.leaf_certificate),
        "CN=identity.linkerd-lite.cluster.local"
    );

    write_atomic(&f.issuer.issuer_cert, &next.cert_pem);
    assert_eventually!(
        metric(
            svc.admin,
            "identity_issuer_reloads_total{outcome=\"accepted\"}"
        )
        .await
            == 1,
        "rotation not picked up"
    );
    let new = client
        .certify(request(&web, "tok-web"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        issuer_of(&new.leaf_certificate),
        "CN=identity.rotated.cluster.local"
    );
    let now = SystemTime::now();
    verify(&f.pki.trust_anchor_pem, &new, &web.dns_name(), now).unwrap();
    // Certificates from the old issuer stay valid.
    verify(&f.pki.trust_anchor_pem, &old, &web.dns_name(), now).unwrap();

    // A rotation to an issuer of another anchor is refused; the current one stays.
    let refused = metric(
        svc.admin,
        "identity_issuer_reloads_total{outcome=\"refused\"}",
    )
    .await;
    let stranger = pki::generate(&PkiParams::default()).unwrap();
    write_atomic(&f.issuer.issuer_key, &stranger.issuer_key_pem);
    write_atomic(&f.issuer.issuer_cert, &stranger.issuer_cert_pem);
    assert_eventually!(
        metric(
            svc.admin,
            "identity_issuer_reloads_total{outcome=\"refused\"}"
        )
        .await
            > refused,
        "foreign issuer not refused"
    );
    // Both files are in place now; give the poller a few rounds at the final state.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(
            svc.admin,
            "identity_issuer_reloads_total{outcome=\"accepted\"}"
        )
        .await,
        1
    );
    let after = client
        .certify(request(&web, "tok-web"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        issuer_of(&after.leaf_certificate),
        "CN=identity.rotated.cluster.local"
    );
    svc.stop().await;
}

#[tokio::test]
async fn refuses_to_start_with_an_unusable_issuer() {
    // Not signed by the anchor.
    let f = files();
    let other = pki::generate(&PkiParams::default()).unwrap();
    std::fs::write(&f.issuer.trust_anchors, &other.trust_anchor_pem).unwrap();
    let err = identity::server::Identity::build(config(&f), identity::system_clock())
        .await
        .unwrap_err();
    let msg = identity::DisplayChain(&err).to_string();
    assert!(
        msg.contains(&f.issuer.issuer_cert.display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("not signed by any trust anchor"), "{msg}");

    // Expired.
    let long_ago = SystemTime::now() - Duration::from_secs(3 * 365 * 24 * 3600);
    let f = files_with(&PkiParams {
        not_before: long_ago,
        ..PkiParams::default()
    });
    let err = identity::server::Identity::build(config(&f), identity::system_clock())
        .await
        .unwrap_err();
    assert!(
        identity::DisplayChain(&err)
            .to_string()
            .contains("expired at"),
        "{err}"
    );

    // Key mismatch.
    let f = files();
    write_atomic(&f.issuer.issuer_key, &other.issuer_key_pem);
    let err = identity::server::Identity::build(config(&f), identity::system_clock())
        .await
        .unwrap_err();
    assert!(
        identity::DisplayChain(&err)
            .to_string()
            .contains("does not match"),
        "{err}"
    );

    // Missing file.
    let f = files();
    std::fs::remove_file(&f.issuer.issuer_key).unwrap();
    let err = identity::server::Identity::build(config(&f), identity::system_clock())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("cannot read "), "{err}");
}

#[tokio::test]
async fn concurrent_requests_during_rotation_all_succeed() {
    let f = files();
    let svc = start(config(&f), identity::system_clock()).await;
    let client = svc.client().await;
    let web = id("shop", "web");
    let next = pki::generate_issuer(
        &f.pki.trust_anchor_pem,
        &f.pki.trust_anchor_key_pem,
        &PkiParams::default(),
    )
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = client.clone();
        let web = web.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                c.certify(request(&web, "tok-web")).await.unwrap();
            }
        }));
    }
    write_atomic(&f.issuer.issuer_key, &next.key_pem);
    write_atomic(&f.issuer.issuer_cert, &next.cert_pem);
    for t in tasks {
        t.await.unwrap();
    }
    svc.stop().await;
}
