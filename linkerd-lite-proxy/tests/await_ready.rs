//! `linkerd-lite-proxy await-ready` as a real process, against a real in-process
//! proxy and against a tiny admin stand-in that becomes ready after a few polls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An admin stand-in answering `/ready` with 503 for the first `not_ready` polls,
/// then 200. Returns its address and the poll count.
async fn admin_standin(not_ready: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    let count = polls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let status = if req.uri().path() != "/ready" {
                        StatusCode::NOT_FOUND
                    } else if n < not_ready {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    let mut rsp = Response::new(Full::new(Bytes::from_static(b"x\n")));
                    *rsp.status_mut() = status;
                    async move { Ok::<_, Infallible>(rsp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, polls)
}

async fn await_ready(admin: String, timeout: &str) -> Output {
    let timeout = timeout.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_linkerd-lite-proxy"))
            .env_clear()
            .env("LINKERD_LITE_PROXY_ADMIN_LISTEN_ADDR", admin)
            .args(["await-ready", "--timeout", &timeout])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn waits_through_not_ready_answers_until_200() {
    let (addr, polls) = admin_standin(3).await;
    let out = await_ready(addr.to_string(), "30s").await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("proxy is ready"), "{out:?}");
    assert_eq!(polls.load(Ordering::SeqCst), 4, "three 503s, then the 200");
}

#[tokio::test]
async fn gives_up_after_the_timeout_with_the_last_answer() {
    let (addr, polls) = admin_standin(usize::MAX).await;
    let out = await_ready(addr.to_string(), "1s").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "proxy at http://{addr}/ready was not ready within 1s"
        )),
        "{err}"
    );
    assert!(err.contains("503"), "{err}");
    assert!(
        polls.load(Ordering::SeqCst) >= 2,
        "it polled more than once"
    );
}

#[tokio::test]
async fn nothing_listening_fails_with_the_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // An unspecified bind address is polled over loopback.
    let out = await_ready(format!("0.0.0.0:{port}"), "600ms").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}/ready")) && err.contains("connecting"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_admin_address_is_named() {
    let out = await_ready("not-an-address".into(), "1s").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("LINKERD_LITE_PROXY_ADMIN_LISTEN_ADDR"),
        "{err}"
    );
}

#[tokio::test]
async fn a_running_proxy_is_ready() {
    let proxy = start_proxy(test_config(), None).await;
    let out = await_ready(proxy.addrs.admin.to_string(), "10s").await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
}
