//! Loading the issuer's private key.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::PkiError;

/// Loads an ECDSA P-256 private key from PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1
/// (`BEGIN EC PRIVATE KEY`, as cert-manager and `openssl ecparam` write it).
pub(crate) fn load_issuer_key(pem: &str) -> Result<KeyPair, PkiError> {
    let pkcs8 = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(key)) => key.secret_pkcs8_der().to_vec(),
        Ok(PrivateKeyDer::Sec1(key)) => sec1_to_pkcs8(key.secret_sec1_der()),
        _ => return Err(PkiError::IssuerKey),
    };
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ECDSA_P256_SHA256)
        .map_err(|_| PkiError::IssuerKey)
}

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo` for P-256 (RFC 5915 §2,
/// RFC 5208 §5), the only form ring loads. ring checks the curve inside.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID id-ecPublicKey, OID prime256v1 }
    const ALGORITHM: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut body = vec![0x02, 0x01, 0x00]; // INTEGER 0 (version)
    body.extend_from_slice(ALGORITHM);
    der_tlv(0x04, sec1, &mut body); // OCTET STRING
    let mut out = Vec::with_capacity(body.len() + 4);
    der_tlv(0x30, &body, &mut out);
    out
}

pub(super) fn der_tlv(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}
