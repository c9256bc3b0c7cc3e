//! A scripted Kubernetes API server on loopback: it answers each `METHOD path?query`
//! with a recorded response, 404 (as a `Status`) for anything else, and remembers the
//! requests it saw.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::fixture;

type Routes = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// The running server.
#[derive(Debug)]
pub struct ApiServer {
    pub addr: SocketAddr,
    routes: Routes,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ApiServer {
    /// Binds 127.0.0.1:0 and serves on a thread of its own.
    pub fn start() -> Self {
        let routes: Routes = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (r, s) = (routes.clone(), seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, r, s));
        });
        Self { addr, routes, seen }
    }

    /// Answers `method path` with `status` and `body`.
    pub fn route(&self, method: &str, path: &str, status: u16, body: impl Into<String>) {
        self.routes
            .lock()
            .unwrap()
            .insert(format!("{method} {path}"), (status, body.into()));
    }

    /// Answers `GET path` with a JSON value.
    pub fn get(&self, path: &str, body: &Value) {
        self.route("GET", path, 200, body.to_string());
    }

    /// Forgets a route, so it answers 404.
    pub fn remove(&self, method: &str, path: &str) {
        self.routes
            .lock()
            .unwrap()
            .remove(&format!("{method} {path}"));
    }

    /// Every request seen so far, as `METHOD path?query`.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Writes a kubeconfig pointing at this server into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: scripted\n  cluster:\n    server: http://{}\n\
             users:\n- name: tester\n  user:\n    token: scripted-token\ncontexts:\n- name: scripted\n  \
             context:\n    cluster: scripted\n    user: tester\ncurrent-context: scripted\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

async fn serve(listener: std::net::TcpListener, routes: Routes, seen: Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (routes, seen) = (routes.clone(), seen.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (routes, seen) = (routes.clone(), seen.clone());
                async move {
                    let key = format!(
                        "{} {}",
                        req.method(),
                        req.uri()
                            .path_and_query()
                            .map(|p| p.as_str())
                            .unwrap_or("/")
                    );
                    let _ = req.into_body().collect().await;
                    // Answer first, then record: a test that reacts to a request it saw
                    // must not change that request's answer.
                    let found = routes.lock().unwrap().get(&key).cloned();
                    seen.lock().unwrap().push(key.clone());
                    let (status, body) = found.unwrap_or_else(|| {
                        let what = key
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or_default()
                            .to_string();
                        (404, read("not-found.json").replace("@WHAT@", &what))
                    });
                    let content_type = if body.starts_with('{') {
                        "application/json"
                    } else {
                        "text/plain"
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", content_type)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A recorded response from `tests/fixtures/kube`.
pub fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("kube/{name}"))).unwrap()
}

/// PEM material of an installed control plane.
#[derive(Clone, Debug)]
pub struct Pki {
    pub anchors: String,
    pub issuer_crt: String,
    pub issuer_key: String,
}

impl Pki {
    /// The long-lived fixture PKI.
    pub fn fixture() -> Self {
        let r = |n: &str| std::fs::read_to_string(fixture(&format!("pki/{n}"))).unwrap();
        Self {
            anchors: r("trust-anchors.pem"),
            issuer_crt: r("issuer.crt"),
            issuer_key: r("issuer.key"),
        }
    }

    pub fn digest(&self) -> String {
        identity::pki::trust_anchors_digest(&self.anchors).unwrap()
    }
}

const NS: &str = "linkerd-lite";

/// Every CRD as the API server returns it: the rendered object plus server fields.
pub fn crd_objects() -> Vec<(String, Value)> {
    smi_crds::crd::all()
        .into_iter()
        .enumerate()
        .map(|(i, crd)| {
            let name = crd.metadata.name.clone().unwrap();
            let mut v = serde_json::to_value(&crd).unwrap();
            v["metadata"]["uid"] = json!(format!("3c1d8a7e-0000-4f00-9a00-00000000000{i}"));
            v["metadata"]["resourceVersion"] = json!("40911");
            v["metadata"]["generation"] = json!(1);
            v["metadata"]["creationTimestamp"] = json!("2026-11-02T09:12:03Z");
            let storage: Vec<Value> = v["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["storage"] == true)
                .map(|v| v["name"].clone())
                .collect();
            v["status"] = json!({
                "acceptedNames": v["spec"]["names"].clone(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": "2026-11-02T09:12:03Z", "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": "2026-11-02T09:12:03Z", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                ],
                "storedVersions": storage,
            });
            (name, v)
        })
        .collect()
}

pub fn crd_path(name: &str) -> String {
    format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
}

pub const DEST_READY: &str =
    "/api/v1/namespaces/linkerd-lite/services/linkerd-lite-destination:admin/proxy/ready";
pub const IDENTITY_READY: &str =
    "/api/v1/namespaces/linkerd-lite/services/linkerd-lite-identity:admin/proxy/ready";
pub const PODS: &str =
    "/api/v1/pods?labelSelector=mesh.linkerd-lite.io/proxy-control-plane-ns%3Dlinkerd-lite";
pub const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
pub const CLUSTERROLES: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles?labelSelector=mesh.linkerd-lite.io/control-plane-ns";

/// Serves the trust anchors and issuer of `pki`.
pub fn serve_pki(server: &ApiServer, pki: &Pki) {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cm = read("configmap-trust-roots.json").replace(
        "\"@TRUST_ANCHORS@\"",
        &serde_json::to_string(&pki.anchors).unwrap(),
    );
    server.route(
        "GET",
        &format!("/api/v1/namespaces/{NS}/configmaps/linkerd-lite-identity-trust-roots"),
        200,
        cm,
    );
    let secret = read("secret-issuer.json")
        .replace("@ISSUER_CRT_B64@", &b64(&pki.issuer_crt))
        .replace("@ISSUER_KEY_B64@", &b64(&pki.issuer_key));
    server.route(
        "GET",
        &format!("/api/v1/namespaces/{NS}/secrets/linkerd-lite-identity-issuer"),
        200,
        secret,
    );
}

/// A cluster with the CRDs and a healthy control plane and data plane installed.
pub fn healthy(server: &ApiServer, pki: &Pki) {
    server.route("GET", "/version", 200, read("version.json"));
    for (name, crd) in crd_objects() {
        server.get(&crd_path(&name), &crd);
    }
    server.route(
        "GET",
        &format!("/api/v1/namespaces/{NS}"),
        200,
        read("namespace.json"),
    );
    for c in ["destination", "identity"] {
        server.route(
            "GET",
            &format!("/apis/apps/v1/namespaces/{NS}/deployments/linkerd-lite-{c}"),
            200,
            read(&format!("deployment-{c}.json")),
        );
    }
    serve_pki(server, pki);
    server.route("GET", DEST_READY, 200, "ready\n");
    server.route("GET", IDENTITY_READY, 200, "ready\n");
    server.route(
        "GET",
        PODS,
        200,
        read("pods-meshed.json").replace("@DIGEST@", &pki.digest()),
    );
}

/// A fresh cluster that can take an installation.
pub fn empty_cluster(server: &ApiServer) {
    server.route("GET", "/version", 200, read("version.json"));
    server.route("POST", SSAR, 201, read("ssar-allowed.json"));
    server.route("GET", CLUSTERROLES, 200, read("clusterroles-empty.json"));
}
