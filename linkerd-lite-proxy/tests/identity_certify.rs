//! The proxy's identity against the real identity service over loopback gRPC, and
//! mTLS between proxies built from certified identities.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod identity_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::identity::pki;
use identity_common::*;
use linkerd_lite_proxy::identity::{self, Backoff, peer_identity, server_name};
use rustls_pki_types::UnixTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[tokio::test]
async fn proxy_certifies_against_the_real_service() {
    let ca = ca();
    let (addr, _stop) = serve(ca.dir.path(), Duration::from_secs(24 * 3600)).await;
    let mem = tempfile::tempdir().unwrap();
    let mut config = proxy_config(&ca, addr, "web");
    config.dir = Some(mem.path().to_path_buf());
    let id = identity::spawn(config).unwrap();
    tokio::time::timeout(Duration::from_secs(10), id.ready())
        .await
        .unwrap();
    assert!(id.is_ready());
    assert_eq!(id.stats().certified(), 1);

    let cert = id.current().unwrap();
    assert_eq!(cert.name, dns("web"));
    assert_eq!(cert.chain.len(), 2, "leaf and issuer");
    // The chain verifies to the trust anchor, for this identity and no other.
    let anchor = pki::parse_pem_certs(&ca.pki.trust_anchor_pem, "anchor").unwrap();
    let anchors = [webpki::anchor_from_trusted_cert(&anchor[0]).unwrap()];
    let ee = webpki::EndEntityCert::try_from(&cert.chain[0]).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &cert.chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    ee.verify_is_valid_for_subject_name(&server_name(&dns("web")).unwrap())
        .unwrap();
    assert!(
        ee.verify_is_valid_for_subject_name(&server_name(&dns("api")).unwrap())
            .is_err()
    );
    assert_eq!(peer_identity(&cert.chain), Some(dns("web")));
    let left = cert.valid_until.duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(24 * 3600 - 60), "{left:?}");

    // The key went only to the in-memory dir, owner-readable only.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(mem.path().join("key.p8")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn refused_token_keeps_the_proxy_not_ready() {
    let ca = ca();
    let (addr, _stop) = serve(ca.dir.path(), Duration::from_secs(3600)).await;
    let mut config = fast(proxy_config(&ca, addr, "web"));
    // shop/api's token for shop/web's identity.
    config.token_file = ca.dir.path().join("api.token");
    let id = identity::spawn(config).unwrap();
    assert_never_ready(&id, 3).await;
    use linkerd_lite_proxy::tls::TlsProvider;
    assert!(TlsProvider::server_config(&id).is_none());
}

#[test]
fn bad_configuration_is_refused_up_front() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let ca = ca();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut c = proxy_config(&ca, addr, "web");
    c.trust_anchors_pem = "nope".into();
    assert_eq!(
        identity::spawn(c).unwrap_err().to_string(),
        "trust anchors are not a pem certificate bundle"
    );
    let mut c = proxy_config(&ca, addr, "web");
    c.name = "not a name".into();
    assert!(
        identity::spawn(c)
            .unwrap_err()
            .to_string()
            .contains("not a dns name")
    );
    let mut c = proxy_config(&ca, addr, "web");
    c.addr = "::not a uri".into();
    assert!(
        identity::spawn(c)
            .unwrap_err()
            .to_string()
            .contains("not a uri")
    );
}

// === mTLS ===

/// One TLS exchange: the server answers with the client's identity.
async fn handshake(
    server: &identity::Identity,
    client_config: Arc<rustls::ClientConfig>,
    expect: &str,
) -> Result<String, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server.server_config());
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await?;
        let client_id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(peer_identity)
            .unwrap_or_else(|| "-".into());
        tls.write_all(client_id.as_bytes()).await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let result = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client_config)
            .connect(server_name(expect).unwrap(), tcp)
            .await?;
        let mut seen = String::new();
        tls.read_to_string(&mut seen).await?;
        Ok(seen)
    }
    .await;
    let _ = server_task.await;
    result
}

#[tokio::test]
async fn certified_proxies_complete_mtls_and_refuse_impostors() {
    let ca = ca();
    let (addr, _stop) = serve(ca.dir.path(), Duration::from_secs(3600)).await;
    let web = certified(&ca, addr, "web").await;
    let api = certified(&ca, addr, "api").await;

    // api → web: both sides authenticated; the server sees the client's identity.
    let seen = handshake(&web, api.client_config(), &dns("web"))
        .await
        .unwrap();
    assert_eq!(seen, dns("api"));

    // api expects db but reaches web: refused by the client.
    let err = handshake(&web, api.client_config(), &dns("db"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // A client without a certificate is still served (the caller decides policy).
    let roots = rustls_roots(&ca.pki.trust_anchor_pem);
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let seen = handshake(&web, Arc::new(anonymous), &dns("web"))
        .await
        .unwrap();
    assert_eq!(seen, "-");

    // A proxy of another trust anchor: neither side accepts the other.
    let other = self::ca();
    let (other_addr, _stop2) = serve(other.dir.path(), Duration::from_secs(3600)).await;
    let stranger = certified(&other, other_addr, "api").await;
    assert!(
        handshake(&web, stranger.client_config(), &dns("web"))
            .await
            .is_err()
    );
    assert!(
        handshake(&stranger, api.client_config(), &dns("api"))
            .await
            .is_err()
    );
}

fn rustls_roots(pem: &str) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pki::parse_pem_certs(pem, "anchors").unwrap() {
        roots.add(cert).unwrap();
    }
    Arc::new(roots)
}

// === the channel to the identity service ===

fn fast(mut config: identity::Config) -> identity::Config {
    config.backoff = Backoff {
        min: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    config
}

#[tokio::test]
async fn certifies_over_tls_verifying_the_service_identity() {
    let ca = ca();
    let mut svc = service_config(ca.dir.path(), Duration::from_secs(3600));
    svc.require_tls = true;
    let (addr, _stop) = serve_with(svc).await;

    // Naming the service's identity: TLS, verified, certified.
    let mut config = proxy_config(&ca, addr, "web");
    config.svc_name = Some(service_dns());
    let id = identity::spawn(config).unwrap();
    tokio::time::timeout(Duration::from_secs(10), id.ready())
        .await
        .unwrap();

    // Plaintext is refused by a service that requires TLS.
    let plain = identity::spawn(fast(proxy_config(&ca, addr, "api"))).unwrap();
    assert_never_ready(&plain, 2).await;

    // Expecting another identity for the service: the proxy refuses the service.
    let mut config = fast(proxy_config(&ca, addr, "api"));
    config.svc_name = Some(dns("web"));
    let wrong = identity::spawn(config).unwrap();
    assert_never_ready(&wrong, 2).await;

    // A service chained to another trust anchor is refused too.
    let other = self::ca();
    let mut config = fast(proxy_config(&other, addr, "api"));
    config.svc_name = Some(service_dns());
    let stranger = identity::spawn(config).unwrap();
    assert_never_ready(&stranger, 2).await;
}

#[tokio::test]
async fn plaintext_and_tls_share_the_port_by_default() {
    let ca = ca();
    let (addr, _stop) = serve(ca.dir.path(), Duration::from_secs(3600)).await;
    let mut config = proxy_config(&ca, addr, "web");
    config.svc_name = Some(service_dns());
    let tls = identity::spawn(config).unwrap();
    let plain = identity::spawn(proxy_config(&ca, addr, "api")).unwrap();
    for id in [&tls, &plain] {
        tokio::time::timeout(Duration::from_secs(10), id.ready())
            .await
            .unwrap();
    }
}

/// Log lines, captured from the subscriber of one test's thread.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wrong_service_name_fails_certification_with_a_clear_log() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ca = ca();
    let mut svc = service_config(ca.dir.path(), Duration::from_secs(3600));
    svc.require_tls = true;
    let (addr, _stop) = serve_with(svc).await;
    let mut config = fast(proxy_config(&ca, addr, "api"));
    config.svc_name = Some(dns("web"));
    let wrong = identity::spawn(config).unwrap();
    assert_never_ready(&wrong, 1).await;
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("certify failed"))
        .unwrap_or_else(|| panic!("no certify failure logged:\n{text}"));
    // The operator learns which name was expected and which one was presented.
    for want in [
        "WARN",
        "certificate not valid for name \"web.shop.serviceaccount.identity.linkerd-lite.cluster.local\"",
        &service_dns(),
    ] {
        assert!(line.contains(want), "{want:?} missing from {line}");
    }
    assert_eq!(
        line.matches("not valid for name").count(),
        1,
        "said once: {line}"
    );
}
