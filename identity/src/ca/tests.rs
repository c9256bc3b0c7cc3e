use super::*;
use crate::pki::{PkiParams, generate};
use rcgen::PKCS_ECDSA_P256_SHA256;
use rustls_pki_types::UnixTime;
use std::time::UNIX_EPOCH;

fn setup() -> (pki::GeneratedPki, Ca) {
    let pki = generate(&PkiParams::default()).unwrap();
    let ca = Ca::load(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        &pki.issuer_key_pem,
        SystemTime::now(),
    )
    .unwrap();
    (pki, ca)
}

fn csr_for(id: &WorkloadIdentity) -> Vec<u8> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    CertificateParams::new(vec![id.dns_name()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn verify(anchor_pem: &str, leaf: &Leaf, name: &str, at: SystemTime) -> Result<(), webpki::Error> {
    let anchor_der = pki::parse_pem_certs(anchor_pem, "anchor").unwrap();
    let anchors = vec![webpki::anchor_from_trusted_cert(&anchor_der[0]).unwrap()];
    let ee = webpki::EndEntityCert::try_from(&leaf.der).unwrap();
    let time = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap());
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &leaf.intermediates,
            time,
            usage,
            None,
            None,
        )?;
    }
    let name = rustls_pki_types::ServerName::try_from(name).unwrap();
    ee.verify_is_valid_for_subject_name(&name)
}

#[test]
fn signed_leaf_chains_to_the_anchor_for_the_identity() {
    let (pki, ca) = setup();
    let id = WorkloadIdentity::new("shop", "web");
    let now = SystemTime::now();
    let leaf = ca
        .sign(&id, &csr_for(&id), &LeafPolicy::default(), now)
        .unwrap();
    verify(&pki.trust_anchor_pem, &leaf, &id.dns_name(), now).unwrap();
    // Valid for another identity? No.
    let other = WorkloadIdentity::new("shop", "api").dns_name();
    assert!(verify(&pki.trust_anchor_pem, &leaf, &other, now).is_err());
    // Not from another anchor.
    let stranger = generate(&PkiParams::default()).unwrap();
    assert!(verify(&stranger.trust_anchor_pem, &leaf, &id.dns_name(), now).is_err());

    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        sans,
        [
            format!("DNSName({})", id.dns_name()),
            "URI(spiffe://cluster.local/ns/shop/sa/web)".to_string()
        ]
    );
}

#[test]
fn leaf_is_backdated_and_lives_for_the_policy_lifetime() {
    let (_, ca) = setup();
    let id = WorkloadIdentity::new("shop", "web");
    let now = UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let policy = LeafPolicy {
        lifetime: Duration::from_secs(60),
        clock_skew: Duration::from_secs(20),
    };
    let leaf = ca.sign(&id, &csr_for(&id), &policy, now).unwrap();
    assert_eq!(leaf.valid_until, now + Duration::from_secs(60));
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
    let nb = pki::to_system_time(cert.validity().not_before.timestamp());
    let na = pki::to_system_time(cert.validity().not_after.timestamp());
    assert_eq!(na, leaf.valid_until);
    // Backdated by the skew, but never before the issuer itself.
    let expected_nb = (now - Duration::from_secs(20)).max(ca.info().issuer_not_before);
    assert_eq!(nb, expected_nb);
}

#[test]
fn leaf_never_outlives_the_issuer() {
    let now = SystemTime::now();
    let pki = generate(&PkiParams {
        issuer_validity: Duration::from_secs(3600),
        ..PkiParams::default()
    })
    .unwrap();
    let ca = Ca::load(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        &pki.issuer_key_pem,
        now,
    )
    .unwrap();
    let id = WorkloadIdentity::new("shop", "web");
    let leaf = ca
        .sign(&id, &csr_for(&id), &LeafPolicy::default(), now)
        .unwrap();
    assert_eq!(leaf.valid_until, ca.info().issuer_not_after);
}

#[test]
fn expired_issuer_refuses_to_sign() {
    let (_, ca) = setup();
    let id = WorkloadIdentity::new("shop", "web");
    let later = ca.info().issuer_not_after + Duration::from_secs(1);
    let err = ca
        .sign(&id, &csr_for(&id), &LeafPolicy::default(), later)
        .unwrap_err();
    assert!(matches!(err, SignError::IssuerNotValid { .. }), "{err}");
}

#[test]
fn csr_for_another_identity_is_refused() {
    let (_, ca) = setup();
    let id = WorkloadIdentity::new("shop", "web");
    let other = WorkloadIdentity::new("shop", "api");
    let err = ca
        .sign(
            &id,
            &csr_for(&other),
            &LeafPolicy::default(),
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(
        matches!(err, SignError::Csr(CsrError::IdentityMismatch { .. })),
        "{err}"
    );
}
