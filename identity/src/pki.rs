//! The mesh's public-key infrastructure: generating a trust anchor and an issuer, and
//! checking that an (anchors, issuer certificate, issuer key) triple is usable.
//!
//! A trust anchor (self-signed root) signs an issuer (intermediate, path length 0), and
//! the issuer signs workload leaves. Every key is ECDSA P-256, generated with ring.
//!
//! `mesh install` calls [`generate`]; `mesh check` and the identity service call
//! [`check`]; the injector records [`trust_anchors_digest`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use smi_crds::mesh::{DEFAULT_CONTROL_PLANE_NS, DEFAULT_TRUST_DOMAIN};
use x509_parser::certificate::X509Certificate;

/// The trust anchor's default lifetime: ten years.
pub const DEFAULT_ANCHOR_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The issuer's default lifetime: one year.
pub const DEFAULT_ISSUER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The OID of an elliptic-curve public key (`id-ecPublicKey`).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// The OID of the P-256 curve (`prime256v1`).
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// What to generate: names and lifetimes of the trust anchor and the issuer.
#[derive(Clone, Debug)]
pub struct PkiParams {
    /// The trust domain, e.g. `cluster.local`; it names the certificates.
    pub trust_domain: String,
    /// The control-plane namespace, e.g. `linkerd-lite`; it names the certificates.
    pub control_plane_ns: String,
    /// How long the trust anchor is valid.
    pub anchor_validity: Duration,
    /// How long the issuer is valid (capped by the anchor's lifetime).
    pub issuer_validity: Duration,
    /// When both certificates start being valid, usually now.
    pub not_before: SystemTime,
}

impl Default for PkiParams {
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            control_plane_ns: DEFAULT_CONTROL_PLANE_NS.to_string(),
            anchor_validity: DEFAULT_ANCHOR_VALIDITY,
            issuer_validity: DEFAULT_ISSUER_VALIDITY,
            not_before: SystemTime::now(),
        }
    }
}

impl PkiParams {
    /// The trust anchor's common name, `root.{control-plane-ns}.{trust-domain}`.
    pub fn anchor_name(&self) -> String {
        format!("root.{}.{}", self.control_plane_ns, self.trust_domain)
    }

    /// The issuer's common name, `identity.{control-plane-ns}.{trust-domain}`.
    pub fn issuer_name(&self) -> String {
        format!("identity.{}.{}", self.control_plane_ns, self.trust_domain)
    }
}

/// A freshly generated trust anchor and issuer, as PEM.
#[derive(Clone)]
pub struct GeneratedPki {
    /// The trust anchor certificate; this is the bundle every proxy trusts.
    pub trust_anchor_pem: String,
    /// The trust anchor's private key (PKCS#8). Keep it offline: it is only needed to
    /// sign the next issuer ([`generate_issuer`]).
    pub trust_anchor_key_pem: String,
    /// The issuer certificate, signed by the trust anchor.
    pub issuer_cert_pem: String,
    /// The issuer's private key (PKCS#8), read by the identity service.
    pub issuer_key_pem: String,
}

impl std::fmt::Debug for GeneratedPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Private keys stay out of logs.
        f.debug_struct("GeneratedPki")
            .field("trust_anchor_pem", &self.trust_anchor_pem)
            .field("issuer_cert_pem", &self.issuer_cert_pem)
            .finish_non_exhaustive()
    }
}

/// A new issuer certificate and key, as PEM.
#[derive(Clone)]
pub struct GeneratedIssuer {
    /// The issuer certificate.
    pub cert_pem: String,
    /// The issuer's private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedIssuer")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// What [`check`] learnt about a usable issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerInfo {
    /// The issuer's subject, e.g. `CN=identity.linkerd-lite.cluster.local`.
    pub issuer_subject: String,
    /// When the issuer became valid.
    pub issuer_not_before: SystemTime,
    /// When the issuer expires.
    pub issuer_not_after: SystemTime,
    /// Every anchor in the bundle, in bundle order.
    pub anchors: Vec<AnchorInfo>,
    /// The index in [`IssuerInfo::anchors`] of the anchor that signed the issuer.
    pub signed_by: usize,
}

/// One trust anchor of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorInfo {
    /// The anchor's subject.
    pub subject: String,
    /// When the anchor expires.
    pub not_after: SystemTime,
}

/// Why PKI material cannot be generated or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A PEM input holds no certificate, or one that does not parse.
    #[error("{what} is not a PEM certificate bundle")]
    CertPem {
        /// Which input: `trust anchor bundle` or `issuer certificate`.
        what: &'static str,
    },
    /// A certificate is not valid X.509.
    #[error("{what} certificate #{index} is not valid x.509")]
    CertDer {
        /// Which input.
        what: &'static str,
        /// Its position in the PEM input, from 0.
        index: usize,
    },
    /// The issuer key is not an ECDSA P-256 private key in PEM (PKCS#8 or SEC1).
    #[error("issuer key is not a PEM ECDSA P-256 private key (PKCS#8 or SEC1)")]
    IssuerKey,
    /// The issuer's public key is not ECDSA P-256.
    #[error("issuer certificate does not hold an ECDSA P-256 key")]
    IssuerKeyType,
    /// The issuer certificate is not a CA (basic constraints).
    #[error("issuer certificate {subject} is not a CA certificate")]
    IssuerNotCa {
        /// The issuer's subject.
        subject: String,
    },
    /// No anchor in the bundle signed the issuer.
    #[error("issuer certificate {subject} (issued by {issuer}) is not signed by any trust anchor")]
    NotSignedByAnchor {
        /// The issuer's subject.
        subject: String,
        /// The issuer's issuer name.
        issuer: String,
    },
    /// The issuer is not yet valid.
    #[error("issuer certificate {subject} is not valid before {}", humantime::format_rfc3339(*.not_before))]
    IssuerNotYetValid {
        /// The issuer's subject.
        subject: String,
        /// When it becomes valid.
        not_before: SystemTime,
    },
    /// The issuer has expired.
    #[error("issuer certificate {subject} expired at {}", humantime::format_rfc3339(*.not_after))]
    IssuerExpired {
        /// The issuer's subject.
        subject: String,
        /// When it expired.
        not_after: SystemTime,
    },
    /// The anchor that signed the issuer has expired.
    #[error("trust anchor {subject} expired at {}", humantime::format_rfc3339(*.not_after))]
    AnchorExpired {
        /// The anchor's subject.
        subject: String,
        /// When it expired.
        not_after: SystemTime,
    },
    /// The issuer key does not belong to the issuer certificate.
    #[error("issuer key does not match the public key of issuer certificate {subject}")]
    KeyMismatch {
        /// The issuer's subject.
        subject: String,
    },
    /// rcgen could not build or sign a certificate.
    #[error("could not generate {what}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
}

// === generate ===

/// Generates a trust anchor and an issuer signed by it (ECDSA P-256), as PEM.
///
/// The anchor is valid for `params.anchor_validity` (10 years by default) and the issuer
/// for `params.issuer_validity` (1 year by default), both from `params.not_before`. The
/// issuer may sign only leaves (path length 0).
pub fn generate(params: &PkiParams) -> Result<GeneratedPki, PkiError> {
    let anchor_key = new_key("trust anchor key")?;
    let anchor_params = ca_params(
        params.anchor_name(),
        params.not_before,
        params.anchor_validity,
        BasicConstraints::Unconstrained,
    );
    let anchor_cert =
        anchor_params
            .self_signed(&anchor_key)
            .map_err(|source| PkiError::Generate {
                what: "trust anchor",
                source,
            })?;
    let anchor = Issuer::new(anchor_params, &anchor_key);
    let issuer = issue(&anchor, params, params.anchor_validity)?;
    Ok(GeneratedPki {
        trust_anchor_pem: anchor_cert.pem(),
        trust_anchor_key_pem: anchor_key.serialize_pem(),
        issuer_cert_pem: issuer.cert_pem,
        issuer_key_pem: issuer.key_pem,
    })
}

/// Generates a new issuer signed by an existing trust anchor (for issuer rotation).
///
/// `anchor_cert_pem` must hold the anchor's certificate and `anchor_key_pem` its PKCS#8
/// key. The issuer is named and timed from `params`, and never outlives the anchor.
pub fn generate_issuer(
    anchor_cert_pem: &str,
    anchor_key_pem: &str,
    params: &PkiParams,
) -> Result<GeneratedIssuer, PkiError> {
    let anchor_der = parse_pem_certs(anchor_cert_pem, "trust anchor")?
        .into_iter()
        .next()
        .ok_or(PkiError::CertPem {
            what: "trust anchor",
        })?;
    let anchor_x509 = parse_der(&anchor_der, "trust anchor", 0)?;
    let anchor_not_after = to_system_time(anchor_x509.validity().not_after.timestamp());
    let key = KeyPair::from_pem(anchor_key_pem).map_err(|source| PkiError::Generate {
        what: "issuer from the trust anchor key",
        source,
    })?;
    let anchor =
        Issuer::from_ca_cert_der(&anchor_der, &key).map_err(|source| PkiError::Generate {
            what: "issuer from the trust anchor certificate",
            source,
        })?;
    let anchor_left = anchor_not_after
        .duration_since(params.not_before)
        .unwrap_or_default();
    issue(&anchor, params, anchor_left)
}

fn issue(
    anchor: &Issuer<'_, &KeyPair>,
    params: &PkiParams,
    anchor_left: Duration,
) -> Result<GeneratedIssuer, PkiError> {
    let key = new_key("issuer key")?;
    let mut issuer_params = ca_params(
        params.issuer_name(),
        params.not_before,
        params.issuer_validity.min(anchor_left),
        BasicConstraints::Constrained(0),
    );
    issuer_params.use_authority_key_identifier_extension = true;
    let cert = issuer_params
        .signed_by(&key, anchor)
        .map_err(|source| PkiError::Generate {
            what: "issuer",
            source,
        })?;
    Ok(GeneratedIssuer {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn new_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| PkiError::Generate { what, source })
}

fn ca_params(
    common_name: String,
    not_before: SystemTime,
    validity: Duration,
    constraints: BasicConstraints,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = not_before.into();
    params.not_after = (not_before + validity).into();
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive INTEGER whose first octet is not zero keeps every encoder happy.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

// === check ===

/// Checks that an issuer can be used with a trust-anchor bundle at time `now`.
///
/// The issuer certificate must be a CA holding an ECDSA P-256 key, be signed by one of
/// the anchors in `anchors_pem` (one or more PEM certificates), be valid at `now`, and
/// `issuer_key_pem` (PKCS#8) must be its private key. The signing anchor must not have
/// expired. On success it returns the issuer's validity and every anchor's expiry, so
/// that callers can warn about certificates that expire soon.
pub fn check(
    anchors_pem: &str,
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    now: SystemTime,
) -> Result<IssuerInfo, PkiError> {
    let anchors_der = parse_pem_certs(anchors_pem, "trust anchor bundle")?;
    let anchors = anchors_der
        .iter()
        .enumerate()
        .map(|(i, der)| parse_der(der, "trust anchor bundle", i))
        .collect::<Result<Vec<_>, _>>()?;
    let issuer_der = parse_pem_certs(issuer_cert_pem, "issuer certificate")?;
    let issuer = parse_der(&issuer_der[0], "issuer certificate", 0)?;
    let subject = issuer.subject().to_string();

    if !issuer.is_ca() {
        return Err(PkiError::IssuerNotCa { subject });
    }
    if !is_p256(&issuer) {
        return Err(PkiError::IssuerKeyType);
    }
    let signed_by = anchors
        .iter()
        .position(|a| {
            a.subject() == issuer.issuer() && issuer.verify_signature(Some(a.public_key())).is_ok()
        })
        .ok_or_else(|| PkiError::NotSignedByAnchor {
            subject: subject.clone(),
            issuer: issuer.issuer().to_string(),
        })?;

    let not_before = to_system_time(issuer.validity().not_before.timestamp());
    let not_after = to_system_time(issuer.validity().not_after.timestamp());
    if now < not_before {
        return Err(PkiError::IssuerNotYetValid {
            subject,
            not_before,
        });
    }
    if now > not_after {
        return Err(PkiError::IssuerExpired { subject, not_after });
    }
    let anchor_infos: Vec<AnchorInfo> = anchors
        .iter()
        .map(|a| AnchorInfo {
            subject: a.subject().to_string(),
            not_after: to_system_time(a.validity().not_after.timestamp()),
        })
        .collect();
    let anchor = &anchor_infos[signed_by];
    if now > anchor.not_after {
        return Err(PkiError::AnchorExpired {
            subject: anchor.subject.clone(),
            not_after: anchor.not_after,
        });
    }

    let key = load_issuer_key(issuer_key_pem)?;
    if key.public_key_raw() != issuer.public_key().subject_public_key.data.as_ref() {
        return Err(PkiError::KeyMismatch { subject });
    }

    Ok(IssuerInfo {
        issuer_subject: subject,
        issuer_not_before: not_before,
        issuer_not_after: not_after,
        anchors: anchor_infos,
        signed_by,
    })
}

/// The SHA-256 digest, as lowercase hex, of a trust-anchor bundle.
///
/// The digest covers the DER bytes of every certificate in bundle order, so it does not
/// change when the PEM is re-wrapped or gains comments. The injector records it in the
/// `trust-anchor-sha256` annotation.
pub fn trust_anchors_digest(anchors_pem: &str) -> Result<String, PkiError> {
    let certs = parse_pem_certs(anchors_pem, "trust anchor bundle")?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for cert in &certs {
        ctx.update(cert.as_ref());
    }
    Ok(hex(ctx.finish().as_ref()))
}

/// Every certificate of a PEM bundle, as DER; at least one.
pub fn parse_pem_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PkiError::CertPem { what })?;
    if certs.is_empty() {
        return Err(PkiError::CertPem { what });
    }
    Ok(certs)
}

pub(crate) fn parse_der<'a>(
    der: &'a [u8],
    what: &'static str,
    index: usize,
) -> Result<X509Certificate<'a>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(PkiError::CertDer { what, index }),
    }
}

fn is_p256(cert: &X509Certificate<'_>) -> bool {
    let spki = cert.public_key();
    spki.algorithm.algorithm.to_id_string() == OID_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|oid| oid.to_id_string() == OID_P256)
}

/// Converts an X.509 UNIX timestamp to a `SystemTime`.
pub(crate) fn to_system_time(unix_secs: i64) -> SystemTime {
    match u64::try_from(unix_secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix_secs.unsigned_abs()),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

mod key;

pub(crate) use self::key::load_issuer_key;

#[cfg(test)]
mod tests;
