//! Renewal timing on tokio's paused clock, and hot swapping of the certificate in live
//! TLS configurations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod identity_common;

use std::sync::Arc;
use std::time::Duration;

use identity_common::*;
use linkerd_lite_proxy::identity::{self, Backoff, server_name};
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The identity service on its own thread and runtime, on the real clock, so that the
/// test's paused clock only drives the proxy side. Dropping the runtime kills it
/// abruptly, closing its listener and connections.
struct RemoteService {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl RemoteService {
    fn start(dir: std::path::PathBuf, leaf_lifetime: Duration) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (addr, _stop) = serve(&dir, leaf_lifetime).await;
                addr_tx.send(addr).unwrap();
                let _ = stop_rx.await;
            });
            rt.shutdown_timeout(Duration::from_secs(2));
            let _ = done_tx.send(());
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            addr,
            stop: Some(stop),
            done,
        }
    }

    /// Stops the service and waits until its sockets are closed.
    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            self.done.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn renews_at_70_percent_then_backs_off_and_keeps_the_old_certificate() {
    let ca = ca();
    let mut svc = RemoteService::start(ca.dir.path().to_path_buf(), Duration::from_secs(60));
    let mut config = proxy_config(&ca, svc.addr, "web");
    // On a paused clock a deadline would fire while the real socket is still in flight.
    config.request_timeout = None;
    config.backoff = Backoff {
        min: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };
    let id = identity::spawn(config).unwrap();
    let mut rx = id.watch();
    rx.wait_for(Option::is_some).await.unwrap();
    let t0 = Instant::now();
    let first = id.current().unwrap();

    // A 60 s certificate is renewed at about 42 s.
    rx.changed().await.unwrap();
    let renewed_after = t0.elapsed();
    assert!(
        renewed_after >= Duration::from_secs(41) && renewed_after <= Duration::from_millis(42_100),
        "renewed after {renewed_after:?}"
    );
    let second = id.current().unwrap();
    assert_ne!(first.chain[0], second.chain[0]);
    assert_eq!(id.stats().certified(), 2);
    let t1 = Instant::now();

    // The service goes away.
    svc.kill();

    // Until it expires (60 s after t1), the old certificate stays and the proxy is ready,
    // while renewals fail and back off.
    tokio::time::sleep_until(t1 + Duration::from_secs(59)).await;
    let still = id.current().expect("certificate withdrawn before expiry");
    assert_eq!(still.chain[0], second.chain[0]);
    assert!(id.is_ready());
    let failed = id.stats().failed();
    // Retries from 42 s to 59 s with delays doubling from 1 s (jittered into [d/2, d]),
    // capped at 8 s: between 3 and 7 attempts. Without backoff it would be ~17.
    assert!((3..=7).contains(&failed), "{failed} failed attempts");

    // After expiry nothing is presented and the proxy is not ready.
    tokio::time::sleep_until(t1 + Duration::from_millis(60_500)).await;
    assert!(id.current().is_none());
    assert!(!id.is_ready());
    assert_eq!(id.stats().certified(), 2);

    // And it keeps trying, at the capped pace.
    let before = id.stats().failed();
    tokio::time::sleep(Duration::from_secs(80)).await;
    let more = id.stats().failed() - before;
    assert!(
        (10..=20).contains(&more),
        "{more} attempts in 80 s at a 4-8 s pace"
    );
}

/// The certificate a server presents to an anonymous client.
async fn presented(
    server_config: Arc<rustls::ServerConfig>,
    name: &str,
    anchors_pem: &str,
) -> CertificateDer<'static> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config);
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.shutdown().await;
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in ::identity::pki::parse_pem_certs(anchors_pem, "anchors").unwrap() {
        roots.add(c).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(client))
        .connect(server_name(name).unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn configs_taken_before_a_renewal_present_the_renewed_certificate() {
    let ca = ca();
    // 3 s leaves are renewed after about 2 s of real time.
    let (addr, _stop) = serve(ca.dir.path(), Duration::from_secs(3)).await;
    let web = certified(&ca, addr, "web").await;
    let server_config = web.server_config();
    let first = web.current().unwrap().chain[0].clone();
    assert_eq!(
        presented(server_config.clone(), web.name(), &ca.pki.trust_anchor_pem).await,
        first
    );

    let mut rx = web.watch();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let second = web.current().unwrap().chain[0].clone();
    assert_ne!(first, second);
    assert_eq!(
        presented(server_config, web.name(), &ca.pki.trust_anchor_pem).await,
        second
    );
}
