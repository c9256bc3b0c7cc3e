use super::key::der_tlv;
use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn params_at(not_before: SystemTime) -> PkiParams {
    PkiParams {
        not_before,
        ..PkiParams::default()
    }
}

#[test]
fn generated_pki_checks_and_reports_expiry() {
    let now = SystemTime::now();
    let pki = generate(&params_at(now)).unwrap();
    let info = check(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        &pki.issuer_key_pem,
        now + DAY,
    )
    .unwrap();
    assert_eq!(
        info.issuer_subject,
        "CN=identity.linkerd-lite.cluster.local"
    );
    assert_eq!(info.signed_by, 0);
    assert_eq!(info.anchors.len(), 1);
    assert_eq!(
        info.anchors[0].subject,
        "CN=root.linkerd-lite.cluster.local"
    );
    // X.509 times have a one-second resolution.
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(info.issuer_not_before), secs(now));
    assert_eq!(
        secs(info.issuer_not_after),
        secs(now + DEFAULT_ISSUER_VALIDITY)
    );
    assert_eq!(
        secs(info.anchors[0].not_after),
        secs(now + DEFAULT_ANCHOR_VALIDITY)
    );
}

#[test]
fn trust_domain_names_the_certificates() {
    let params = PkiParams {
        trust_domain: "example.org".into(),
        control_plane_ns: "mesh".into(),
        ..PkiParams::default()
    };
    let pki = generate(&params).unwrap();
    let info = check(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        &pki.issuer_key_pem,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(info.issuer_subject, "CN=identity.mesh.example.org");
    assert_eq!(info.anchors[0].subject, "CN=root.mesh.example.org");
}

#[test]
fn check_rejects_an_issuer_from_another_anchor() {
    let a = generate(&PkiParams::default()).unwrap();
    let b = generate(&PkiParams::default()).unwrap();
    let err = check(
        &a.trust_anchor_pem,
        &b.issuer_cert_pem,
        &b.issuer_key_pem,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::NotSignedByAnchor { .. }), "{err}");
    assert!(err.to_string().contains("not signed by any trust anchor"));

    // With both anchors in the bundle, the second one is found.
    let bundle = format!("{}{}", a.trust_anchor_pem, b.trust_anchor_pem);
    let info = check(
        &bundle,
        &b.issuer_cert_pem,
        &b.issuer_key_pem,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(info.signed_by, 1);
    assert_eq!(info.anchors.len(), 2);
}

#[test]
fn check_rejects_expired_and_future_issuers() {
    let now = SystemTime::now();
    let pki = generate(&params_at(now)).unwrap();
    let later = now + DEFAULT_ISSUER_VALIDITY + DAY;
    let err = check(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        &pki.issuer_key_pem,
        later,
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::IssuerExpired { .. }), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");

    let err = check(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        &pki.issuer_key_pem,
        now - DAY,
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::IssuerNotYetValid { .. }), "{err}");
}

#[test]
fn check_rejects_a_key_of_another_issuer() {
    let a = generate(&PkiParams::default()).unwrap();
    let b = generate(&PkiParams::default()).unwrap();
    let err = check(
        &a.trust_anchor_pem,
        &a.issuer_cert_pem,
        &b.issuer_key_pem,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
}

#[test]
fn check_rejects_garbage() {
    let pki = generate(&PkiParams::default()).unwrap();
    let now = SystemTime::now();
    let err = check("not pem", &pki.issuer_cert_pem, &pki.issuer_key_pem, now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust anchor bundle is not a PEM certificate bundle"
    );

    let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = check(&pki.trust_anchor_pem, broken, &pki.issuer_key_pem, now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "issuer certificate certificate #0 is not valid x.509"
    );

    let err = check(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        now,
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::IssuerKey), "{err}");
}

#[test]
fn check_rejects_a_leaf_used_as_issuer() {
    let pki = generate(&PkiParams::default()).unwrap();
    let anchor_key = KeyPair::from_pem(&pki.trust_anchor_key_pem).unwrap();
    let anchor = Issuer::from_ca_cert_pem(&pki.trust_anchor_pem, &anchor_key).unwrap();
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["leaf.example".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &anchor)
        .unwrap();
    let err = check(
        &pki.trust_anchor_pem,
        &leaf.pem(),
        &leaf_key.serialize_pem(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::IssuerNotCa { .. }), "{err}");
}

#[test]
fn check_rejects_a_non_p256_issuer() {
    let pki = generate(&PkiParams::default()).unwrap();
    let anchor_key = KeyPair::from_pem(&pki.trust_anchor_key_pem).unwrap();
    let anchor = Issuer::from_ca_cert_pem(&pki.trust_anchor_pem, &anchor_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let cert = params.signed_by(&key, &anchor).unwrap();
    let err = check(
        &pki.trust_anchor_pem,
        &cert.pem(),
        &key.serialize_pem(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::IssuerKeyType), "{err}");
}

#[test]
fn rotated_issuer_chains_to_the_same_anchor() {
    let pki = generate(&PkiParams::default()).unwrap();
    let next = generate_issuer(
        &pki.trust_anchor_pem,
        &pki.trust_anchor_key_pem,
        &PkiParams::default(),
    )
    .unwrap();
    assert_ne!(next.cert_pem, pki.issuer_cert_pem);
    check(
        &pki.trust_anchor_pem,
        &next.cert_pem,
        &next.key_pem,
        SystemTime::now(),
    )
    .unwrap();
}

#[test]
fn issuer_never_outlives_its_anchor() {
    let now = SystemTime::now();
    let params = PkiParams {
        anchor_validity: DAY,
        issuer_validity: 10 * DAY,
        not_before: now,
        ..PkiParams::default()
    };
    let pki = generate(&params).unwrap();
    let info = check(
        &pki.trust_anchor_pem,
        &pki.issuer_cert_pem,
        &pki.issuer_key_pem,
        now,
    )
    .unwrap();
    assert_eq!(info.issuer_not_after, info.anchors[0].not_after);
}

#[test]
fn digest_covers_the_der_not_the_pem_layout() {
    let a = generate(&PkiParams::default()).unwrap();
    let b = generate(&PkiParams::default()).unwrap();
    let d = trust_anchors_digest(&a.trust_anchor_pem).unwrap();
    assert_eq!(d.len(), 64);
    assert!(
        d.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let commented = format!(
        "# our root\n\n{}\n\n",
        a.trust_anchor_pem.replace('\n', "\r\n")
    );
    assert_eq!(trust_anchors_digest(&commented).unwrap(), d);
    assert_ne!(trust_anchors_digest(&b.trust_anchor_pem).unwrap(), d);
    let both = format!("{}{}", a.trust_anchor_pem, b.trust_anchor_pem);
    assert_ne!(trust_anchors_digest(&both).unwrap(), d);
    assert!(trust_anchors_digest("").is_err());
}

#[test]
fn digest_is_sha256_of_the_der() {
    let a = generate(&PkiParams::default()).unwrap();
    let der = parse_pem_certs(&a.trust_anchor_pem, "test").unwrap();
    // A known answer: SHA-256("abc").
    assert_eq!(
        hex(ring::digest::digest(&ring::digest::SHA256, b"abc").as_ref()),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        trust_anchors_digest(&a.trust_anchor_pem).unwrap(),
        hex(ring::digest::digest(&ring::digest::SHA256, &der[0]).as_ref())
    );
}

#[test]
fn sec1_issuer_keys_load_like_pkcs8_ones() {
    // An `EC PRIVATE KEY` from `openssl ecparam -name prime256v1 -genkey -noout`.
    let sec1 = include_str!("../../tests/fixtures/sec1-p256.key");
    let key = load_issuer_key(sec1).unwrap();
    // Sign an issuer for that key with a generated anchor, and check the triple.
    let pki = generate(&PkiParams::default()).unwrap();
    let anchor_key = KeyPair::from_pem(&pki.trust_anchor_key_pem).unwrap();
    let anchor = Issuer::from_ca_cert_pem(&pki.trust_anchor_pem, &anchor_key).unwrap();
    let now = SystemTime::now();
    let params = ca_params("issuer".into(), now, DAY, BasicConstraints::Constrained(0));
    let cert = params.signed_by(&key, &anchor).unwrap();
    check(&pki.trust_anchor_pem, &cert.pem(), sec1, now).unwrap();
    // The PKCS#8 form of the same key is the same key.
    let again = load_issuer_key(&key.serialize_pem()).unwrap();
    assert_eq!(again.public_key_raw(), key.public_key_raw());
}

#[test]
fn other_curves_and_key_types_are_refused() {
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    assert!(matches!(
        load_issuer_key(&p384.serialize_pem()),
        Err(PkiError::IssuerKey)
    ));
    let cert_pem = generate(&PkiParams::default()).unwrap().issuer_cert_pem;
    assert!(matches!(
        load_issuer_key(&cert_pem),
        Err(PkiError::IssuerKey)
    ));
}

#[test]
fn der_lengths_use_the_long_form_past_127() {
    let mut out = Vec::new();
    der_tlv(0x04, &[0; 5], &mut out);
    assert_eq!(out[..2], [0x04, 5]);
    let mut out = Vec::new();
    der_tlv(0x04, &[0; 200], &mut out);
    assert_eq!(out[..3], [0x04, 0x81, 200]);
    let mut out = Vec::new();
    der_tlv(0x30, &[0; 300], &mut out);
    assert_eq!(out[..4], [0x30, 0x82, 0x01, 0x2c]);
}
