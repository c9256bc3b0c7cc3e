//! Checking a certificate signing request before it is signed.

use rcgen::SubjectPublicKeyInfo;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The OID of an elliptic-curve public key (`id-ecPublicKey`).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// The OID of the P-256 curve (`prime256v1`).
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// Why a CSR is refused. Each maps to gRPC `InvalidArgument` with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    /// The bytes are not a DER PKCS#10 request.
    #[error("certificate_signing_request is not a DER PKCS#10 request")]
    Malformed,
    /// The request's self-signature does not verify.
    #[error("certificate_signing_request signature does not verify")]
    BadSignature,
    /// The key is not ECDSA P-256.
    #[error("certificate_signing_request key is not ECDSA P-256")]
    KeyType,
    /// The request's DNS SANs are not exactly the requested identity.
    #[error("certificate_signing_request DNS SAN {found:?} does not match identity {identity:?}")]
    IdentityMismatch {
        /// The identity asked for.
        identity: String,
        /// The DNS names in the request.
        found: Vec<String>,
    },
}

/// Checks a DER CSR for `identity` and returns its public key.
///
/// The CSR must parse completely, carry a valid self-signature, hold an ECDSA P-256
/// key, and name `identity` as its only DNS SAN. Its other fields are ignored: the CA
/// decides the leaf's contents.
pub fn check_csr(der: &[u8], identity: &str) -> Result<SubjectPublicKeyInfo, CsrError> {
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        _ => return Err(CsrError::Malformed),
    };
    let spki = &csr.certification_request_info.subject_pki;
    let is_p256 = spki.algorithm.algorithm.to_id_string() == OID_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|oid| oid.to_id_string() == OID_P256);
    if !is_p256 {
        return Err(CsrError::KeyType);
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let found: Vec<String> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|ext| match ext {
            ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
            _ => None,
        })
        .flatten()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect();
    if found.len() != 1 || found[0] != identity {
        return Err(CsrError::IdentityMismatch {
            identity: identity.to_string(),
            found,
        });
    }
    SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| CsrError::KeyType)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};

    const ID: &str = "web.shop.serviceaccount.identity.linkerd-lite.cluster.local";

    fn csr(names: &[&str], key: &KeyPair) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        CertificateParams::new(names)
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn accepts_a_p256_request_for_the_identity() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = check_csr(&csr(&[ID], &key), ID).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(spki.der_bytes(), key.public_key_raw());
    }

    #[test]
    fn rejects_other_names() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let other = "api.shop.serviceaccount.identity.linkerd-lite.cluster.local";
        for names in [&[other][..], &[][..], &[ID, other][..]] {
            let err = check_csr(&csr(names, &key), ID).unwrap_err();
            assert!(
                matches!(err, CsrError::IdentityMismatch { .. }),
                "{names:?}"
            );
        }
    }

    #[test]
    fn rejects_other_curves() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(check_csr(&csr(&[ID], &key), ID), Err(CsrError::KeyType));
    }

    #[test]
    fn rejects_garbage_truncation_and_tampering() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let good = csr(&[ID], &key);
        assert_eq!(check_csr(&[], ID), Err(CsrError::Malformed));
        assert_eq!(check_csr(b"\x30\x82garbage", ID), Err(CsrError::Malformed));
        for len in [1, 10, good.len() / 2, good.len() - 1] {
            assert!(check_csr(&good[..len], ID).is_err(), "truncated to {len}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(check_csr(&trailing, ID), Err(CsrError::Malformed));
        // Flip a byte inside the DNS name: the structure parses, the signature fails.
        let at = good
            .windows(ID.len())
            .position(|w| w == ID.as_bytes())
            .unwrap();
        let mut tampered = good.clone();
        tampered[at] ^= 0x01;
        assert_eq!(check_csr(&tampered, ID), Err(CsrError::BadSignature));
        // Every single-byte corruption is refused, without a panic.
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0xff;
            assert!(check_csr(&bytes, ID).is_err(), "byte {i} flipped");
        }
    }
}
