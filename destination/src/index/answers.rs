//! What the index answers: endpoint sets, outbound policies and inbound servers, in
//! protocol-neutral form. The gRPC layer turns them into proxy API messages.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::objects::RouteMatch;

/// The endpoints of a Service port (or of a bare address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Whether the Service (or address) is known at all; `false` answers
    /// `NoEndpoints { exists: false }`.
    pub exists: bool,
    /// Labels for the whole set (`namespace`, `service`).
    pub labels: BTreeMap<String, String>,
    /// The ready endpoints, by address.
    pub endpoints: BTreeMap<SocketAddr, Endpoint>,
}

/// One ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Its load-balancing weight.
    pub weight: u32,
    /// The TLS identity it proves, only when its pod is meshed.
    pub identity: Option<String>,
    /// How to talk to it.
    pub hint: ProtocolHint,
    /// Metric labels: `namespace`, `pod`, `serviceaccount` and the owner workload.
    pub labels: BTreeMap<String, String>,
}

/// A protocol hint for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolHint {
    /// Nothing known: the client detects.
    Unknown,
    /// The endpoint's proxy accepts HTTP/2 from other proxies.
    H2,
    /// The port is opaque; send it through the proxy's inbound port.
    Opaque {
        /// The endpoint proxy's inbound port.
        inbound_port: u16,
    },
}

/// The default endpoint weight, as Linkerd uses.
pub const DEFAULT_WEIGHT: u32 = 10_000;

/// The outbound policy of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The port.
    pub port: u16,
    /// `svc.ns.svc.cluster-domain:port`.
    pub authority: String,
    /// Opaque TCP rather than protocol detection.
    pub opaque: bool,
    /// The routes, highest precedence first.
    pub routes: Vec<OutboundRoute>,
    /// Consecutive failures before an endpoint is ejected; `None` disables accrual.
    pub failure_accrual: Option<u32>,
}

/// Where a route came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteOrigin {
    /// The parent Service itself, when nothing else routes it.
    Default,
    /// An SMI TrafficSplit.
    TrafficSplit {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A Gateway API HTTPRoute.
    HttpRoute {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// One outbound route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRoute {
    /// Where it came from.
    pub origin: RouteOrigin,
    /// Its rules.
    pub rules: Vec<OutboundRule>,
}

/// One outbound rule: matches, weighted backends, timeout and retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRule {
    /// The matches; never empty (a catch-all is `PathPrefix /`).
    pub matches: Vec<RouteMatch>,
    /// The backends with non-zero weight; never empty.
    pub backends: Vec<Backend>,
    /// The request timeout.
    pub timeout: Option<Duration>,
    /// Whether failures may be retried.
    pub retry: bool,
}

/// A weighted backend Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Its namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The port.
    pub port: u16,
    /// Its relative weight.
    pub weight: u32,
    /// `svc.ns.svc.cluster-domain:port`, the name to resolve with `Destination.Get`.
    pub authority: String,
}

/// The inbound policy of a pod port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundServer {
    /// The protocol.
    pub protocol: InboundProtocol,
    /// The pod's IPs.
    pub server_ips: Vec<IpAddr>,
    /// Who may connect (checked for non-HTTP traffic).
    pub authorizations: Vec<Authz>,
    /// HTTP routes with their own authorizations (checked for HTTP traffic).
    pub http_routes: Vec<InboundRoute>,
    /// Labels naming the server in metrics.
    pub labels: BTreeMap<String, String>,
}

/// An inbound protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundProtocol {
    /// Detect HTTP, falling back to opaque TCP.
    Detect,
    /// HTTP/1.
    Http1,
    /// HTTP/2.
    Http2,
    /// Opaque TCP.
    Opaque,
}

/// An authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authz {
    /// What it is named after: a TrafficTarget, or the default policy.
    pub origin: AuthzOrigin,
    /// Which clients it admits (from any network).
    pub clients: Clients,
}

/// Where an authorization came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthzOrigin {
    /// The mesh-wide default policy, by name.
    Default(&'static str),
    /// A TrafficTarget.
    TrafficTarget {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// The clients an authorization admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clients {
    /// Anyone, with or without mesh TLS.
    Unauthenticated,
    /// Any client with a mesh TLS identity.
    AnyMeshTls,
    /// Clients with one of these mesh TLS identities.
    Identities(Vec<String>),
}

/// An inbound HTTP route and who may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundRoute {
    /// Its name, for metrics.
    pub name: String,
    /// Its matches.
    pub matches: Vec<RouteMatch>,
    /// Who may use it.
    pub authorizations: Vec<Authz>,
}
