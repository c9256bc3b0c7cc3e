//! rustls configurations over the current certificate, and peer identities.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::sync::watch;

use super::{CertifiedKey, Error};

type Current = watch::Receiver<Option<Arc<CertifiedKey>>>;

/// Hands rustls whatever certificate is current at handshake time.
#[derive(Debug)]
struct Resolver(Current);

impl Resolver {
    fn current(&self) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.borrow().as_ref().map(|c| c.rustls.clone())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.0.borrow().is_some()
    }
}

/// The trust anchors as a root store.
pub(super) fn roots(pem: &str) -> Result<Arc<RootCertStore>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::TrustAnchors)?;
    if certs.is_empty() {
        return Err(Error::TrustAnchors);
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|source| Error::TrustAnchor { index, source })?;
    }
    Ok(Arc::new(roots))
}

pub(super) fn server_config(
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    current: Current,
) -> Result<Arc<ServerConfig>, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(Error::Verifier)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::RustlsKey)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver(current)));
    Ok(Arc::new(config))
}

pub(super) fn client_config(
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    current: Current,
) -> Result<Arc<ClientConfig>, Error> {
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::RustlsKey)?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Resolver(current)));
    Ok(Arc::new(config))
}

/// Verifies `chain` (leaf first) to `roots` for `name`, as a peer would.
pub(super) fn verify_chain(
    roots: &RootCertStore,
    chain: &[CertificateDer<'_>],
    name: &str,
    now: UnixTime,
) -> Result<(), webpki::Error> {
    let (leaf, intermediates) = chain.split_first().ok_or(webpki::Error::BadDer)?;
    let ee = webpki::EndEntityCert::try_from(leaf)?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &roots.roots,
            intermediates,
            now,
            usage,
            None,
            None,
        )?;
    }
    let name = ServerName::try_from(name).map_err(|_| webpki::Error::BadDer)?;
    ee.verify_is_valid_for_subject_name(&name)
}

/// The TLS server name to connect with when the peer must hold `identity`.
pub fn server_name(identity: &str) -> Result<ServerName<'static>, Error> {
    match ServerName::try_from(identity.to_string()) {
        Ok(name @ ServerName::DnsName(_)) => Ok(name),
        _ => Err(Error::Name(identity.to_string())),
    }
}

/// The identity (DNS SAN) of a peer whose chain rustls has verified, e.g. from
/// `ServerConnection::peer_certificates()`; the value of `l5d-client-id`.
///
/// Only call it on verified chains: it reads the leaf, it does not verify it.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = chain.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    cert.valid_dns_names().next().map(str::to_string)
}

impl crate::tls::TlsProvider for super::Identity {
    fn local_name(&self) -> &str {
        self.name()
    }

    fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.is_ready()
            .then(|| super::Identity::server_config(self))
    }

    fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.is_ready()
            .then(|| super::Identity::client_config(self))
    }
}
