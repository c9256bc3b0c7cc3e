//! What the index holds: Kubernetes objects reduced to the fields discovery and policy
//! need, plus the one routing model that TrafficSplit and HTTPRoute share.
//!
//! Sources (files, Kubernetes) convert into these types; nothing here knows about kube
//! or YAML.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use smi_crds::model::{AccessRule, HttpRouteGroup, PortRoute, Source, Split};

/// A Service: its cluster IPs, ports and the mesh annotations that shape its routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// `spec.clusterIPs` (headless Services have none).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// Ports whose traffic is opaque TCP (`mesh.linkerd-lite.io/opaque-ports`).
    pub opaque_ports: BTreeSet<u16>,
    /// Request timeout for its routes (`mesh.linkerd-lite.io/timeout`).
    pub timeout: Option<Duration>,
    /// Whether failed requests may be retried (`mesh.linkerd-lite.io/retry`).
    pub retryable: bool,
    /// Consecutive failures before an endpoint is ejected
    /// (`mesh.linkerd-lite.io/failure-accrual-consecutive`); `None` is the default.
    pub failure_accrual: Option<u32>,
}

/// One entry of a Service's `spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name; EndpointSlice ports are matched to it by name.
    pub name: Option<String>,
    /// The Service port.
    pub port: u16,
    /// `appProtocol`, when set.
    pub app_protocol: Option<String>,
}

/// An EndpointSlice reduced to its Service, ports and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The namespace.
    pub namespace: String,
    /// The slice's name.
    pub name: String,
    /// The Service it belongs to (`kubernetes.io/service-name` label).
    pub service: String,
    /// Port names (matching the Service's port names) and target port numbers.
    pub ports: Vec<(Option<String>, u16)>,
    /// The endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// Its addresses (Kubernetes allows one per endpoint in practice).
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; an absent condition counts as ready.
    pub ready: bool,
    /// The pod it is, from `targetRef`, when it is a pod.
    pub pod: Option<String>,
}

/// A Pod reduced to what identity, metrics labels and inbound policy need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// `status.podIPs`.
    pub ips: Vec<IpAddr>,
    /// `spec.serviceAccountName` (`default` when absent).
    pub service_account: String,
    /// Whether it runs our proxy container, i.e. is meshed.
    pub meshed: bool,
    /// The owning workload, e.g. `("deployment", "web")`, for metric labels.
    pub owner: Option<(String, String)>,
    /// Ports whose traffic is opaque (`mesh.linkerd-lite.io/opaque-ports`).
    pub opaque_ports: BTreeSet<u16>,
    /// Protocols declared by container port names (`http-*`, `http2-*`, `grpc-*`).
    pub port_protocols: BTreeMap<u16, AppProtocol>,
}

/// A protocol declared for a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProtocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (including gRPC).
    Http2,
}

/// A route table attached to one Service: the shape both Gateway API HTTPRoute (GAMMA)
/// and SMI TrafficSplit take in the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Where it came from (for HTTPRoute, `apiVersion` is the Gateway API one).
    pub source: Source,
    /// The parent Services, in `source.namespace`.
    pub parents: Vec<RouteParent>,
    /// The rules, in the order written.
    pub rules: Vec<RouteRule>,
    /// Retries allowed on this route (the `mesh.linkerd-lite.io/retry` annotation on
    /// the HTTPRoute); `None` defers to the Service.
    pub retryable: Option<bool>,
}

/// A parent Service of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteParent {
    /// The Service's name.
    pub service: String,
    /// The port; `None` attaches to every port.
    pub port: Option<u16>,
}

/// One rule: requests matching any of `matches` go to `backends`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// The matches; empty matches every request.
    pub matches: Vec<RouteMatch>,
    /// The weighted backends; empty means the parent Service.
    pub backends: Vec<RouteBackend>,
    /// The request timeout (HTTPRoute `timeouts.request`).
    pub timeout: Option<Duration>,
}

/// One request match: every present condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteMatch {
    /// The path condition.
    pub path: Option<PathMatch>,
    /// The method, upper-case.
    pub method: Option<String>,
    /// Header conditions (names lower-case).
    pub headers: Vec<(String, ValueMatch)>,
    /// Query parameter conditions.
    pub query_params: Vec<(String, ValueMatch)>,
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A path prefix, on segment boundaries.
    Prefix(String),
    /// A regular expression anchored at the start of the path.
    Regex(String),
}

/// A header or query parameter value condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueMatch {
    /// The exact value.
    Exact(String),
    /// A regular expression over the whole value.
    Regex(String),
}

/// A weighted backend Service of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteBackend {
    /// The Service's name, in the route's namespace.
    pub service: String,
    /// The port; `None` is the parent's port.
    pub port: Option<u16>,
    /// Relative weight in milli-units; zero sends no traffic.
    pub weight_milli: u32,
}

/// Everything the index can hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A Pod.
    Pod(Pod),
    /// A TrafficSplit (any version).
    Split(Split),
    /// An HTTPRouteGroup (any version).
    HttpRouteGroup(HttpRouteGroup),
    /// A TCPRoute or UDPRoute (any version).
    PortRoute(PortRoute),
    /// A TrafficTarget (any version).
    AccessRule(AccessRule),
    /// A Gateway API HTTPRoute whose parent is a Service.
    HttpRoute(Route),
}

/// The kinds of [`Object`], used to name objects for deletion and re-listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Service.
    Service,
    /// EndpointSlice.
    EndpointSlice,
    /// Pod.
    Pod,
    /// TrafficSplit.
    TrafficSplit,
    /// HTTPRouteGroup.
    HttpRouteGroup,
    /// TCPRoute.
    TcpRoute,
    /// UDPRoute.
    UdpRoute,
    /// TrafficTarget.
    TrafficTarget,
    /// Gateway API HTTPRoute.
    HttpRoute,
}

impl Kind {
    /// Every kind, for metrics.
    pub const ALL: [Kind; 9] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::TrafficSplit,
        Kind::HttpRouteGroup,
        Kind::TcpRoute,
        Kind::UdpRoute,
        Kind::TrafficTarget,
        Kind::HttpRoute,
    ];

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
            Kind::TrafficTarget => "TrafficTarget",
            Kind::HttpRoute => "HTTPRoute",
        }
    }
}

/// An object's identity: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The kind.
    pub kind: Kind,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

impl Object {
    /// The object's identity.
    pub fn object_ref(&self) -> ObjectRef {
        let (kind, namespace, name) = match self {
            Object::Service(s) => (Kind::Service, &s.namespace, &s.name),
            Object::EndpointSlice(s) => (Kind::EndpointSlice, &s.namespace, &s.name),
            Object::Pod(p) => (Kind::Pod, &p.namespace, &p.name),
            Object::Split(s) => (Kind::TrafficSplit, &s.source.namespace, &s.source.name),
            Object::HttpRouteGroup(g) => {
                (Kind::HttpRouteGroup, &g.source.namespace, &g.source.name)
            }
            Object::PortRoute(r) => {
                let kind = match r.kind {
                    smi_crds::model::RouteKind::UdpRoute => Kind::UdpRoute,
                    _ => Kind::TcpRoute,
                };
                (kind, &r.source.namespace, &r.source.name)
            }
            Object::AccessRule(a) => (Kind::TrafficTarget, &a.source.namespace, &a.source.name),
            Object::HttpRoute(r) => (Kind::HttpRoute, &r.source.namespace, &r.source.name),
        };
        ObjectRef {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
        }
    }
}

/// One change to the index.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Add or replace an object.
    Upsert(Object),
    /// Remove an object (absent objects are ignored).
    Delete(ObjectRef),
}
