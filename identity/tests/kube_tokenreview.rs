//! The `kubernetes` token backend against a scripted API server on loopback that
//! replays recorded TokenReview responses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use identity::server::TokenBackend;
use identity::token::kubernetes::KubeTokenReviewer;
use identity::token::{ReviewError, ServiceAccount, TokenReviewer};
use tonic::Code;

const AUTHENTICATED: &str = include_str!("fixtures/tokenreview-authenticated.json");
const UNAUTHENTICATED: &str = include_str!("fixtures/tokenreview-unauthenticated.json");
const FORBIDDEN: &str = include_str!("fixtures/tokenreview-forbidden.json");

/// A scripted API server: `web-token` is shop/web, `revoked-token` is refused, and any
/// other token gets the 403 an identity service without RBAC would see.
struct ApiServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
}

async fn api_server() -> ApiServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let token = json["spec"]["token"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        log.lock().unwrap().push((method, path, json));
                        let (status, body) = match token.as_str() {
                            "web-token" => (201, AUTHENTICATED.replace("$TOKEN", &token)),
                            "revoked-token" => (201, UNAUTHENTICATED.replace("$TOKEN", &token)),
                            _ => (403, FORBIDDEN.to_string()),
                        };
                        let rsp = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .header("audit-id", "7e3c9a51-0f42-4b8e-9d1a-5c6b2e8f4a70")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    ApiServer { addr, requests }
}

fn client(api: &ApiServer) -> kube::Client {
    let config = kube::Config::new(format!("http://{}", api.addr).parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn token_review_maps_the_user_to_a_service_account() {
    let api = api_server().await;
    let reviewer = KubeTokenReviewer::new(client(&api), "identity.linkerd-lite.io");
    let sa = reviewer.review("web-token").await.unwrap();
    assert_eq!(
        sa,
        ServiceAccount {
            namespace: "shop".into(),
            name: "web".into()
        }
    );
    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (method, path, body) = &requests[0];
    assert_eq!(method, "POST");
    assert_eq!(path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["spec"]["token"], "web-token");
    assert_eq!(
        body["spec"]["audiences"],
        serde_json::json!(["identity.linkerd-lite.io"])
    );
}

#[tokio::test]
async fn unauthenticated_is_rejected_and_api_errors_are_backend_failures() {
    let api = api_server().await;
    let reviewer = KubeTokenReviewer::new(client(&api), "identity.linkerd-lite.io");
    let err = reviewer.review("revoked-token").await.unwrap_err();
    assert!(
        matches!(&err, ReviewError::Rejected(r) if r.contains("invalidated")),
        "{err:?}"
    );
    let err = reviewer.review("anything").await.unwrap_err();
    assert!(matches!(err, ReviewError::Backend(_)), "{err:?}");
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let api = api_server().await;
    // The recorded review echoes identity.linkerd-lite.io; a reviewer for another
    // audience must not accept it.
    let reviewer = KubeTokenReviewer::new(client(&api), "other.example");
    let err = reviewer.review("web-token").await.unwrap_err();
    assert!(matches!(err, ReviewError::Rejected(_)), "{err:?}");
}

#[tokio::test]
async fn certify_with_the_kubernetes_backend() {
    let api = api_server().await;
    let f = files();
    let mut cfg = config(&f);
    cfg.tokens = TokenBackend::Kubernetes {
        client: client(&api),
        audience: "identity.linkerd-lite.io".into(),
    };
    let svc = start(cfg, identity::system_clock()).await;
    let mut c = svc.client().await;
    let web = id("shop", "web");
    let rsp = c
        .certify(request(&web, "web-token"))
        .await
        .unwrap()
        .into_inner();
    verify(
        &f.pki.trust_anchor_pem,
        &rsp,
        &web.dns_name(),
        std::time::SystemTime::now(),
    )
    .unwrap();

    // The token is shop/web's: not good for shop/api.
    let status = c
        .certify(request(&id("shop", "api"), "web-token"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = c.certify(request(&web, "revoked-token")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = c.certify(request(&web, "unlucky")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    svc.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_api_server_times_out_as_a_backend_failure() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            held.push(stream);
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let reviewer = KubeTokenReviewer::new(
        kube::Client::try_from(config).unwrap(),
        "identity.linkerd-lite.io",
    );
    let start = tokio::time::Instant::now();
    let err = reviewer.review("web-token").await.unwrap_err();
    assert!(matches!(err, ReviewError::Backend(_)), "{err:?}");
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(10));
}
