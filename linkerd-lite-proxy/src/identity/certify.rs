//! The certify loop: key, CSR, `Identity/Certify`, renew at 70 %, back off on failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{Backoff, Config, Error};

/// The fraction of a certificate's remaining lifetime after which it is renewed.
const REFRESH_AT: f64 = 0.7;
/// The shortest wait before a renewal.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// A certificate issued for this proxy, with its key, as rustls presents it.
#[derive(Debug)]
pub struct CertifiedKey {
    /// The identity the certificate carries (DNS SAN).
    pub name: String,
    /// The chain: leaf first, then the intermediates the service returned.
    pub chain: Vec<CertificateDer<'static>>,
    /// When the certificate expires, as the service reported it.
    pub valid_until: SystemTime,
    /// When the certificate expires, on tokio's clock.
    pub expires_at: Instant,
    pub(super) rustls: Arc<rustls::sign::CertifiedKey>,
}

/// Certify outcomes, for the admin server's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    certified: AtomicU64,
    failed: AtomicU64,
}

impl Stats {
    /// Certificates received and installed.
    pub fn certified(&self) -> u64 {
        self.certified.load(Ordering::Relaxed)
    }

    /// Certify attempts that failed (unreachable service, refusal, bad response).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// A handle on the proxy's identity. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Identity {
    name: Arc<str>,
    current: watch::Receiver<Option<Arc<CertifiedKey>>>,
    stats: Arc<Stats>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Identity {
    /// This proxy's identity, in DNS form.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a valid certificate is installed; the admin `/ready` answers 503 until
    /// it is.
    pub fn is_ready(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// Waits until a certificate is installed.
    pub async fn ready(&self) {
        let mut rx = self.current.clone();
        // An error means the loop ended, which only happens when every handle is gone.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// The current certificate, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every renewal (and `None` once a certificate expires
    /// without a replacement); the current value counts as seen.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<CertifiedKey>>> {
        let mut rx = self.current.clone();
        rx.mark_unchanged();
        rx
    }

    /// Certify outcomes.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The inbound TLS configuration: presents the current certificate, requests a
    /// client certificate and verifies it against the trust anchors when offered.
    /// Clone it to set ALPN protocols.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The outbound TLS configuration: presents the current certificate and verifies
    /// the server against the trust anchors and the server name passed at connect time
    /// (see [`super::server_name`]).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

/// Generates the key and CSR, and spawns the certify loop on the current tokio
/// runtime. The loop ends when every [`Identity`] clone and TLS configuration is
/// dropped.
pub fn spawn(config: Config) -> Result<Identity, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = super::tls::roots(&config.trust_anchors_pem)?;
    super::server_name(&config.name).map_err(|_| Error::Name(config.name.clone()))?;
    let channel = super::connect::channel(
        &config.addr,
        config.svc_name.as_deref(),
        provider.clone(),
        roots.clone(),
    )?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::Key)?;
    let mut params = CertificateParams::new(vec![config.name.clone()]).map_err(Error::Key)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(Error::Key)?;
    let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
    if let Some(dir) = &config.dir {
        write_private(&dir.join("key.p8"), key_der.secret_pkcs8_der())?;
        write_private(&dir.join("csr.der"), csr.der())?;
    }
    let signing_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key_der))
        .map_err(Error::RustlsKey)?;

    let (tx, current) = watch::channel(None);
    let stats = Arc::new(Stats::default());
    let server = super::tls::server_config(provider.clone(), roots.clone(), current.clone())?;
    let client = super::tls::client_config(provider, roots.clone(), current.clone())?;
    let certifier = Certifier {
        name: config.name.clone(),
        token_file: config.token_file,
        csr: csr.der().to_vec(),
        signing_key,
        roots,
        client: IdentityClient::new(channel),
        backoff: config.backoff,
        timeout: config.request_timeout,
        stats: stats.clone(),
        tx,
    };
    tokio::spawn(certifier.run());
    Ok(Identity {
        name: config.name.into(),
        current,
        stats,
        server,
        client,
    })
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| Error::Dir {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)
}

/// Why one Certify attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot read token file {path}")]
    Token {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a `#[source]`: a transport failure's `Status` prints its cause three
    /// times over; its code and message say it once (e.g. the service presenting
    /// another name than `IDENTITY_SVC_NAME`).
    #[error("certify failed: {:?}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    #[error("certify timed out")]
    Timeout,
    #[error("certify response is unusable: {0}")]
    Response(String),
}

struct Certifier {
    name: String,
    token_file: std::path::PathBuf,
    csr: Vec<u8>,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    roots: Arc<RootCertStore>,
    client: IdentityClient<Channel>,
    backoff: Backoff,
    timeout: Option<Duration>,
    stats: Arc<Stats>,
    tx: watch::Sender<Option<Arc<CertifiedKey>>>,
}

impl Certifier {
    async fn run(mut self) {
        let mut failures = 0u32;
        let mut expires_at: Option<Instant> = None;
        loop {
            let wake = match self.attempt().await {
                Ok(cert) => {
                    failures = 0;
                    self.stats.certified.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let left = cert.expires_at.saturating_duration_since(now);
                    tracing::info!(identity = %self.name, expires_in = ?left, "certified");
                    expires_at = Some(cert.expires_at);
                    self.tx.send_replace(Some(Arc::new(cert)));
                    // A floor keeps a nearly expired certificate from spinning the loop.
                    now + left.mul_f64(REFRESH_AT).max(MIN_REFRESH)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff_delay(self.backoff, failures, rand::random::<f64>());
                    tracing::warn!(identity = %self.name, error = %chain(&error), retry_in = ?delay, "certify failed");
                    let wake = Instant::now() + delay;
                    // Wake at expiry too, to withdraw the certificate on time.
                    match expires_at {
                        Some(at) if at > Instant::now() => wake.min(at),
                        _ => wake,
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.tx.closed() => return,
            }
            if expires_at.is_some_and(|at| at <= Instant::now()) {
                expires_at = None;
                tracing::warn!(identity = %self.name, "certificate expired without renewal");
                self.tx.send_replace(None);
            }
        }
    }

    async fn attempt(&mut self) -> Result<CertifiedKey, AttemptError> {
        let token =
            tokio::fs::read(&self.token_file)
                .await
                .map_err(|source| AttemptError::Token {
                    path: self.token_file.clone(),
                    source,
                })?;
        let request = CertifyRequest {
            identity: self.name.clone(),
            // Token files often end in a newline; the token itself never does.
            token: token.trim_ascii().to_vec(),
            certificate_signing_request: self.csr.clone(),
        };
        let call = self.client.certify(request);
        let rsp = match self.timeout {
            Some(t) => tokio::time::timeout(t, call)
                .await
                .map_err(|_| AttemptError::Timeout)?,
            None => call.await,
        };
        let rsp = rsp.map_err(AttemptError::Status)?.into_inner();
        self.install(rsp)
    }

    /// Checks a response before it is used: the chain must verify to the trust anchors
    /// for our name, and the leaf must hold our key.
    fn install(&self, rsp: CertifyResponse) -> Result<CertifiedKey, AttemptError> {
        let bad = |what: &str| AttemptError::Response(what.to_string());
        let valid_until: SystemTime = rsp
            .valid_until
            .ok_or_else(|| bad("no valid_until"))?
            .try_into()
            .map_err(|_| bad("valid_until out of range"))?;
        let mut chain = vec![CertificateDer::from(rsp.leaf_certificate)];
        chain.extend(
            rsp.intermediate_certificates
                .into_iter()
                .map(CertificateDer::from),
        );
        super::tls::verify_chain(&self.roots, &chain, &self.name, UnixTime::now())
            .map_err(|e| AttemptError::Response(format!("leaf does not verify: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), self.signing_key.clone());
        certified
            .keys_match()
            .map_err(|_| bad("leaf does not hold this proxy's key"))?;
        let left = valid_until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Ok(CertifiedKey {
            name: self.name.clone(),
            chain,
            valid_until,
            expires_at: Instant::now() + left,
            rustls: Arc::new(certified),
        })
    }
}

/// The delay before retry number `failures` (from 1): `min * 2^(failures-1)`, capped
/// at `max`, then jittered into its upper half by `jitter` in `[0, 1)`.
fn backoff_delay(backoff: Backoff, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = backoff.min.saturating_mul(1 << exp).min(backoff.max);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(8),
        };
        let full: Vec<_> = (1..=7).map(|n| backoff_delay(b, n, 1.0)).collect();
        assert_eq!(
            full,
            [500, 1000, 2000, 4000, 8000, 8000, 8000].map(Duration::from_millis)
        );
        assert_eq!(backoff_delay(b, 3, 0.0), Duration::from_millis(1000));
        assert_eq!(backoff_delay(b, u32::MAX, 0.0), Duration::from_secs(4));
    }
}
