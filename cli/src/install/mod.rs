//! What `mesh install` renders: the SMI CRDs, or the control plane with its trust anchor
//! and issuer.
//!
//! The output is deterministic for given values and identity material; only generated
//! keys differ between runs.

mod render;
mod values;

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

pub use render::{CONTROLLER_UID, objects};
pub use values::{Component, Image, Proxy, Resources, Values, ValuesError};

/// The trust anchor bundle and the issuer the identity service signs with.
#[derive(Clone)]
pub struct IdentityMaterial {
    /// PEM trust-anchor bundle.
    pub trust_anchors_pem: String,
    /// PEM issuer certificate.
    pub issuer_cert_pem: String,
    /// PEM PKCS#8 issuer key.
    pub issuer_key_pem: String,
}

impl std::fmt::Debug for IdentityMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("IdentityMaterial")
            .field("trust_anchors_pem", &self.trust_anchors_pem)
            .field("issuer_cert_pem", &self.issuer_cert_pem)
            .finish_non_exhaustive()
    }
}

/// Why identity material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Only some of the three files were given.
    #[error(
        "--identity-trust-anchors-file, --identity-issuer-certificate-file and \
         --identity-issuer-key-file must be given together (missing: {0})"
    )]
    Incomplete(String),
    /// A file could not be read.
    #[error("cannot read {flag} {path}")]
    Read {
        /// Which flag named it.
        flag: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The triple does not form a usable issuer.
    #[error("the given trust anchors and issuer cannot be used")]
    Invalid(#[source] identity::pki::PkiError),
    /// Generation failed.
    #[error("cannot generate a trust anchor and issuer")]
    Generate(#[source] identity::pki::PkiError),
}

impl IdentityMaterial {
    /// Reads the three files (all or none); with none, generates a fresh ECDSA P-256
    /// trust anchor and issuer. Given files are checked: the issuer must chain to an
    /// anchor, match its key, and be valid now.
    pub fn load_or_generate(
        anchors: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        trust_domain: &str,
        control_plane_ns: &str,
    ) -> Result<Self, IdentityError> {
        const FLAGS: [&str; 3] = [
            "--identity-trust-anchors-file",
            "--identity-issuer-certificate-file",
            "--identity-issuer-key-file",
        ];
        let given = [anchors, cert, key];
        if given.iter().all(Option::is_none) {
            let params = identity::pki::PkiParams {
                trust_domain: trust_domain.to_string(),
                control_plane_ns: control_plane_ns.to_string(),
                ..identity::pki::PkiParams::default()
            };
            let pki = identity::pki::generate(&params).map_err(IdentityError::Generate)?;
            return Ok(Self {
                trust_anchors_pem: pki.trust_anchor_pem,
                issuer_cert_pem: pki.issuer_cert_pem,
                issuer_key_pem: pki.issuer_key_pem,
            });
        }
        let missing: Vec<&str> = given
            .iter()
            .zip(FLAGS)
            .filter(|(p, _)| p.is_none())
            .map(|(_, f)| f)
            .collect();
        let ([Some(a), Some(c), Some(k)], true) = (given, missing.is_empty()) else {
            return Err(IdentityError::Incomplete(missing.join(", ")));
        };
        let read = |flag: &'static str, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
                flag,
                path: path.display().to_string(),
                source,
            })
        };
        let me = Self {
            trust_anchors_pem: read(FLAGS[0], a)?,
            issuer_cert_pem: read(FLAGS[1], c)?,
            issuer_key_pem: read(FLAGS[2], k)?,
        };
        identity::pki::check(
            &me.trust_anchors_pem,
            &me.issuer_cert_pem,
            &me.issuer_key_pem,
            SystemTime::now(),
        )
        .map_err(IdentityError::Invalid)?;
        Ok(me)
    }
}

/// The control plane as a list of objects, after validating the values.
pub fn control_plane(
    ns: &str,
    values: &Values,
    identity: &IdentityMaterial,
) -> Result<Vec<Value>, ValuesError> {
    values.validate()?;
    Ok(objects(ns, values, identity))
}
