//! The certificate authority: a loaded issuer that signs workload leaves.

mod csr;

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use smi_crds::mesh::WorkloadIdentity;

pub use self::csr::{CsrError, check_csr};
use crate::pki::{self, IssuerInfo, PkiError};

/// How leaves are cut.
#[derive(Clone, Debug)]
pub struct LeafPolicy {
    /// A leaf's lifetime from the moment it is signed (24 h by default).
    pub lifetime: Duration,
    /// How far `not_before` is backdated, for peers whose clocks run behind (20 s).
    pub clock_skew: Duration,
}

impl Default for LeafPolicy {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(24 * 3600),
            clock_skew: Duration::from_secs(20),
        }
    }
}

/// A signed leaf, ready to be returned to a proxy.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The leaf certificate (DER).
    pub der: CertificateDer<'static>,
    /// The certificates between the leaf and a trust anchor, leaf-side first (DER).
    pub intermediates: Vec<CertificateDer<'static>>,
    /// When the leaf expires.
    pub valid_until: SystemTime,
}

/// Why a leaf cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CSR is unacceptable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The issuer is outside its validity period.
    #[error("issuer {subject} is not valid at this time")]
    IssuerNotValid {
        /// The issuer's subject.
        subject: String,
    },
    /// rcgen failed to sign.
    #[error("could not sign a leaf for {identity}")]
    Sign {
        /// The identity being signed.
        identity: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
}

/// A loaded, checked issuer.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
    info: IssuerInfo,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads an issuer from PEM after [`pki::check`]ing it against the anchors at `now`.
    pub fn load(
        anchors_pem: &str,
        issuer_cert_pem: &str,
        issuer_key_pem: &str,
        now: SystemTime,
    ) -> Result<Self, PkiError> {
        let info = pki::check(anchors_pem, issuer_cert_pem, issuer_key_pem, now)?;
        let chain = pki::parse_pem_certs(issuer_cert_pem, "issuer certificate")?;
        let key = pki::load_issuer_key(issuer_key_pem)?;
        let issuer =
            Issuer::from_ca_cert_der(&chain[0], key).map_err(|source| PkiError::Generate {
                what: "issuer from the issuer certificate",
                source,
            })?;
        Ok(Self {
            issuer,
            chain,
            info,
        })
    }

    /// What the load-time check learnt about the issuer.
    pub fn info(&self) -> &IssuerInfo {
        &self.info
    }

    /// Whether the issuer may sign at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.info.issuer_not_before <= now && now <= self.info.issuer_not_after
    }

    /// Signs a leaf for `identity` from a DER CSR at time `now`.
    ///
    /// The leaf carries the identity's DNS name and SPIFFE URI as SANs, is valid from
    /// `now - clock_skew` for `lifetime`, and never outlives the issuer.
    pub fn sign(
        &self,
        identity: &WorkloadIdentity,
        csr_der: &[u8],
        policy: &LeafPolicy,
        now: SystemTime,
    ) -> Result<Leaf, SignError> {
        let key = check_csr(csr_der, &identity.dns_name())?;
        self.sign_key(identity, &key, policy, now)
    }

    /// Signs a leaf for `identity` over a public key already taken from a checked CSR
    /// (see [`check_csr`]), or over the service's own key.
    pub fn sign_key(
        &self,
        identity: &WorkloadIdentity,
        key: &impl PublicKeyData,
        policy: &LeafPolicy,
        now: SystemTime,
    ) -> Result<Leaf, SignError> {
        let dns = identity.dns_name();
        if !self.is_valid_at(now) {
            return Err(SignError::IssuerNotValid {
                subject: self.info.issuer_subject.clone(),
            });
        }
        let sign_err = |source| SignError::Sign {
            identity: dns.clone(),
            source,
        };
        let valid_until = (now + policy.lifetime).min(self.info.issuer_not_after);
        let not_before = now
            .checked_sub(policy.clock_skew)
            .unwrap_or(now)
            .max(self.info.issuer_not_before);

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![
            SanType::DnsName(dns.clone().try_into().map_err(sign_err)?),
            SanType::URI(identity.spiffe_id().try_into().map_err(sign_err)?),
        ];
        params.not_before = not_before.into();
        params.not_after = valid_until.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(pki::random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(key, &self.issuer).map_err(sign_err)?;

        Ok(Leaf {
            der: cert.der().clone(),
            intermediates: self.chain.clone(),
            // X.509 keeps whole seconds; report what the certificate says.
            valid_until: truncate_to_secs(valid_until),
        })
    }
}

fn truncate_to_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

#[cfg(test)]
mod tests;
