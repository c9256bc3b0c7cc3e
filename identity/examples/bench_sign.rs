//! Signing throughput of the CA on one thread.
//!
//! Run with `cargo run --release -p identity --example bench_sign [seconds]`.
//!
//! It reports, in one run: the baseline (one bare ECDSA P-256 signature with ring),
//! CSR checking alone, and the full path the Certify RPC takes per request (check the
//! CSR, build and sign the leaf), each in operations per second, and the ratio of the
//! full path to the baseline.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use identity::ca::{Ca, LeafPolicy, check_csr};
use identity::pki::{self, PkiParams};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use smi_crds::mesh::WorkloadIdentity;

fn rate(window: Duration, mut op: impl FnMut()) -> f64 {
    // Warm up, then count whole operations in the window.
    for _ in 0..50 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        for _ in 0..50 {
            op();
        }
        n += 50;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let window = Duration::from_secs(secs);
    let now = SystemTime::now();
    let generated = pki::generate(&PkiParams::default()).unwrap();
    let ca = Ca::load(
        &generated.trust_anchor_pem,
        &generated.issuer_cert_pem,
        &generated.issuer_key_pem,
        now,
    )
    .unwrap();
    let id = WorkloadIdentity::new("shop", "web");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::new(vec![id.dns_name()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let policy = LeafPolicy::default();

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let raw =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let msg = [7u8; 400];
    let baseline = rate(window, || {
        std::hint::black_box(raw.sign(&rng, &msg).unwrap());
    });
    let checks = rate(window, || {
        std::hint::black_box(check_csr(&csr, &id.dns_name()).unwrap());
    });
    let signs = rate(window, || {
        std::hint::black_box(ca.sign(&id, &csr, &policy, now).unwrap());
    });
    println!("one thread, {secs} s per measurement");
    println!("baseline  ring ECDSA P-256 sign    {baseline:>10.0} /s");
    println!("csr check (parse + verify)         {checks:>10.0} /s");
    println!("certify   (csr check + sign leaf)  {signs:>10.0} certs/s");
    println!(
        "ratio     certify / baseline       {:>10.3}",
        signs / baseline
    );
}
