//! The "shop" demo: a canary of `web` behind a TrafficSplit, as the Kubernetes YAML
//! the destination service reads in local mode.
//!
//! The same objects serve the local quickstart and the end-to-end tests; only the
//! pods' addresses differ (loopback addresses locally, network-namespace addresses in
//! the tests).

use std::net::Ipv4Addr;

/// The demo's namespace.
pub const NAMESPACE: &str = "shop";
/// The port every demo application listens on.
pub const APP_PORT: u16 = 8080;
/// The root Service's cluster IP.
pub const WEB_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A demo pod: its name, service account, app/version labels and address.
#[derive(Clone, Debug)]
pub struct DemoPod {
    /// The pod's name.
    pub name: String,
    /// Its service account (and so its identity).
    pub service_account: String,
    /// Its `version` label: `v1` or `v2` for web, empty for the client.
    pub version: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

fn pod_yaml(p: &DemoPod, app: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {NAMESPACE}
  labels:
    app: {app}
    version: "{version}"
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: {app}-{version}-7d4b9c
    uid: 00000000-0000-0000-0000-00000000000{n}
spec:
  serviceAccountName: {sa}
  initContainers:
  - name: linkerd-lite-proxy
    image: ghcr.io/linkerd-lite/proxy:dev
    restartPolicy: Always
  containers:
  - name: {app}
    image: ghcr.io/linkerd-lite/demo:dev
    ports:
    - name: http
      containerPort: {APP_PORT}
status:
  phase: Running
  podIP: {ip}
"#,
        name = p.name,
        version = p.version,
        sa = p.service_account,
        ip = p.ip,
        n = p.ip.octets()[3] % 10,
    )
}

fn service_yaml(name: &str, cluster_ip: Ipv4Addr, selector: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  clusterIP: {cluster_ip}
  selector:
{selector}
  ports:
  - name: http
    port: 80
    targetPort: {APP_PORT}
"#
    )
}

fn slice_yaml(service: &str, pods: &[&DemoPod]) -> String {
    let mut endpoints = String::new();
    for p in pods {
        endpoints.push_str(&format!(
            r#"- addresses: ["{ip}"]
  conditions:
    ready: true
  targetRef:
    kind: Pod
    name: {name}
    namespace: {NAMESPACE}
"#,
            ip = p.ip,
            name = p.name
        ));
    }
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-abc12
  namespace: {NAMESPACE}
  labels:
    kubernetes.io/service-name: {service}
addressType: IPv4
ports:
- name: http
  port: {APP_PORT}
  protocol: TCP
endpoints:
{endpoints}"#
    )
}

/// The TrafficSplit sending `v1_weight`/`v2_weight` of `web`'s traffic to each version.
pub fn split_yaml(v1_weight: u32, v2_weight: u32) -> String {
    format!(
        r#"apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: web-canary
  namespace: {NAMESPACE}
spec:
  service: web
  backends:
  - service: web-v1
    weight: {v1_weight}
  - service: web-v2
    weight: {v2_weight}
"#
    )
}

/// An HTTPRouteGroup and a TrafficTarget admitting the `client` service account to
/// `GET /api...` on `web` and to nothing else: once applied, other paths and methods
/// answer 403 and nobody else gets in.
pub fn api_access_yaml() -> String {
    format!(
        r#"apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: web-api
  namespace: {NAMESPACE}
spec:
  matches:
  - name: read-api
    pathRegex: /api
    methods: [GET]
  - name: write-api
    pathRegex: /api
    methods: [POST]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: client-reads-web-api
  namespace: {NAMESPACE}
spec:
  destination:
    kind: ServiceAccount
    name: web
    namespace: {NAMESPACE}
  rules:
  - kind: HTTPRouteGroup
    name: web-api
    matches: [read-api]
  sources:
  - kind: ServiceAccount
    name: client
    namespace: {NAMESPACE}
"#
    )
}

/// The demo's files (name, YAML) for a client pod and two web pods, without the split.
pub fn manifests(client: &DemoPod, v1: &DemoPod, v2: &DemoPod) -> Vec<(String, String)> {
    let ip = |last: u8| Ipv4Addr::new(10, 96, 0, last);
    vec![
        (
            "pods.yaml".into(),
            [
                pod_yaml(client, "client"),
                pod_yaml(v1, "web"),
                pod_yaml(v2, "web"),
            ]
            .join("---\n"),
        ),
        (
            "services.yaml".into(),
            [
                service_yaml("web", WEB_CLUSTER_IP, "    app: web"),
                service_yaml("web-v1", ip(11), "    app: web\n    version: \"v1\""),
                service_yaml("web-v2", ip(12), "    app: web\n    version: \"v2\""),
            ]
            .join("---\n"),
        ),
        (
            "endpointslices.yaml".into(),
            [
                slice_yaml("web", &[v1, v2]),
                slice_yaml("web-v1", &[v1]),
                slice_yaml("web-v2", &[v2]),
            ]
            .join("---\n"),
        ),
    ]
}
