//! The proxy's identity: an in-memory key, certified by the identity service and kept
//! fresh, and rustls configurations that always present the current certificate.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use linkerd_lite_proxy::identity::{self, Config};
//! let config = Config::new(
//!     "http://identity.linkerd-lite.svc.cluster.local:8080",
//!     "web.shop.serviceaccount.identity.linkerd-lite.cluster.local",
//!     "/var/run/secrets/tokens/linkerd-lite-identity-token",
//!     std::fs::read_to_string("/var/run/linkerd-lite/trust-anchors.pem")?,
//! );
//! let id = identity::spawn(config)?;      // starts the certify loop
//! assert!(!id.is_ready());                // `/ready` answers 503 until...
//! id.ready().await;                       // ...the first certificate arrives
//! let server = id.server_config();        // for the inbound listener
//! let client = id.client_config();        // for outbound connections
//! # let _ = (server, client); Ok(()) }
//! ```
//!
//! - [`spawn`] generates an ECDSA P-256 key in memory, builds a CSR for the configured
//!   name and calls `Identity/Certify` with the token read (fresh, each time) from the
//!   token file. It renews at 70 % of the certificate's remaining lifetime, retries
//!   failures with exponential backoff and jitter, and keeps the old certificate until
//!   it expires; after expiry nothing is presented and [`Identity::is_ready`] is false.
//! - [`Identity::watch`] is a `tokio::sync::watch` of the current [`CertifiedKey`].
//! - [`Identity::server_config`] requests client certificates but also accepts clients
//!   without one; the caller decides policy from [`peer_identity`] (the verified
//!   client's DNS SAN, for `l5d-client-id`).
//! - [`Identity::client_config`] presents the current certificate and verifies servers
//!   against the trust anchors; the expected peer identity is the TLS server name given
//!   at connect time ([`server_name`]), so a peer with another identity is refused.
//! - Both configurations resolve the certificate on every handshake, so a renewal
//!   takes effect without rebuilding them. Both use the ring provider explicitly.
//!
//! The channel to the identity service is TLS when [`Config::svc_name`] names the
//! service's identity (the service presents a certificate it issues to itself), so the
//! token is never sent in the clear; without it the channel is plaintext.
//!
//! The private key never leaves the process, except into [`Config::dir`] when one is
//! set (it must be an in-memory filesystem, e.g. an `emptyDir` with `medium: Memory`).
//!
//! # Layout
//!
//! - `certify`: key, CSR and the certify/refresh loop.
//! - `connect`: the (TLS) channel to the identity service.
//! - `tls`: certificate resolvers, rustls configurations and peer identities.

mod certify;
mod connect;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

pub use self::certify::{CertifiedKey, Identity, Stats, spawn};
pub use self::tls::{peer_identity, server_name};

/// How the proxy obtains its identity.
#[derive(Clone, Debug)]
pub struct Config {
    /// The identity service's address, e.g. `http://identity.linkerd-lite:8080`.
    pub addr: String,
    /// The identity service's own identity (DNS form). When set, the channel is TLS
    /// and the service must present a certificate for this name, chained to the trust
    /// anchors; when `None`, the channel is plaintext (local mode), and the token
    /// travels in the clear.
    pub svc_name: Option<String>,
    /// This proxy's identity in DNS form, the name its certificate must carry.
    pub name: String,
    /// The service-account token file, read before every Certify call.
    pub token_file: PathBuf,
    /// The trust anchors (PEM) peers and the identity chain are verified against.
    pub trust_anchors_pem: String,
    /// An in-memory directory to write the key and CSR to, for debugging; `None` keeps
    /// them only in process memory.
    pub dir: Option<PathBuf>,
    /// Retry backoff after a failed Certify: starts at `min`, doubles up to `max`.
    pub backoff: Backoff,
    /// Deadline of one Certify call; `None` waits for the service.
    pub request_timeout: Option<Duration>,
}

impl Config {
    /// A plaintext configuration with the default backoff (0.5 s to 60 s) and a 10 s
    /// deadline; set [`Config::svc_name`] for TLS.
    pub fn new(
        addr: impl Into<String>,
        name: impl Into<String>,
        token_file: impl Into<PathBuf>,
        trust_anchors_pem: impl Into<String>,
    ) -> Self {
        Self {
            addr: addr.into(),
            svc_name: None,
            name: name.into(),
            token_file: token_file.into(),
            trust_anchors_pem: trust_anchors_pem.into(),
            dir: None,
            backoff: Backoff::default(),
            request_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// Exponential backoff bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

/// Why the identity cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is not a DNS name.
    #[error("identity name {0:?} is not a dns name")]
    Name(String),
    /// The trust anchors are not PEM certificates.
    #[error("trust anchors are not a pem certificate bundle")]
    TrustAnchors,
    /// A trust anchor is not a usable root.
    #[error("trust anchor #{index} is not a usable root certificate")]
    TrustAnchor {
        /// Its position in the bundle, from 0.
        index: usize,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The identity service address is not a URI.
    #[error("identity service address {0:?} is not a uri")]
    Addr(String),
    /// Key or CSR generation failed.
    #[error("cannot generate the identity key or csr")]
    Key(#[source] rcgen::Error),
    /// The key cannot be used by rustls.
    #[error("cannot load the identity key into rustls")]
    RustlsKey(#[source] rustls::Error),
    /// The client-certificate verifier cannot be built.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The in-memory identity directory cannot be written.
    #[error("cannot write {path}")]
    Dir {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
