//! The files source behind the real gRPC server, over loopback: what a proxy sees as
//! manifests are edited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use destination::grpc;
use destination::index::{Index, IndexConfig};
use destination::metrics::Metrics;
use destination::source::files::{FileSource, FilesConfig};
use linkerd2_proxy_api::destination::{self as dst, destination_client::DestinationClient};
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use linkerd2_proxy_api::inbound::{
    self as inb, inbound_server_policies_client::InboundServerPoliciesClient,
};
use linkerd2_proxy_api::outbound::{self as out, outbound_policies_client::OutboundPoliciesClient};
use tokio::net::TcpListener;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
  creationTimestamp: \"2024-05-01T10:00:00Z\"
spec:
  clusterIP: {ip}
  clusterIPs: [{ip}]
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
"
    )
}

fn workload(name: &str, pods: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut endpoints = String::new();
    for (pod, ip) in pods {
        out.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: shop
  labels:
    app: {name}
    pod-template-hash: 5d8f7c9b6
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: {name}-5d8f7c9b6
    uid: 0b7e1c52-6a53-4c39-9d3e-000000000001
    controller: true
spec:
  serviceAccountName: {name}
  containers:
  - name: app
    image: ghcr.io/example/{name}:1.0
    ports:
    - name: http
      containerPort: 8080
  - name: linkerd-lite-proxy
    image: ghcr.io/example/linkerd-lite-proxy:0.1.0
status:
  phase: Running
  podIP: {ip}
  podIPs:
  - ip: {ip}
"
        ));
        endpoints.push_str(&format!(
            "- addresses: [\"{ip}\"]
  conditions:
    ready: true
  targetRef:
    kind: Pod
    name: {pod}
    namespace: shop
"
        ));
    }
    out.push_str(&format!(
        "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-x7k2p
  namespace: shop
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
{endpoints}"
    ));
    out
}

fn split(web: u32, v2: u32) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: web-canary
  namespace: shop
spec:
  service: web
  backends:
  - service: web
    weight: {web}
  - service: web-v2
    weight: {v2}
"
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as editors and `kubectl`-style tools do, so the watcher never
    // reads a half-written file.
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A log sink the test can read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Mesh {
    dir: tempfile::TempDir,
    channel: Channel,
    channel_uri: String,
    metrics: Metrics,
}

async fn start(files: &[(&str, String)]) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    let index = Arc::new(Index::new(IndexConfig::default()));
    let metrics = Metrics::default();
    let mut config = FilesConfig::new(dir.path());
    config.debounce = Duration::from_millis(10);
    let source = FileSource::new(config, index.clone(), metrics.clone());
    tokio::spawn(source.run(std::future::pending()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !index.is_synced() {
        assert!(tokio::time::Instant::now() < deadline, "files never loaded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grpc::serve(
        listener,
        index,
        metrics.clone(),
        std::future::pending(),
    ));
    let channel_uri = format!("http://{addr}");
    let channel = Channel::from_shared(channel_uri.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Mesh {
        dir,
        channel,
        channel_uri,
        metrics,
    }
}

fn shop() -> Vec<(&'static str, String)> {
    vec![
        ("web-svc.yaml", service("web", "10.96.0.10")),
        ("web-v2-svc.yaml", service("web-v2", "10.96.0.11")),
        (
            "web.yaml",
            workload(
                "web",
                &[
                    ("web-5d8f7c9b6-a", "10.0.0.1"),
                    ("web-5d8f7c9b6-b", "10.0.0.2"),
                ],
            ),
        ),
        (
            "web-v2.yaml",
            workload("web-v2", &[("web-v2-5d8f7c9b6-a", "10.0.0.3")]),
        ),
        ("split.yaml", split(90, 10)),
    ]
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an update in time")
        .expect("a healthy stream")
        .expect("the stream is open")
}

fn get(path: &str) -> dst::GetDestination {
    dst::GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    }
}

fn added(update: &dst::Update) -> Vec<(String, Option<String>)> {
    match &update.update {
        Some(dst::update::Update::Add(set)) => {
            let mut v: Vec<_> = set
                .addrs
                .iter()
                .map(|a| {
                    let addr: std::net::SocketAddr = a.addr.unwrap().try_into().unwrap();
                    let id = a.tls_identity.as_ref().and_then(|t| match &t.strategy {
                        Some(dst::tls_identity::Strategy::DnsLikeIdentity(d)) => {
                            Some(d.name.clone())
                        }
                        _ => None,
                    });
                    (addr.to_string(), id)
                })
                .collect();
            v.sort();
            v
        }
        other => panic!("expected an Add, got {other:?}"),
    }
}

fn split_weights(policy: &out::OutboundPolicy) -> Vec<(String, u32)> {
    use out::proxy_protocol::Kind;
    let Some(Kind::Detect(detect)) = policy.protocol.as_ref().and_then(|p| p.kind.as_ref()) else {
        panic!("expected detect: {policy:?}");
    };
    let rule = &detect.http1.as_ref().unwrap().routes[0].rules[0];
    let Some(out::http_route::distribution::Kind::RandomAvailable(dist)) =
        rule.backends.as_ref().and_then(|b| b.kind.as_ref())
    else {
        panic!("expected weighted backends");
    };
    dist.backends
        .iter()
        .map(|b| {
            let backend = b.backend.as_ref().unwrap().backend.as_ref().unwrap();
            let Some(out::backend::Kind::Balancer(p2c)) = &backend.kind else {
                panic!("expected a balancer");
            };
            assert!(matches!(
                p2c.load,
                Some(out::backend::balance_p2c::Load::PeakEwma(_))
            ));
            let Some(out::backend::endpoint_discovery::Kind::Dst(d)) =
                p2c.discovery.as_ref().and_then(|d| d.kind.as_ref())
            else {
                panic!("expected destination discovery");
            };
            (d.path.clone(), b.weight)
        })
        .collect()
}

fn spec(authority: &str) -> out::TrafficSpec {
    out::TrafficSpec {
        source_workload: "shop:client".into(),
        target: Some(out::traffic_spec::Target::Authority(authority.into())),
    }
}

#[tokio::test]
async fn a_watcher_sees_endpoints_with_identities_and_then_changes() {
    let mesh = start(&shop()).await;
    let mut client = DestinationClient::new(mesh.channel.clone());
    let mut stream = client
        .get(get("web.shop.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    let id = "web.shop.serviceaccount.identity.linkerd-lite.cluster.local".to_string();
    assert_eq!(
        added(&first),
        vec![
            ("10.0.0.1:8080".into(), Some(id.clone())),
            ("10.0.0.2:8080".into(), Some(id.clone())),
        ]
    );
    if let Some(dst::update::Update::Add(set)) = &first.update {
        let labels = &set.addrs[0].metric_labels;
        assert_eq!(labels.get("deployment").map(String::as_str), Some("web"));
        assert!(
            set.addrs[0].protocol_hint.is_some(),
            "meshed endpoints hint H2"
        );
    }

    // Scale up: only the new endpoint is sent.
    write(
        mesh.dir.path(),
        "web.yaml",
        &workload(
            "web",
            &[
                ("web-5d8f7c9b6-a", "10.0.0.1"),
                ("web-5d8f7c9b6-b", "10.0.0.2"),
                ("web-5d8f7c9b6-c", "10.0.0.4"),
            ],
        ),
    );
    assert_eq!(
        added(&next(&mut stream).await),
        vec![("10.0.0.4:8080".into(), Some(id))]
    );

    // Renaming a file changes nothing a proxy can see.
    std::fs::rename(
        mesh.dir.path().join("web.yaml"),
        mesh.dir.path().join("web-renamed.yaml"),
    )
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "a rename must not send an update"
    );

    // Scale to zero: an explicit "no endpoints".
    std::fs::remove_file(mesh.dir.path().join("web-renamed.yaml")).unwrap();
    let removed = next(&mut stream).await;
    assert!(
        matches!(
            removed.update,
            Some(dst::update::Update::NoEndpoints(dst::NoEndpoints {
                exists: true
            }))
        ),
        "{removed:?}"
    );
}

#[tokio::test]
async fn unknown_services_malformed_paths_and_unsupported_rpcs_get_clear_answers() {
    let mesh = start(&shop()).await;
    let mut client = DestinationClient::new(mesh.channel.clone());
    let mut stream = client
        .get(get("nope.shop.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(
        first.update,
        Some(dst::update::Update::NoEndpoints(dst::NoEndpoints {
            exists: false
        }))
    );

    let err = client.get(get("not a name")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not a name"), "{}", err.message());

    let mut policies = OutboundPoliciesClient::new(mesh.channel.clone());
    let err = policies
        .get(spec("nope.shop.svc.cluster.local:80"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let mut identity = IdentityClient::new(mesh.channel.clone());
    let err = identity
        .certify(linkerd2_proxy_api::identity::CertifyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn editing_a_split_delivers_new_weights_and_deleting_a_backend_removes_it() {
    let mesh = start(&shop()).await;
    let mut policies = OutboundPoliciesClient::new(mesh.channel.clone());
    let mut stream = policies
        .watch(spec("web.shop.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    let web = "web.shop.svc.cluster.local:80".to_string();
    let v2 = "web-v2.shop.svc.cluster.local:80".to_string();
    assert_eq!(
        split_weights(&next(&mut stream).await),
        vec![(web.clone(), 900), (v2.clone(), 100)]
    );

    let mut profiles = DestinationClient::new(mesh.channel.clone());
    let mut profile = profiles
        .get_profile(get("web.shop.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    let p = next(&mut profile).await;
    let overrides: Vec<_> = p
        .dst_overrides
        .iter()
        .map(|d| (d.authority.clone(), d.weight))
        .collect();
    assert_eq!(overrides, vec![(web.clone(), 900), (v2.clone(), 100)]);
    let budget = p.retry_budget.unwrap();
    assert!((budget.retry_ratio - 0.2).abs() < 1e-6);
    assert_eq!(budget.min_retries_per_second, 10);

    write(mesh.dir.path(), "split.yaml", &split(50, 50));
    assert_eq!(
        split_weights(&next(&mut stream).await),
        vec![(web.clone(), 500), (v2.clone(), 500)]
    );
    let p = next(&mut profile).await;
    assert_eq!(
        p.dst_overrides.iter().map(|d| d.weight).collect::<Vec<_>>(),
        vec![500, 500]
    );

    std::fs::remove_file(mesh.dir.path().join("web-v2-svc.yaml")).unwrap();
    assert_eq!(split_weights(&next(&mut stream).await), vec![(web, 500)]);
    assert!(
        mesh.metrics
            .updates
            .get_or_create(&destination::metrics::RpcLabels {
                rpc: "OutboundPolicies.Watch"
            })
            .get()
            >= 3
    );
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_state_and_is_logged_with_its_line() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mesh = start(&shop()).await;
    let mut policies = OutboundPoliciesClient::new(mesh.channel.clone());
    let mut stream = policies
        .watch(spec("web.shop.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    next(&mut stream).await;

    // Line 9 loses its closing bracket.
    let broken = split(50, 50).replace("  backends:\n", "  backends: [\n");
    write(mesh.dir.path(), "split.yaml", &broken);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !logs.text().contains("split.yaml:") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error logged: {}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = logs.text();
    let line = text.lines().find(|l| l.contains("split.yaml:")).unwrap();
    assert!(
        line.contains("split.yaml:8") || line.contains("split.yaml:9"),
        "{line}"
    );

    // Nothing changed for the watcher, and the split still serves 90/10.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.message())
            .await
            .is_err(),
        "a broken file must not send an update"
    );
    let policy = policies
        .get(spec("web.shop.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(split_weights(&policy)[0].1, 900);

    // Fixing the file resumes updates.
    write(mesh.dir.path(), "split.yaml", &split(50, 50));
    assert_eq!(split_weights(&next(&mut stream).await)[0].1, 500);
}

#[tokio::test]
async fn traffic_targets_become_inbound_authorizations() {
    let mut files = shop();
    files.push((
        "access.yaml",
        "apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: web-from-gateway
  namespace: shop
spec:
  destination:
    kind: ServiceAccount
    name: web
    namespace: shop
  sources:
  - kind: ServiceAccount
    name: gateway
    namespace: shop
"
        .to_string(),
    ));
    let mesh = start(&files).await;
    let mut client = InboundServerPoliciesClient::new(mesh.channel.clone());
    let port = |workload: &str| inb::PortSpec {
        workload: workload.into(),
        port: 8080,
    };
    let mut stream = client
        .watch_port(port(r#"{"ns":"shop","pod":"web-5d8f7c9b6-a"}"#))
        .await
        .unwrap()
        .into_inner();
    let server = next(&mut stream).await;
    let ids: Vec<String> = server
        .authorizations
        .iter()
        .flat_map(|a| match &a.authentication.as_ref().unwrap().permit {
            Some(inb::authn::Permit::MeshTls(m)) => match &m.clients {
                Some(inb::authn::permit_mesh_tls::Clients::Identities(ids)) => ids
                    .identities
                    .iter()
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>(),
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        vec!["gateway.shop.serviceaccount.identity.linkerd-lite.cluster.local"]
    );

    // Without the target the mesh-wide default (all-unauthenticated) applies again.
    std::fs::remove_file(mesh.dir.path().join("access.yaml")).unwrap();
    let server = next(&mut stream).await;
    assert!(matches!(
        server.authorizations[0]
            .authentication
            .as_ref()
            .unwrap()
            .permit,
        Some(inb::authn::Permit::Unauthenticated(_))
    ));

    let err = client.get_port(port("no-colon")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn addresses_resolve_to_services_and_pods() {
    let mesh = start(&shop()).await;

    // A cluster IP is its Service, for policies and endpoints alike.
    let mut policies = OutboundPoliciesClient::new(mesh.channel.clone());
    let by_ip = out::TrafficSpec {
        source_workload: "shop:client".into(),
        target: Some(out::traffic_spec::Target::Addr(
            "10.96.0.10:80"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )),
    };
    let policy = policies.get(by_ip).await.unwrap().into_inner();
    let Some(linkerd2_proxy_api::meta::metadata::Kind::Resource(svc)) =
        policy.metadata.and_then(|m| m.kind)
    else {
        panic!("expected the Service as metadata");
    };
    assert_eq!(
        (svc.kind.as_str(), svc.name.as_str(), svc.port),
        ("Service", "web", 80)
    );

    let mut client = DestinationClient::new(mesh.channel.clone());
    let mut stream = client.get(get("10.96.0.10:80")).await.unwrap().into_inner();
    assert_eq!(added(&next(&mut stream).await).len(), 2);

    // A pod IP's profile carries the pod as its endpoint, with its identity.
    let mut profile = client
        .get_profile(get("10.0.0.3:8080"))
        .await
        .unwrap()
        .into_inner();
    let p = next(&mut profile).await;
    let endpoint = p.endpoint.expect("the pod as endpoint");
    let id = endpoint.tls_identity.and_then(|t| t.strategy);
    assert_eq!(
        id,
        Some(dst::tls_identity::Strategy::DnsLikeIdentity(
            dst::tls_identity::DnsLikeIdentity {
                name: "web-v2.shop.serviceaccount.identity.linkerd-lite.cluster.local".into()
            }
        ))
    );
    assert!(p.dst_overrides.is_empty());
}

/// Applies `Get` updates to a client's view of the endpoint set.
fn apply(view: &mut std::collections::BTreeSet<String>, update: &dst::Update) {
    match &update.update {
        Some(dst::update::Update::Add(set)) => {
            for a in &set.addrs {
                let addr: std::net::SocketAddr = a.addr.unwrap().try_into().unwrap();
                view.insert(addr.to_string());
            }
        }
        Some(dst::update::Update::Remove(set)) => {
            for a in &set.addrs {
                let addr: std::net::SocketAddr = (*a).try_into().unwrap();
                view.remove(&addr.to_string());
            }
        }
        Some(dst::update::Update::NoEndpoints(_)) => view.clear(),
        None => {}
    }
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_up_others_and_catches_up_to_the_latest_state() {
    let mesh = start(&shop()).await;
    let connect = || async {
        Channel::from_shared(mesh.channel_uri.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    // Separate connections: HTTP/2 flow control is per connection on the client side.
    let mut stalled = DestinationClient::new(connect().await);
    let mut live = DestinationClient::new(connect().await);
    let path = "web.shop.svc.cluster.local:80";
    let mut stalled_stream = stalled.get(get(path)).await.unwrap().into_inner();
    let mut live_stream = live.get(get(path)).await.unwrap().into_inner();
    let mut live_view = std::collections::BTreeSet::new();
    apply(&mut live_view, &next(&mut live_stream).await);

    let mut expected = std::collections::BTreeSet::new();
    for round in 0..8u32 {
        // 300 fresh endpoints per round: each update is tens of kilobytes, so the
        // stalled stream's flow-control window fills after a couple of rounds.
        let names: Vec<(String, String)> = (0..300u32)
            .map(|i| {
                (
                    format!("web-r{round}-{i}"),
                    format!("10.{}.{}.{}", 10 + round, i / 200, i % 200 + 1),
                )
            })
            .collect();
        let pods: Vec<(&str, &str)> = names
            .iter()
            .map(|(p, ip)| (p.as_str(), ip.as_str()))
            .collect();
        write(mesh.dir.path(), "web.yaml", &workload("web", &pods));
        expected = names.iter().map(|(_, ip)| format!("{ip}:8080")).collect();
        while live_view != expected {
            apply(&mut live_view, &next(&mut live_stream).await);
        }
    }

    // The stalled client, reading at last, converges on the latest state.
    let mut stalled_view = std::collections::BTreeSet::new();
    let mut messages = 0;
    while stalled_view != expected {
        apply(&mut stalled_view, &next(&mut stalled_stream).await);
        messages += 1;
    }
    assert!(messages >= 1);
}
