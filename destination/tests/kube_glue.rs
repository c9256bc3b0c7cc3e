//! The Kubernetes source against a scripted API server on loopback that replays
//! recorded list and watch responses, including a watch that ends with `410 Gone`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use destination::index::answers::RouteOrigin;
use destination::index::objects::Kind;
use destination::index::{EndpointTarget, Index, IndexConfig, ServicePortKey};
use destination::metrics::{ErrorLabels, Metrics};
use destination::source::kubernetes::KubeSource;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One scripted answer: a list (JSON document) or a watch (events, then the
/// connection either stays open or closes).
#[derive(Clone)]
enum Answer {
    List(Value),
    Watch { events: Vec<Value>, hang: bool },
}

/// Scripted answers by `(path, is_watch)`.
type Answers = HashMap<(String, bool), Vec<Answer>>;

/// Answers per `(path, is_watch)`, consumed in order; the last one repeats.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<Answers>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Script {
    fn add(&self, path: &str, watch: bool, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .entry((path.to_string(), watch))
            .or_default()
            .push(answer);
    }

    fn count(&self, path: &str, watch: bool) -> usize {
        let needle = format!("{path} watch={watch}");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| **s == needle)
            .count()
    }

    fn answer(&self, path: &str, query: &str) -> (u16, Body) {
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        self.seen
            .lock()
            .unwrap()
            .push(format!("{path} watch={watch}"));
        let next = {
            let mut answers = self.answers.lock().unwrap();
            match answers.get_mut(&(path.to_string(), watch)) {
                Some(list) if list.len() > 1 => Some(list.remove(0)),
                Some(list) => list.first().cloned(),
                None => None,
            }
        };
        match next {
            None => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("the server could not find the requested resource ({path})"),
                    "reason": "NotFound", "details": {}, "code": 404});
                (404, full(status.to_string()))
            }
            Some(Answer::List(v)) => (200, full(v.to_string())),
            Some(Answer::Watch { events, hang }) => {
                let lines: Vec<Result<Frame<Bytes>, Infallible>> = events
                    .into_iter()
                    .map(|e| Ok(Frame::data(Bytes::from(format!("{e}\n")))))
                    .collect();
                let stream = futures::stream::iter(lines);
                let body = if hang {
                    BodyExt::boxed(StreamBody::new(stream.chain(futures::stream::pending())))
                } else {
                    BodyExt::boxed(StreamBody::new(stream))
                };
                (200, body)
            }
        }
    }
}

fn full(s: String) -> Body {
    BodyExt::boxed(http_body_util::Full::new(Bytes::from(s)))
}

async fn serve(script: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let script = script.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (status, body) =
                            script.answer(req.uri().path(), req.uri().query().unwrap_or(""));
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(body)
                            .unwrap();
                        async move { Ok::<_, Infallible>(resp) }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn meta(name: &str, rv: &str) -> Value {
    json!({
        "name": name, "namespace": "shop", "uid": format!("6f1c2a3e-0000-4000-8000-{:012}", rv.parse::<u64>().unwrap_or(0)),
        "resourceVersion": rv, "creationTimestamp": "2024-05-01T10:00:00Z"
    })
}

fn service(name: &str, ip: &str, rv: &str) -> Value {
    json!({
        "metadata": meta(name, rv),
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP", "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                 "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
        "status": {"loadBalancer": {}}
    })
}

fn list(kind: &str, api_version: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv}, "items": items})
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn gone() -> Value {
    event(
        "ERROR",
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "too old resource version: 100 (187)", "reason": "Expired", "code": 410}),
    )
}

fn recorded_cluster(script: &Script) {
    script.add(
        "/apis",
        false,
        Answer::List(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [
                {"name": "discovery.k8s.io", "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}},
                {"name": "split.smi-spec.io", "versions": [
                    {"groupVersion": "split.smi-spec.io/v1alpha2", "version": "v1alpha2"},
                    {"groupVersion": "split.smi-spec.io/v1alpha1", "version": "v1alpha1"}],
                 "preferredVersion": {"groupVersion": "split.smi-spec.io/v1alpha2", "version": "v1alpha2"}}
            ]
        })),
    );

    // Services: a list, a watch that adds one and then expires with 410, a re-list
    // that no longer has web-v2 (deleted while the watch was down), then an idle watch.
    let svc_path = "/api/v1/services";
    script.add(
        svc_path,
        false,
        Answer::List(list(
            "ServiceList",
            "v1",
            "100",
            vec![
                service("web", "10.96.0.10", "90"),
                service("web-v2", "10.96.0.11", "91"),
            ],
        )),
    );
    script.add(
        svc_path,
        false,
        Answer::List(list(
            "ServiceList",
            "v1",
            "200",
            vec![
                service("web", "10.96.0.10", "90"),
                service("web-v3", "10.96.0.12", "150"),
            ],
        )),
    );
    let mut added = service("web-v3", "10.96.0.12", "150");
    added["apiVersion"] = "v1".into();
    added["kind"] = "Service".into();
    script.add(
        svc_path,
        true,
        Answer::Watch {
            events: vec![event("ADDED", added), gone()],
            hang: false,
        },
    );
    script.add(
        svc_path,
        true,
        Answer::Watch {
            events: vec![],
            hang: true,
        },
    );

    // EndpointSlices: one valid slice and one without its service label (invalid).
    let slice = |name: &str, labels: Value| {
        json!({
            "metadata": {"name": name, "namespace": "shop", "labels": labels, "resourceVersion": "95",
                         "uid": "9a0e7f65-1111-4000-8000-000000000001", "generateName": "web-",
                         "creationTimestamp": "2024-05-01T10:00:01Z",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                              "uid": "6f1c2a3e-0000-4000-8000-000000000090",
                                              "controller": true, "blockOwnerDeletion": true}]},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                           "nodeName": "kind-worker", "zone": "a",
                           "targetRef": {"kind": "Pod", "name": "web-5d8f7c9b6-a", "namespace": "shop",
                                         "uid": "3c0c7f4e-2222-4000-8000-000000000001"}}]
        })
    };
    script.add(
        "/apis/discovery.k8s.io/v1/endpointslices",
        false,
        Answer::List(list("EndpointSliceList", "discovery.k8s.io/v1", "100", vec![
            slice("web-x7k2p", json!({"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})),
            slice("orphan-q9z8w", json!({"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})),
        ])),
    );
    script.add(
        "/apis/discovery.k8s.io/v1/endpointslices",
        true,
        Answer::Watch {
            events: vec![],
            hang: true,
        },
    );

    script.add(
        "/api/v1/pods",
        false,
        Answer::List(list("PodList", "v1", "100", vec![json!({
            "metadata": {"name": "web-5d8f7c9b6-a", "namespace": "shop", "resourceVersion": "80",
                         "uid": "3c0c7f4e-2222-4000-8000-000000000001", "creationTimestamp": "2024-05-01T10:00:00Z",
                         "labels": {"app": "web", "pod-template-hash": "5d8f7c9b6"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b6",
                                              "uid": "aa11bb22-3333-4000-8000-000000000001", "controller": true,
                                              "blockOwnerDeletion": true}]},
            "spec": {"serviceAccountName": "web", "nodeName": "kind-worker",
                     "containers": [{"name": "app", "image": "ghcr.io/example/web:1.0"},
                                    {"name": "linkerd-lite-proxy", "image": "ghcr.io/example/linkerd-lite-proxy:0.1.0"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}
        })])),
    );
    script.add(
        "/api/v1/pods",
        true,
        Answer::Watch {
            events: vec![],
            hang: true,
        },
    );

    // The cluster serves TrafficSplit at v1alpha2; it is watched there.
    let split_path = "/apis/split.smi-spec.io/v1alpha2/trafficsplits";
    script.add(
        split_path,
        false,
        Answer::List(list("TrafficSplitList", "split.smi-spec.io/v1alpha2", "100", vec![json!({
            "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": meta("web-canary", "99"),
            "spec": {"service": "web", "backends": [{"service": "web", "weight": 90}, {"service": "web-v3", "weight": 10}]}
        })])),
    );
    script.add(
        split_path,
        true,
        Answer::Watch {
            events: vec![],
            hang: true,
        },
    );
}

#[tokio::test]
async fn the_kube_source_lists_watches_and_relists_after_410_gone() {
    let script = Script::default();
    recorded_cluster(&script);
    let url = serve(script.clone()).await;
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();

    let index = Arc::new(Index::new(IndexConfig::default()));
    let metrics = Metrics::default();
    tokio::spawn(KubeSource::new(client, index.clone(), metrics.clone()).run());

    let count = |kind: Kind| {
        index
            .stats()
            .objects
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, n)| *n)
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    // The re-list after 410 replaces the Services: web-v2 is gone, web-v3 arrived.
    loop {
        let services = index.service_for_addr("10.96.0.11:80".parse().unwrap());
        if index.is_synced()
            && script.count("/api/v1/services", false) >= 2
            && services.is_none()
            && count(Kind::Service) == 2
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no re-list: {:?}",
            script.seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        index
            .service_for_addr("10.96.0.12:80".parse().unwrap())
            .is_some()
    );
    let watch_errors = metrics
        .errors
        .get_or_create(&ErrorLabels {
            source: "kubernetes",
            reason: "watch",
        })
        .get();
    assert!(watch_errors >= 1, "the 410 is counted");

    // The invalid slice was skipped; the valid one serves with the pod's identity.
    assert_eq!(count(Kind::EndpointSlice), 1);
    let invalid = metrics
        .errors
        .get_or_create(&ErrorLabels {
            source: "kubernetes",
            reason: "invalid_object",
        })
        .get();
    assert_eq!(invalid, 1);
    let set = index
        .watch_endpoints(EndpointTarget::Service {
            namespace: "shop".into(),
            name: "web".into(),
            port: 80,
        })
        .borrow()
        .clone();
    let ep = &set.endpoints[&"10.0.0.1:8080".parse().unwrap()];
    assert_eq!(
        ep.identity.as_deref(),
        Some("web.shop.serviceaccount.identity.linkerd-lite.cluster.local")
    );
    assert_eq!(ep.labels.get("deployment").map(String::as_str), Some("web"));

    // The v1alpha2 TrafficSplit was found through discovery and converted.
    let policy = index
        .watch_outbound(ServicePortKey {
            namespace: "shop".into(),
            name: "web".into(),
            port: 80,
        })
        .borrow()
        .clone()
        .unwrap();
    assert!(matches!(
        policy.routes[0].origin,
        RouteOrigin::TrafficSplit { .. }
    ));
    let weights: Vec<_> = policy.routes[0].rules[0]
        .backends
        .iter()
        .map(|b| (b.service.clone(), b.weight))
        .collect();
    assert_eq!(
        weights,
        vec![("web".to_string(), 900), ("web-v3".to_string(), 100)]
    );

    // Groups the cluster does not serve are not watched at all.
    assert_eq!(
        script.count("/apis/access.smi-spec.io/v1alpha3/traffictargets", false),
        0
    );
}
