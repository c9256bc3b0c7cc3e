//! The `identity` binary as a real process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use identity::pki::{self, PkiParams};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(f: &Files) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_identity"));
    cmd.arg("--trust-anchors")
        .arg(&f.issuer.trust_anchors)
        .arg("--issuer-cert")
        .arg(&f.issuer.issuer_cert)
        .arg("--issuer-key")
        .arg(&f.issuer.issuer_key)
        .args(["--token-validation", "local", "--tokens-file"])
        .arg(&f.tokens)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn refuses_to_start_with_an_issuer_of_another_anchor() {
    let f = files();
    let other = pki::generate(&PkiParams::default()).unwrap();
    std::fs::write(&f.issuer.trust_anchors, other.trust_anchor_pem).unwrap();
    let out = command(&f)
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is unusable"), "{stderr}");
    assert!(
        stderr.contains("not signed by any trust anchor"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&f.issuer.issuer_cert.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn local_mode_needs_a_tokens_file() {
    let f = files();
    let out = Command::new(env!("CARGO_BIN_EXE_identity"))
        .arg("--trust-anchors")
        .arg(&f.issuer.trust_anchors)
        .arg("--issuer-cert")
        .arg(&f.issuer.issuer_cert)
        .arg("--issuer-key")
        .arg(&f.issuer.issuer_key)
        .args(["--token-validation", "local"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokens-file"));
}

#[tokio::test]
async fn serves_certify_and_admin_then_stops_on_sigterm() {
    let f = files();
    let (grpc, admin) = (free_port(), free_port());
    let mut child = Child(
        command(&f)
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .spawn()
            .unwrap(),
    );
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    assert_eventually!(
        tokio::net::TcpStream::connect(admin_addr).await.is_ok(),
        "admin server never came up"
    );
    assert_eq!(http_get(admin_addr, "/ready").await.0, 200);

    let mut client = linkerd2_proxy_api::identity::identity_client::IdentityClient::connect(
        format!("http://127.0.0.1:{grpc}"),
    )
    .await
    .unwrap();
    let web = id("shop", "web");
    let rsp = client
        .certify(request(&web, "tok-web"))
        .await
        .unwrap()
        .into_inner();
    verify(
        &f.pki.trust_anchor_pem,
        &rsp,
        &web.dns_name(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        metric(admin_addr, "identity_certificates_issued_total").await,
        1
    );
    // The client stays connected: shutdown must not wait for it to leave.
    let _client = client;

    let pid = child.0.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// Kills the process if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
