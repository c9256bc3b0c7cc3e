//! TLS on the gRPC port, with a certificate the service issues to itself.
//!
//! Proxies send their service-account token with each Certify call, so the channel is
//! TLS: the service presents a leaf for its own identity
//! (`{service-account}.{control-plane-ns}.serviceaccount.identity.{control-plane-ns}.{trust-domain}`),
//! signed by the current issuer, which proxies verify against the trust anchors. The
//! leaf is re-issued when the issuer rotates and at 70 % of its lifetime.
//!
//! One port serves both TLS and plaintext gRPC: the first byte of a connection tells
//! a TLS ClientHello (`0x16`) from an HTTP/2 preface. Plaintext can be refused
//! (`--require-tls`); it stays allowed by default for local mode and older proxies.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use smi_crds::mesh::WorkloadIdentity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::Clock;
use crate::ca::{Ca, LeafPolicy};

/// How long a client has to send its first byte and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

type Current = watch::Receiver<Option<Arc<rustls::sign::CertifiedKey>>>;

/// Why the service's own TLS identity cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The key cannot be generated or loaded.
    #[error("cannot create the identity service's tls key")]
    Key(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// rustls refused the configuration.
    #[error("cannot build the identity service's tls configuration")]
    Config(#[source] rustls::Error),
}

/// The service's own certificate, kept current.
#[derive(Debug)]
pub struct ServerIdentity {
    config: Arc<ServerConfig>,
    task: JoinHandle<()>,
}

impl Drop for ServerIdentity {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ServerIdentity {
    /// Generates a key and keeps a leaf for `identity` signed by the current issuer.
    pub fn spawn(
        identity: WorkloadIdentity,
        mut issuer: watch::Receiver<Arc<Ca>>,
        policy: LeafPolicy,
        clock: Clock,
    ) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::Key(Box::new(e)))?;
        let signing_key = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .map_err(|e| TlsError::Key(Box::new(e)))?;
        let (tx, current) = watch::channel(None);
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(TlsError::Config)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Resolver(current)));
        config.alpn_protocols = vec![b"h2".to_vec()];
        let task = tokio::spawn(async move {
            loop {
                let ca = issuer.borrow_and_update().clone();
                let next = match ca.sign_key(&identity, &key, &policy, clock()) {
                    Ok(leaf) => {
                        let mut chain = vec![leaf.der];
                        chain.extend(leaf.intermediates);
                        tx.send_replace(Some(Arc::new(rustls::sign::CertifiedKey::new(
                            chain,
                            signing_key.clone(),
                        ))));
                        let left = leaf.valid_until.duration_since(clock()).unwrap_or_default();
                        left.mul_f64(0.7).max(Duration::from_secs(1))
                    }
                    Err(error) => {
                        tracing::error!(error = %crate::DisplayChain(&error), "cannot issue the service's own tls certificate");
                        Duration::from_secs(5)
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(next) => {}
                    changed = issuer.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Self {
            config: Arc::new(config),
            task,
        })
    }

    /// A TLS 1.3 server configuration (ALPN `h2`) presenting the current certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

#[derive(Debug)]
struct Resolver(Current);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.borrow().clone()
    }
}

/// A connection on the gRPC port: TLS or plaintext.
#[derive(Debug)]
pub enum ServerIo {
    /// A TLS connection.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A plaintext connection.
    Plain(TcpStream),
}

/// Accepts connections on `listener`, sorting TLS from plaintext by their first byte,
/// and yields the ones to serve. Handshakes run concurrently, so a slow client never
/// holds up the others. With `require_tls`, plaintext connections are closed.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    require_tls: bool,
) -> (
    tokio_stream::wrappers::ReceiverStream<io::Result<ServerIo>>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "grpc accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let tx = tx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, sort(tcp, acceptor, require_tls))
                    .await
                {
                    Ok(Ok(Some(io))) => {
                        let _ = tx.send(Ok(io)).await;
                    }
                    Ok(Ok(None)) => tracing::debug!(%peer, "refused plaintext connection"),
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "tls handshake failed"),
                    Err(_) => tracing::debug!(%peer, "handshake timed out"),
                }
            });
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task)
}

async fn sort(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    require_tls: bool,
) -> io::Result<Option<ServerIo>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] == TLS_HANDSHAKE {
        let tls = acceptor.accept(tcp).await?;
        return Ok(Some(ServerIo::Tls(Box::new(tls))));
    }
    Ok((!require_tls).then_some(ServerIo::Plain(tcp)))
}

impl ServerIo {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tls(tls) => tls.get_ref().0,
            Self::Plain(tcp) => tcp,
        }
    }
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        let tcp = self.tcp();
        TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// The identity service's own identity name.
pub fn service_identity(service_account: &str, names: &crate::service::Names) -> WorkloadIdentity {
    WorkloadIdentity {
        namespace: names.control_plane_ns.clone(),
        service_account: service_account.to_string(),
        control_plane_ns: names.control_plane_ns.clone(),
        trust_domain: names.trust_domain.clone(),
    }
}
