//! TLS on the gRPC port: the service's own certificate, plaintext sharing the port,
//! and re-issuing after an issuer rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use identity::pki::{self, PkiParams};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SERVICE: &str =
    "linkerd-lite-identity.linkerd-lite.serviceaccount.identity.linkerd-lite.cluster.local";

/// The chain the service presents to a TLS client that trusts `anchors_pem`.
async fn served_chain(
    addr: SocketAddr,
    anchors_pem: &str,
) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::parse_pem_certs(anchors_pem, "anchors").unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVICE).unwrap(), tcp)
        .await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect())
}

#[tokio::test]
async fn presents_its_own_identity_and_reissues_after_rotation() {
    let f = files();
    let svc = start(config(&f), identity::system_clock()).await;
    let chain = served_chain(svc.grpc, &f.pki.trust_anchor_pem)
        .await
        .unwrap();
    assert_eq!(
        issuer_of(&chain[0]),
        "CN=identity.linkerd-lite.cluster.local"
    );
    assert_eq!(chain.len(), 2);

    // Clients that trust another anchor refuse it.
    let other = pki::generate(&PkiParams::default()).unwrap();
    assert!(
        served_chain(svc.grpc, &other.trust_anchor_pem)
            .await
            .is_err()
    );

    let next = pki::generate_issuer(
        &f.pki.trust_anchor_pem,
        &f.pki.trust_anchor_key_pem,
        &PkiParams {
            control_plane_ns: "rotated".into(),
            ..PkiParams::default()
        },
    )
    .unwrap();
    write_atomic(&f.issuer.issuer_key, &next.key_pem);
    write_atomic(&f.issuer.issuer_cert, &next.cert_pem);
    assert_eventually!(
        issuer_of(
            &served_chain(svc.grpc, &f.pki.trust_anchor_pem)
                .await
                .unwrap()[0]
        ) == "CN=identity.rotated.cluster.local",
        "service certificate not re-issued after rotation"
    );
    svc.stop().await;
}

#[tokio::test]
async fn require_tls_closes_plaintext_connections() {
    let f = files();
    let mut cfg = config(&f);
    cfg.require_tls = true;
    let svc = start(cfg, identity::system_clock()).await;
    // A plaintext HTTP/2 client is hung up on.
    let mut tcp = TcpStream::connect(svc.grpc).await.unwrap();
    use tokio::io::AsyncWriteExt;
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "plaintext connection was answered");
    // TLS still works.
    served_chain(svc.grpc, &f.pki.trust_anchor_pem)
        .await
        .unwrap();
    svc.stop().await;
}

#[tokio::test]
async fn garbage_on_the_grpc_port_does_not_hurt_the_service() {
    let f = files();
    let svc = start(config(&f), identity::system_clock()).await;
    use tokio::io::AsyncWriteExt;
    for junk in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\xff\x00\xff",
    ] {
        let mut tcp = TcpStream::connect(svc.grpc).await.unwrap();
        let _ = tcp.write_all(junk).await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tcp.read(&mut buf)).await;
    }
    let mut client = svc.client().await;
    client
        .certify(request(&id("shop", "web"), "tok-web"))
        .await
        .unwrap();
    served_chain(svc.grpc, &f.pki.trust_anchor_pem)
        .await
        .unwrap();
    svc.stop().await;
}
