//! The TLS seams: what the proxy needs from an identity, a client-side connector, a
//! server-side acceptor, and the transport header meshed proxies exchange.
//!
//! The proxy only sees [`TlsProvider`]. In production it is backed by the identity
//! module's certify loop; tests back it with [`StaticTls`] over rcgen certificates.

use std::{fmt, io, sync::Arc};

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use rustls::{ClientConfig, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The ALPN protocol a client offers when a transport header follows the handshake.
/// Linkerd's value, so the header is recognised by either proxy.
pub const TRANSPORT_ALPN: &[u8] = b"transport.l5d.io/v1";

/// The header every HTTP request carries on the server side with the client's
/// authenticated identity.
pub const CLIENT_ID_HEADER: http::HeaderName = http::HeaderName::from_static("l5d-client-id");

/// A source of the proxy's current TLS configuration.
pub trait TlsProvider: Send + Sync + fmt::Debug + 'static {
    /// This proxy's identity, in DNS form; the SNI that selects mTLS termination.
    fn local_name(&self) -> &str;
    /// A server configuration with the current certificate, verifying (optional)
    /// client certificates against the trust anchors; `None` until certified.
    fn server_config(&self) -> Option<Arc<ServerConfig>>;
    /// A client configuration presenting the current certificate and verifying
    /// servers against the trust anchors; `None` until certified. Peer identity is
    /// checked through the server name passed at connect time.
    fn client_config(&self) -> Option<Arc<ClientConfig>>;
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate and key do not form a usable configuration.
    #[error("building tls configuration for {name}")]
    Config {
        /// The identity.
        name: String,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The trust anchors cannot verify client certificates.
    #[error("building client verifier for {name}")]
    Verifier {
        /// The identity.
        name: String,
        /// The cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// A fixed certificate: for tests and for setups that mount certificates directly.
#[derive(Clone, Debug)]
pub struct StaticTls {
    name: String,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl StaticTls {
    /// Builds both configurations from a certificate chain (leaf first), its key and
    /// the trust anchors.
    pub fn new(
        name: impl Into<String>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
    ) -> Result<Self, TlsError> {
        let name = name.into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|source| TlsError::Verifier {
                name: name.clone(),
                source,
            })?;
        let config_err = |source| TlsError::Config {
            name: name.clone(),
            source,
        };
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_err)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_err)?;
        Ok(Self {
            name,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

impl TlsProvider for StaticTls {
    fn local_name(&self) -> &str {
        &self.name
    }
    fn server_config(&self) -> Option<Arc<ServerConfig>> {
        Some(self.server.clone())
    }
    fn client_config(&self) -> Option<Arc<ClientConfig>> {
        Some(self.client.clone())
    }
}

/// Opens TLS to `server_name` over `io`, verifying that the server holds that
/// identity. With `header`, offers [`TRANSPORT_ALPN`] and writes the header first.
pub async fn connect<I: AsyncRead + AsyncWrite + Unpin>(
    io: I,
    config: &Arc<ClientConfig>,
    server_name: &str,
    header: Option<&TransportHeader>,
) -> io::Result<tokio_rustls::client::TlsStream<I>> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid tls server name"))?;
    let config = match header {
        Some(_) => {
            let mut c = (**config).clone();
            c.alpn_protocols = vec![TRANSPORT_ALPN.to_vec()];
            Arc::new(c)
        }
        None => config.clone(),
    };
    let mut tls = TlsConnector::from(config).connect(name, io).await?;
    if let Some(h) = header {
        tls.write_all(&h.encode_frame()).await?;
    }
    Ok(tls)
}

/// The server configuration `accept` uses: the provider's, also offering
/// [`TRANSPORT_ALPN`].
pub fn with_transport_alpn(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut c = config.clone();
    c.alpn_protocols = vec![TRANSPORT_ALPN.to_vec()];
    Arc::new(c)
}

/// Terminates TLS on `io`. Returns the stream, the client's identity if it presented
/// a certificate, and the transport header if the client sent one.
pub async fn accept<I: AsyncRead + AsyncWrite + Unpin>(
    io: I,
    config: Arc<ServerConfig>,
) -> io::Result<(
    tokio_rustls::server::TlsStream<I>,
    Option<String>,
    Option<TransportHeader>,
)> {
    let mut tls = TlsAcceptor::from(config).accept(io).await?;
    let (_, conn) = tls.get_ref();
    let client_id = conn
        .peer_certificates()
        .and_then(crate::identity::peer_identity);
    let transport = conn.alpn_protocol() == Some(TRANSPORT_ALPN);
    let header = if transport {
        Some(TransportHeader::read(&mut tls).await?)
    } else {
        None
    };
    Ok((tls, client_id, header))
}

/// The session protocol a transport header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProtocol {
    /// HTTP/1 follows.
    Http1,
    /// HTTP/2 follows.
    Http2,
}

/// The header a proxy sends after a TLS handshake with [`TRANSPORT_ALPN`]: which
/// local port of the peer the connection is for. Wire-compatible with Linkerd's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// The target port on the peer's workload.
    pub port: u16,
    /// What follows; `None` is opaque TCP.
    pub protocol: Option<SessionProtocol>,
}

#[derive(Clone, PartialEq, Message)]
struct HeaderProto {
    #[prost(int32, tag = "1")]
    port: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, optional, tag = "3")]
    session_protocol: Option<SessionProto>,
}

#[derive(Clone, PartialEq, Message)]
struct SessionProto {
    #[prost(message, optional, tag = "1")]
    http1: Option<Empty>,
    #[prost(message, optional, tag = "2")]
    http2: Option<Empty>,
}

#[derive(Clone, Copy, PartialEq, Message)]
struct Empty {}

const HEADER_PREFIX: &[u8] = b"transport.l5d.io/v1";
const MAX_HEADER_LEN: usize = 64 * 1024;

impl TransportHeader {
    /// The header as it goes on the wire: prefix, big-endian length, protobuf.
    pub fn encode_frame(&self) -> Vec<u8> {
        let msg = HeaderProto {
            port: i32::from(self.port),
            name: String::new(),
            session_protocol: self.protocol.map(|p| SessionProto {
                http1: (p == SessionProtocol::Http1).then_some(Empty {}),
                http2: (p == SessionProtocol::Http2).then_some(Empty {}),
            }),
        };
        let body = msg.encode_to_vec();
        let mut out = BytesMut::with_capacity(HEADER_PREFIX.len() + 4 + body.len());
        out.put_slice(HEADER_PREFIX);
        out.put_u32(body.len() as u32);
        out.put_slice(&body);
        out.to_vec()
    }

    /// Reads one header from `io`.
    pub async fn read<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Self> {
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidData, msg.to_string());
        let mut prefix = [0u8; HEADER_PREFIX.len() + 4];
        io.read_exact(&mut prefix).await?;
        if &prefix[..HEADER_PREFIX.len()] != HEADER_PREFIX {
            return Err(invalid("transport header has the wrong prefix"));
        }
        let len = (&prefix[HEADER_PREFIX.len()..]).get_u32() as usize;
        if len > MAX_HEADER_LEN {
            return Err(invalid("transport header is too long"));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        let msg = HeaderProto::decode(&body[..])
            .map_err(|_| invalid("transport header is not a valid message"))?;
        let port = u16::try_from(msg.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid("transport header names no valid port"))?;
        let protocol = msg.session_protocol.and_then(|s| match (s.http1, s.http2) {
            (_, Some(_)) => Some(SessionProtocol::Http2),
            (Some(_), None) => Some(SessionProtocol::Http1),
            _ => None,
        });
        Ok(Self { port, protocol })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    /// A CA plus helpers to issue workload certificates, for tests.
    pub(crate) struct TestCa {
        pub(crate) cert: rcgen::Certificate,
        pub(crate) issuer: rcgen::Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new() -> Self {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "root.test");
            let cert = params.self_signed(&key).unwrap();
            let issuer = rcgen::Issuer::new(params, key);
            Self { cert, issuer }
        }

        pub(crate) fn roots(&self) -> RootCertStore {
            let mut roots = RootCertStore::empty();
            roots.add(self.cert.der().clone()).unwrap();
            roots
        }

        pub(crate) fn issue(&self, name: &str) -> StaticTls {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            StaticTls::new(name, vec![cert.der().clone()], key, self.roots()).unwrap()
        }
    }

    #[tokio::test]
    async fn mtls_carries_identities_and_the_transport_header() {
        let ca = TestCa::new();
        let server = ca.issue("web.shop.serviceaccount.identity.linkerd-lite.cluster.local");
        let client = ca.issue("app.shop.serviceaccount.identity.linkerd-lite.cluster.local");
        let (a, b) = tokio::io::duplex(16 * 1024);
        let header = TransportHeader {
            port: 8080,
            protocol: Some(SessionProtocol::Http2),
        };
        let srv_cfg = with_transport_alpn(&server.server_config().unwrap());
        let srv = tokio::spawn(async move { accept(b, srv_cfg).await.unwrap() });
        let cli_cfg = client.client_config().unwrap();
        let name = server.local_name().to_string();
        let _tls = connect(a, &cli_cfg, &name, Some(&header)).await.unwrap();
        let (_, client_id, got) = srv.await.unwrap();
        assert_eq!(client_id.as_deref(), Some(client.local_name()));
        assert_eq!(got, Some(header));
    }

    #[tokio::test]
    async fn a_server_with_another_identity_is_refused() {
        let ca = TestCa::new();
        let server = ca.issue("evil.shop.serviceaccount.identity.linkerd-lite.cluster.local");
        let client = ca.issue("app.shop.serviceaccount.identity.linkerd-lite.cluster.local");
        let (a, b) = tokio::io::duplex(16 * 1024);
        let srv_cfg = server.server_config().unwrap();
        tokio::spawn(async move { accept(b, srv_cfg).await });
        let cli_cfg = client.client_config().unwrap();
        let res = connect(
            a,
            &cli_cfg,
            "web.shop.serviceaccount.identity.linkerd-lite.cluster.local",
            None,
        )
        .await;
        assert!(res.is_err());
    }

    #[tokio::test]
    async fn malformed_transport_headers_are_rejected() {
        let mut bad: &[u8] = b"transport.l5d.io/v1\x00\x00\x00\x02\xff\xff";
        assert!(TransportHeader::read(&mut bad).await.is_err());
        let mut wrong: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(TransportHeader::read(&mut wrong).await.is_err());
        let frame = TransportHeader {
            port: 3306,
            protocol: None,
        }
        .encode_frame();
        let got = TransportHeader::read(&mut &frame[..]).await.unwrap();
        assert_eq!(got.port, 3306);
        assert_eq!(got.protocol, None);
    }
}
