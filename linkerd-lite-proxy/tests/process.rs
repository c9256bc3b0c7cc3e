//! The proxy as real processes: two `linkerd-lite-proxy` binaries certified by the
//! real identity service, with discovery from a scripted destination service, carrying
//! HTTP over mTLS; plus start-up errors, the admin server and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod identity_common;
mod proxy_process;

use std::{path::Path, process::Command, time::Duration};

use common::*;
use http::StatusCode;
use proxy_process::ProxyProcess;

fn proxy(vars: &[(&str, String)]) -> ProxyProcess {
    ProxyProcess::spawn(Path::new(env!("CARGO_BIN_EXE_linkerd-lite-proxy")), vars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_processes_carry_http_over_mtls_with_certified_identities() {
    let ca = identity_common::ca();
    let (identity_addr, _stop) =
        identity_common::serve(ca.dir.path(), Duration::from_secs(24 * 3600)).await;
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    let app = app_server("web", Duration::ZERO).await;
    let identity_vars = |sa: &str| identity_common::proxy_vars(&ca, identity_addr, sa);
    let server = proxy(&identity_vars("web"));
    let mut client_vars = identity_vars("api");
    client_vars.push(("DESTINATION_ADDR", dst_addr.to_string()));
    let client = proxy(&client_vars);
    assert_eventually!(
        server.ready().await && client.ready().await,
        Duration::from_secs(20),
        "proxies never became ready"
    );
    let web_id = identity_common::dns("web");
    dst.set(
        "web.test:80",
        vec![Ep::meshed(app, &web_id, server.inbound.port(), "web-0")],
    );

    let mut c = H1::connect(client.outbound).await;
    let r = c
        .get("web.test", "/x", &[("l5d-client-id", web_id.as_str())])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "web /x ");
    assert_eq!(r.header("x-client-id"), identity_common::dns("api"));

    // The admin server shows what the injector set.
    let mut admin = H1::connect(client.admin).await;
    let env = admin.get("localhost", "/env.json", &[]).await.body;
    assert!(
        env.contains("\"LINKERD_LITE_PROXY_IDENTITY_NAME\": \"api.shop."),
        "{env}"
    );
    let m = metrics(server.admin).await;
    assert!(m.contains("response_total{direction=\"inbound\""), "{m}");

    // SIGTERM drains and exits cleanly; so does POST /shutdown.
    drop(c);
    client.signal("-TERM");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), client.exit())
            .await
            .unwrap()
    );
    let mut admin = H1::connect(server.admin).await;
    let req = http::Request::post("/shutdown")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(admin.send(req).await.status(), StatusCode::ACCEPTED);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), server.exit())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_bad_variable_stops_start_up_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_linkerd-lite-proxy"))
        .env_clear()
        .env("LINKERD_LITE_PROXY_DETECT_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LINKERD_LITE_PROXY_DETECT_TIMEOUT=\"soon\""),
        "{err}"
    );
}

#[tokio::test]
async fn plaintext_process_serves_admin_and_proxies_locally() {
    let app = app_server("web", Duration::ZERO).await;
    let p = proxy(&[]);
    assert_eventually!(p.ready().await, Duration::from_secs(10), "never ready");
    let mut c = H1::connect(p.outbound).await;
    let r = c.get(&app.to_string(), "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut admin = H1::connect(p.admin).await;
    assert_eq!(
        admin.get("localhost", "/live", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        admin.get("localhost", "/nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let m = admin.get("localhost", "/metrics", &[]).await.body;
    assert!(
        m.contains("tcp_open_total{direction=\"outbound\",peer=\"dst\""),
        "{m}"
    );
    p.signal("-TERM");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), p.exit())
            .await
            .unwrap()
    );
}

#[test]
fn init_dry_run_prints_the_rules() {
    let out = Command::new(env!("CARGO_BIN_EXE_linkerd-lite-proxy"))
        .args([
            "init",
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--skip-inbound-ports",
            "4190,4191",
            "--skip-outbound-ports",
            "443",
            "--iptables-mode",
            "nft",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "iptables-nft -t nat -A LINKERD_LITE_OUTPUT -m owner --uid-owner 2102 -j RETURN"
        ),
        "{text}"
    );
    assert!(text.contains("--dports 4190:4191 -j RETURN"));
    let bad = Command::new(env!("CARGO_BIN_EXE_linkerd-lite-proxy"))
        .args(["init", "--skip-inbound-ports", "http"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--skip-inbound-ports"));
}
