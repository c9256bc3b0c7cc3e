//! Helpers shared by the proxy identity tests: a real identity service on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ::identity::ca::LeafPolicy;
use ::identity::issuer::IssuerFiles;
use ::identity::pki::{self, GeneratedPki};
use ::identity::server::{Config as ServiceConfig, Identity as Service, TokenBackend};
use ::identity::service::Names;
use linkerd_lite_proxy::identity::{self, Config};
use smi_crds::mesh::WorkloadIdentity;
use tokio::net::TcpListener;

pub struct Ca {
    pub dir: tempfile::TempDir,
    pub pki: GeneratedPki,
}

pub fn ca() -> Ca {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::generate(&Default::default()).unwrap();
    std::fs::write(dir.path().join("ca.crt"), &pki.trust_anchor_pem).unwrap();
    std::fs::write(dir.path().join("issuer.crt"), &pki.issuer_cert_pem).unwrap();
    std::fs::write(dir.path().join("issuer.key"), &pki.issuer_key_pem).unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        "tok-web shop/web\ntok-api shop/api\ntok-db shop/db\n",
    )
    .unwrap();
    for (name, token) in [("web", "tok-web"), ("api", "tok-api"), ("db", "tok-db")] {
        std::fs::write(
            dir.path().join(format!("{name}.token")),
            format!("{token}\n"),
        )
        .unwrap();
    }
    Ca { dir, pki }
}

/// The proxy variables (without the prefix) that certify a proxy as service account
/// `sa` of namespace `shop` with the identity service at `identity_addr`.
pub fn proxy_vars(ca: &Ca, identity_addr: SocketAddr, sa: &str) -> Vec<(&'static str, String)> {
    vec![
        ("IDENTITY_ADDR", identity_addr.to_string()),
        ("IDENTITY_NAME", dns(sa)),
        (
            "IDENTITY_TOKEN_FILE",
            ca.dir
                .path()
                .join(format!("{sa}.token"))
                .display()
                .to_string(),
        ),
        ("IDENTITY_TRUST_ANCHORS", ca.pki.trust_anchor_pem.clone()),
    ]
}

pub fn service_config(dir: &Path, leaf_lifetime: Duration) -> ServiceConfig {
    ServiceConfig {
        issuer: IssuerFiles {
            trust_anchors: dir.join("ca.crt"),
            issuer_cert: dir.join("issuer.crt"),
            issuer_key: dir.join("issuer.key"),
        },
        tokens: TokenBackend::Local {
            path: dir.join("tokens"),
        },
        names: Names::default(),
        leaf: LeafPolicy {
            lifetime: leaf_lifetime,
            clock_skew: Duration::from_secs(20),
        },
        reload_interval: Duration::from_secs(1),
        service_account: ::identity::DEFAULT_SERVICE_ACCOUNT.to_string(),
        require_tls: false,
    }
}

/// Runs the identity service on the current runtime; it stops when the sender drops.
pub async fn serve(
    dir: &Path,
    leaf_lifetime: Duration,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_with(service_config(dir, leaf_lifetime)).await
}

/// Runs the identity service on the current runtime; it stops when the sender drops.
pub async fn serve_with(config: ServiceConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let svc = Service::build(config, ::identity::system_clock())
        .await
        .unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(svc.serve(grpc, admin, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Waits until `id` has failed `n` times, then checks it is not ready.
pub async fn assert_never_ready(id: &identity::Identity, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while id.stats().failed() < n {
        assert!(tokio::time::Instant::now() < deadline, "no failed attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!id.is_ready());
    assert_eq!(id.stats().certified(), 0);
}

/// The identity service's own identity, as `mesh install` names its service account.
pub fn service_dns() -> String {
    WorkloadIdentity {
        namespace: "linkerd-lite".into(),
        service_account: ::identity::DEFAULT_SERVICE_ACCOUNT.into(),
        control_plane_ns: "linkerd-lite".into(),
        trust_domain: "cluster.local".into(),
    }
    .dns_name()
}

pub fn dns(sa: &str) -> String {
    WorkloadIdentity::new("shop", sa).dns_name()
}

pub fn proxy_config(ca: &Ca, addr: SocketAddr, sa: &str) -> Config {
    Config::new(
        format!("http://{addr}"),
        dns(sa),
        ca.dir.path().join(format!("{sa}.token")),
        ca.pki.trust_anchor_pem.clone(),
    )
}

pub async fn certified(ca: &Ca, addr: SocketAddr, sa: &str) -> identity::Identity {
    let id = identity::spawn(proxy_config(ca, addr, sa)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), id.ready())
        .await
        .unwrap();
    id
}
