//! The admin server over loopback: readiness follows the first sync, metrics render.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use destination::admin::Admin;
use destination::index::objects::{Change, Object, Service};
use destination::index::{Index, IndexConfig};
use destination::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.unwrap();
    let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[tokio::test]
async fn ready_after_sync_live_always_and_metrics_show_the_index() {
    let index = Arc::new(Index::new(IndexConfig::default()));
    let metrics = Metrics::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Admin::new(index.clone(), metrics.clone()).serve(listener, std::future::pending()),
    );

    assert_eq!(get(addr, "/live").await.0, 200);
    assert_eq!(get(addr, "/ready").await.0, 503);
    index.apply([Change::Upsert(Object::Service(Service {
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec![],
        ports: vec![],
        opaque_ports: Default::default(),
        timeout: None,
        retryable: false,
        failure_accrual: None,
    }))]);
    index.mark_synced();
    assert_eq!(get(addr, "/ready").await.0, 200);

    metrics.error("files", "parse");
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"destination_index_objects{kind="Service"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"destination_errors_total{source="files",reason="parse"} 1"#),
        "{body}"
    );
    assert_eq!(get(addr, "/nope").await.0, 404);
}
