//! The channel to the identity service: TLS verified against the trust anchors for
//! the service's identity, or plaintext when no service identity is configured.

use std::io;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::Error;

/// A lazily connecting channel to `addr`; over TLS when `svc_name` is set.
pub(super) fn channel(
    addr: &str,
    svc_name: Option<&str>,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
) -> Result<Channel, Error> {
    let endpoint =
        Endpoint::from_shared(addr.to_string()).map_err(|_| Error::Addr(addr.to_string()))?;
    let Some(svc_name) = svc_name else {
        return Ok(endpoint.connect_lazy());
    };
    let name = super::server_name(svc_name)?;
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::RustlsKey)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
            connect(uri, connector.clone(), name.clone())
        })),
    )
}

async fn connect(
    uri: http::Uri,
    connector: TlsConnector,
    name: ServerName<'static>,
) -> io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "identity address has no host")
        })?;
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(name, tcp).await?;
    Ok(hyper_util::rt::TokioIo::new(tls))
}
