//! Shared test helpers: PKI files on disk, a running service on loopback, a client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identity::ca::LeafPolicy;
use identity::issuer::IssuerFiles;
use identity::pki::{self, GeneratedPki, PkiParams};
use identity::server::{Config, Identity, TokenBackend};
use identity::service::Names;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use smi_crds::mesh::WorkloadIdentity;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Polls `cond` until it holds, failing after 10 s.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if $cond { break; }
            assert!(tokio::time::Instant::now() < deadline, $($msg)+);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// A clock the test can move forward.
#[derive(Clone, Default)]
pub struct TestClock(Arc<AtomicU64>);

impl TestClock {
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
    pub fn clock(&self) -> identity::Clock {
        let offset = self.0.clone();
        Arc::new(move || SystemTime::now() + Duration::from_secs(offset.load(Ordering::SeqCst)))
    }
}

/// PKI material on disk.
pub struct Files {
    pub dir: tempfile::TempDir,
    pub pki: GeneratedPki,
    pub issuer: IssuerFiles,
    pub tokens: PathBuf,
}

pub const TOKENS: &str = "\
# token            service account
tok-web            shop/web
tok-api            shop/api
";

pub fn files() -> Files {
    files_with(&PkiParams::default())
}

pub fn files_with(params: &PkiParams) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::generate(params).unwrap();
    let issuer = IssuerFiles {
        trust_anchors: dir.path().join("ca.crt"),
        issuer_cert: dir.path().join("issuer.crt"),
        issuer_key: dir.path().join("issuer.key"),
    };
    std::fs::write(&issuer.trust_anchors, &pki.trust_anchor_pem).unwrap();
    std::fs::write(&issuer.issuer_cert, &pki.issuer_cert_pem).unwrap();
    std::fs::write(&issuer.issuer_key, &pki.issuer_key_pem).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    Files {
        dir,
        pki,
        issuer,
        tokens,
    }
}

pub fn config(files: &Files) -> Config {
    Config {
        issuer: files.issuer.clone(),
        tokens: TokenBackend::Local {
            path: files.tokens.clone(),
        },
        names: Names::default(),
        leaf: LeafPolicy::default(),
        reload_interval: Duration::from_millis(50),
        service_account: identity::DEFAULT_SERVICE_ACCOUNT.to_string(),
        require_tls: false,
    }
}

/// A service running on loopback; stops when dropped.
pub struct Running {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn client(&self) -> IdentityClient<Channel> {
        IdentityClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn start(config: Config, clock: identity::Clock) -> Running {
    let identity = Identity::build(config, clock).await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        identity
            .serve(grpc, admin, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        grpc: grpc_addr,
        admin: admin_addr,
        stop: Some(tx),
        task,
    }
}

/// Replaces a file the way Kubernetes updates mounted secrets: write aside, rename.
pub fn write_atomic(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn id(ns: &str, sa: &str) -> WorkloadIdentity {
    WorkloadIdentity::new(ns, sa)
}

/// A P-256 CSR naming `names` as DNS SANs.
pub fn csr(names: &[String]) -> Vec<u8> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    CertificateParams::new(names.to_vec())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

pub fn request(identity: &WorkloadIdentity, token: &str) -> CertifyRequest {
    CertifyRequest {
        identity: identity.dns_name(),
        token: token.as_bytes().to_vec(),
        certificate_signing_request: csr(&[identity.dns_name()]),
    }
}

/// Verifies a Certify response's chain to `anchors_pem` for `name` at `at`.
pub fn verify(
    anchors_pem: &str,
    rsp: &CertifyResponse,
    name: &str,
    at: SystemTime,
) -> Result<(), webpki::Error> {
    let anchors_der = pki::parse_pem_certs(anchors_pem, "anchors").unwrap();
    let anchors: Vec<_> = anchors_der
        .iter()
        .map(|d| webpki::anchor_from_trusted_cert(d).unwrap())
        .collect();
    let leaf = CertificateDer::from(rsp.leaf_certificate.clone());
    let intermediates: Vec<CertificateDer<'_>> = rsp
        .intermediate_certificates
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let time = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap());
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
}

/// The issuer name (subject of the signer) of a DER certificate.
pub fn issuer_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer().to_string()
}

/// A plain HTTP/1 GET on loopback: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample on the admin `/metrics`, 0 when absent.
pub async fn metric(admin: SocketAddr, sample: &str) -> u64 {
    let (_, body) = http_get(admin, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}
