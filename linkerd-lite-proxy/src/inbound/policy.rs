//! Inbound policy per port, from `InboundServerPolicies.WatchPort`: whether the
//! port's traffic is opaque, which clients its server admits, and its HTTP routes,
//! each with its own authorizations. Without a policy service (or a workload name),
//! or until the first answer, the configured default policy applies.
//!
//! Enforcement follows Linkerd:
//! - an opaque (TCP) connection is checked once against the server-level
//!   authorizations;
//! - each HTTP request picks the best-matching route ([`crate::route`]) and is
//!   checked against that route's authorizations only: no route is 404, a route
//!   that does not admit the client is 403. An HTTP server without routes gets one
//!   catch-all route carrying the server-level authorizations.
//!
//! A policy is compiled once per update (routes, regexes, metric handles) and
//! published on a watch channel, so open connections use it from their next
//! request. A policy that does not compile is logged with the offending field and
//! ignored: the port keeps its previous policy, or admits nobody if it had none.
//! Rate limits and route filters in the policy are not enforced.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::Request;
use linkerd2_proxy_api::inbound::{
    self as api, inbound_server_policies_client::InboundServerPoliciesClient, proxy_protocol::Kind,
};
use prometheus_client::metrics::counter::Counter;
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;

use super::authz::{Authorization, PolicyError, default_labels, labels};
use crate::{
    env::DefaultPolicy,
    http::ProxyError,
    metrics::{AuthzLabels, Metrics, ResourceLabels},
    route::{self, HostMatch, RouteMatch},
};

/// How long the first connection to a port waits for its policy before the default
/// applies.
const FIRST_POLICY_WAIT: Duration = Duration::from_secs(1);

/// One HTTP route of a port, compiled.
#[derive(Debug)]
struct HttpRoute {
    hosts: HostMatch,
    /// Every rule's matches; any of them selects the route.
    matches: Vec<RouteMatch>,
    /// Each authorization with its `inbound_http_authz_allow_total` handle.
    authorizations: Box<[(Authorization, Counter)]>,
    /// `inbound_http_authz_deny_total` for this route.
    deny: Counter,
    labels: ResourceLabels,
}

impl HttpRoute {
    fn new(
        hosts: HostMatch,
        matches: Vec<RouteMatch>,
        authorizations: Vec<Authorization>,
        labels: ResourceLabels,
        port: u16,
        metrics: &Metrics,
    ) -> Self {
        let key = |authz: Option<ResourceLabels>| AuthzLabels {
            target_port: port,
            route: labels.clone(),
            authz,
        };
        let authorizations = authorizations
            .into_iter()
            .map(|a| {
                let allow = metrics
                    .http_authz_allow
                    .get_or_create_owned(&key(Some(a.labels.clone())));
                (a, allow)
            })
            .collect();
        Self {
            deny: metrics.http_authz_deny.get_or_create_owned(&key(None)),
            hosts,
            matches,
            authorizations,
            labels,
        }
    }

    fn from_proto(r: &api::HttpRoute, port: u16, metrics: &Metrics) -> Result<Self, PolicyError> {
        let hosts = HostMatch::from_proto(&r.hosts)?;
        if r.rules.is_empty() {
            return Err(PolicyError::invalid("rules", "empty; a route needs a rule"));
        }
        let mut matches = Vec::new();
        for (i, rule) in r.rules.iter().enumerate() {
            let ms = RouteMatch::from_protos(&rule.matches)
                .map_err(|e| e.within(&format!("rules[{i}]")))?;
            matches.extend(ms);
        }
        let authorizations = authorizations(&r.authorizations)?;
        let labels = labels(r.metadata.as_ref(), &HashMap::new());
        Ok(Self::new(
            hosts,
            matches,
            authorizations,
            labels,
            port,
            metrics,
        ))
    }

    /// The catch-all route of a server that names none.
    fn catch_all(authorizations: Vec<Authorization>, port: u16, metrics: &Metrics) -> Self {
        Self::new(
            HostMatch::any(),
            vec![RouteMatch::any()],
            authorizations,
            default_labels("default"),
            port,
            metrics,
        )
    }
}

/// The compiled policy of one inbound port.
#[derive(Debug)]
pub struct PortPolicy {
    /// Traffic on the port is opaque TCP: no protocol detection.
    pub opaque: bool,
    /// Server-level authorizations, for opaque connections.
    authorizations: Box<[Authorization]>,
    http_routes: Box<[HttpRoute]>,
}

impl PortPolicy {
    /// The policy a default applies to `port`.
    pub fn from_default(default: DefaultPolicy, port: u16, metrics: &Metrics) -> Self {
        let name = match default {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::Deny => "deny",
        };
        let authorizations: Vec<Authorization> = match default {
            DefaultPolicy::AllUnauthenticated => vec![Authorization::default_policy(false, name)],
            DefaultPolicy::AllAuthenticated => vec![Authorization::default_policy(true, name)],
            DefaultPolicy::Deny => vec![],
        };
        Self {
            opaque: false,
            http_routes: Box::new([HttpRoute::catch_all(authorizations.clone(), port, metrics)]),
            authorizations: authorizations.into(),
        }
    }

    /// Admits nobody: what a port gets when its first policy does not compile.
    fn deny_all(opaque: bool, port: u16, metrics: &Metrics) -> Self {
        Self {
            opaque,
            ..Self::from_default(DefaultPolicy::Deny, port, metrics)
        }
    }

    /// Compiles the policy a `Server` message describes for `port`; errors name the
    /// field, e.g. `protocol.detect.http_routes[1].rules[0].matches[0].path.regex`.
    pub fn from_server(
        server: &api::Server,
        port: u16,
        metrics: &Metrics,
    ) -> Result<Self, PolicyError> {
        let authorizations = authorizations(&server.authorizations)?;
        let kind = server.protocol.as_ref().and_then(|p| p.kind.as_ref());
        let (field, routes): (&str, &[api::HttpRoute]) = match kind {
            Some(Kind::Detect(d)) => ("protocol.detect.http_routes", &d.http_routes),
            Some(Kind::Http1(h)) => ("protocol.http1.routes", &h.routes),
            Some(Kind::Http2(h)) => ("protocol.http2.routes", &h.routes),
            // gRPC routes are not matched: their requests are checked against the
            // server-level authorizations, like a server without routes.
            Some(Kind::Grpc(_) | Kind::Opaque(_) | Kind::Tls(_)) | None => ("", &[]),
        };
        let http_routes = if routes.is_empty() {
            vec![HttpRoute::catch_all(authorizations.clone(), port, metrics)]
        } else {
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    HttpRoute::from_proto(r, port, metrics)
                        .map_err(|e| e.within(&format!("{field}[{i}]")))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Self {
            opaque: matches!(kind, Some(Kind::Opaque(_))),
            authorizations: authorizations.into(),
            http_routes: http_routes.into(),
        })
    }

    /// Whether a client at `ip`, with the mTLS identity `client_id` if any, may
    /// open an opaque connection (server-level authorizations).
    pub fn authorize(&self, ip: IpAddr, client_id: Option<&str>) -> bool {
        self.authorizations.iter().any(|a| a.admits(ip, client_id))
    }

    /// Checks one HTTP request from a client at `ip` with the mTLS identity
    /// `client_id`: picks its route and that route's authorizations, and counts the
    /// decision. Allocates nothing.
    pub fn authorize_http<B>(
        &self,
        req: &Request<B>,
        ip: IpAddr,
        client_id: Option<&str>,
    ) -> Result<(), ProxyError> {
        let candidates = self
            .http_routes
            .iter()
            .map(|r| (&r.hosts, r.matches.as_slice()));
        let Some(i) = route::best_with_hosts(req, candidates) else {
            tracing::debug!(path = req.uri().path(), "no inbound route matches");
            return Err(ProxyError::NoRoute);
        };
        let Some(r) = self.http_routes.get(i) else {
            return Err(ProxyError::NoRoute);
        };
        match r
            .authorizations
            .iter()
            .find(|(a, _)| a.admits(ip, client_id))
        {
            Some((_, allow)) => {
                allow.inc();
                Ok(())
            }
            None => {
                r.deny.inc();
                tracing::debug!(
                    route = &*r.labels.name,
                    %ip,
                    client_id,
                    "route does not admit the client"
                );
                Err(ProxyError::Forbidden)
            }
        }
    }
}

// === Policies ===

type PolicyRx = watch::Receiver<Option<Arc<PortPolicy>>>;

/// The current policy of one port; cheap to clone, follows updates.
#[derive(Clone, Debug)]
pub struct PortWatch {
    rx: PolicyRx,
    default: Arc<PortPolicy>,
}

impl PortWatch {
    /// The policy now in force: the latest from the policy service, or the
    /// default.
    pub fn current(&self) -> Arc<PortPolicy> {
        let current = self.rx.borrow().clone();
        current.unwrap_or_else(|| self.default.clone())
    }
}

struct Watched {
    watch: PortWatch,
    _task: Option<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Inbound policies, watched per port.
pub struct Policies {
    client: Option<(InboundServerPoliciesClient<Channel>, String)>,
    default: DefaultPolicy,
    metrics: Metrics,
    ports: Mutex<HashMap<u16, Watched>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// Policies from the service on `channel` for `workload`; with either missing,
    /// always `default`. Authorization decisions are counted in `metrics`.
    pub fn new(
        channel: Option<Channel>,
        workload: Option<String>,
        default: DefaultPolicy,
        metrics: Metrics,
    ) -> Self {
        Self {
            client: channel
                .zip(workload)
                .map(|(c, w)| (InboundServerPoliciesClient::new(c), w)),
            default,
            metrics,
            ports: Mutex::default(),
        }
    }

    /// The policy of `port`; the first call for a port starts watching it and
    /// waits briefly for the first answer.
    pub async fn get(&self, port: u16) -> PortWatch {
        let watch = {
            let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            ports
                .entry(port)
                .or_insert_with(|| self.start(port))
                .watch
                .clone()
        };
        if self.client.is_some() && watch.rx.borrow().is_none() {
            let mut rx = watch.rx.clone();
            let _ = tokio::time::timeout(FIRST_POLICY_WAIT, rx.wait_for(Option::is_some)).await;
        }
        watch
    }

    fn start(&self, port: u16) -> Watched {
        let default = Arc::new(PortPolicy::from_default(self.default, port, &self.metrics));
        let (tx, rx) = watch::channel(None);
        let task = self.client.as_ref().map(|(client, workload)| {
            let spec = api::PortSpec {
                workload: workload.clone(),
                port: u32::from(port),
            };
            let metrics = self.metrics.clone();
            AbortOnDrop(tokio::spawn(watch_port(client.clone(), spec, tx, metrics)))
        });
        Watched {
            watch: PortWatch { rx, default },
            _task: task,
        }
    }
}

async fn watch_port(
    mut client: InboundServerPoliciesClient<Channel>,
    spec: api::PortSpec,
    tx: watch::Sender<Option<Arc<PortPolicy>>>,
    metrics: Metrics,
) {
    let port = u16::try_from(spec.port).unwrap_or_default();
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.watch_port(spec.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                while let Ok(Some(server)) = stream.message().await {
                    backoff = Duration::from_millis(100);
                    publish(&tx, &server, port, &metrics);
                }
            }
            Err(status) => {
                tracing::debug!(port, %status, "inbound policy lookup failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Compiles `server` and publishes it; a policy that does not compile leaves the
/// previous one in force (or, for a first policy, one that admits nobody).
fn publish(
    tx: &watch::Sender<Option<Arc<PortPolicy>>>,
    server: &api::Server,
    port: u16,
    m: &Metrics,
) {
    match PortPolicy::from_server(server, port, m) {
        Ok(policy) => {
            tx.send_replace(Some(Arc::new(policy)));
        }
        Err(error) => {
            let had_policy = tx.borrow().is_some();
            tracing::warn!(
                port,
                %error,
                "ignoring an inbound policy that does not compile; {}",
                if had_policy {
                    "keeping the previous one"
                } else {
                    "admitting nobody until a valid one arrives"
                }
            );
            if !had_policy {
                let opaque = matches!(
                    server.protocol.as_ref().and_then(|p| p.kind.as_ref()),
                    Some(Kind::Opaque(_))
                );
                tx.send_replace(Some(Arc::new(PortPolicy::deny_all(opaque, port, m))));
            }
        }
    }
}

/// Compiles a list of authorizations; an error names the failing entry.
fn authorizations(list: &[api::Authz]) -> Result<Vec<Authorization>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            Authorization::from_proto(a).map_err(|e| e.within(&format!("authorizations[{i}]")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
