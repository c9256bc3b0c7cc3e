//! `OutboundPolicies.Get/Watch`: a Service port's routes, backends and balancing.

use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::{http_route, meta, outbound as api};
use tonic::{Request, Response, Status};

use super::target::{Target, parse_authority};
use super::{BoxStream, DETECT_TIMEOUT, Discover, duration, invalid};
use crate::index::answers::{Backend, OutboundPolicy, OutboundRule, RouteOrigin};
use crate::index::objects::{PathMatch, RouteMatch, ValueMatch};
use crate::index::{OutboundWatch, ServicePortKey};
use crate::metrics::Metrics;

const GET: &str = "OutboundPolicies.Get";
const WATCH: &str = "OutboundPolicies.Watch";

/// Peak-EWMA's RTT estimate for an endpoint with no samples yet (Linkerd's default).
const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Peak-EWMA's decay window (Linkerd's default).
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Requests a backend may queue while it has no ready endpoint.
const QUEUE_CAPACITY: u32 = 100;
/// How long a backend may have no ready endpoint before its queue fails fast.
const FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
/// Retries per request when a route allows them.
const MAX_RETRIES: u32 = 3;
/// Largest request body buffered for a retry.
const MAX_RETRY_BODY: u32 = 64 * 1024;

/// The `OutboundPolicies` service.
#[derive(Debug)]
pub struct OutboundService<D> {
    discover: Arc<D>,
    metrics: Metrics,
}

impl<D> OutboundService<D> {
    /// A service answering from `discover`.
    pub fn new(discover: Arc<D>, metrics: Metrics) -> Self {
        Self { discover, metrics }
    }
}

impl<D: Discover> OutboundService<D> {
    fn lookup(&self, spec: api::TrafficSpec, rpc: &'static str) -> Result<OutboundWatch, Status> {
        use api::traffic_spec::Target as T;
        let target = match spec.target {
            Some(T::Authority(a)) => parse_authority(&a, &self.discover.cluster_domain())
                .map_err(|e| invalid(&self.metrics, rpc, e))?,
            Some(T::Addr(addr)) => match std::net::SocketAddr::try_from(addr) {
                Ok(addr) => Target::Addr(addr),
                Err(_) => {
                    self.metrics.error(rpc, "invalid_argument");
                    return Err(Status::invalid_argument(
                        "traffic spec address is not an IP address",
                    ));
                }
            },
            None => {
                self.metrics.error(rpc, "invalid_argument");
                return Err(Status::invalid_argument("traffic spec names no target"));
            }
        };
        let key: Option<ServicePortKey> = match target {
            Target::Service(k) => Some(k),
            Target::Addr(addr) => self.discover.service_for_addr(addr),
        };
        let key = key.ok_or_else(|| Status::not_found("no Service has this address"))?;
        let rx = self.discover.watch_outbound(key.clone());
        if rx.borrow().is_none() {
            return Err(Status::not_found(format!(
                "service {}/{} is not known",
                key.namespace, key.name
            )));
        }
        Ok(rx)
    }
}

#[tonic::async_trait]
impl<D: Discover> api::outbound_policies_server::OutboundPolicies for OutboundService<D> {
    type WatchStream = BoxStream<api::OutboundPolicy>;

    async fn get(
        &self,
        req: Request<api::TrafficSpec>,
    ) -> Result<Response<api::OutboundPolicy>, Status> {
        let rx = self.lookup(req.into_inner(), GET)?;
        let policy = rx.borrow().clone();
        let policy = policy.ok_or_else(|| Status::not_found("service is not known"))?;
        self.metrics.sent(GET);
        Ok(Response::new(to_proto(&policy)))
    }

    async fn watch(
        &self,
        req: Request<api::TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = self.lookup(req.into_inner(), WATCH)?;
        // The Service went away: end the stream so the proxy falls back.
        Ok(Response::new(super::policy_stream(
            rx,
            self.metrics.clone(),
            WATCH,
            "service was deleted",
            to_proto,
        )))
    }
}

/// The metadata naming a Service port.
pub(crate) fn service_meta(namespace: &str, name: &str, port: u16) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".to_string(),
            kind: "Service".to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            section: String::new(),
            port: u32::from(port),
        })),
    }
}

fn origin_meta(origin: &RouteOrigin) -> meta::Metadata {
    let resource = |group: &str, kind: &str, namespace: &str, name: &str| meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: group.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            section: String::new(),
            port: 0,
        })),
    };
    match origin {
        RouteOrigin::Default => meta::Metadata {
            kind: Some(meta::metadata::Kind::Default("default".to_string())),
        },
        RouteOrigin::TrafficSplit { namespace, name } => {
            resource("split.smi-spec.io", "TrafficSplit", namespace, name)
        }
        RouteOrigin::HttpRoute { namespace, name } => {
            resource("gateway.networking.k8s.io", "HTTPRoute", namespace, name)
        }
    }
}

/// Turns an outbound policy into the proxy API's message.
pub(crate) fn to_proto(policy: &OutboundPolicy) -> api::OutboundPolicy {
    use api::proxy_protocol::{Detect, Http1, Http2, Kind, Opaque};
    let accrual = policy.failure_accrual.map(failure_accrual);
    let http_routes: Vec<api::HttpRoute> = policy
        .routes
        .iter()
        .map(|r| api::HttpRoute {
            metadata: Some(origin_meta(&r.origin)),
            hosts: Vec::new(),
            rules: r.rules.iter().map(http_rule).collect(),
        })
        .collect();
    let opaque = Opaque {
        routes: vec![opaque_route(policy)],
    };
    let kind = if policy.opaque {
        Kind::Opaque(opaque)
    } else {
        Kind::Detect(Detect {
            timeout: Some(duration(DETECT_TIMEOUT)),
            opaque: Some(opaque),
            http1: Some(Http1 {
                routes: http_routes.clone(),
                failure_accrual: accrual,
            }),
            http2: Some(Http2 {
                routes: http_routes,
                failure_accrual: accrual,
            }),
        })
    };
    api::OutboundPolicy {
        protocol: Some(api::ProxyProtocol { kind: Some(kind) }),
        metadata: Some(service_meta(
            &policy.namespace,
            &policy.service,
            policy.port,
        )),
    }
}

/// Opaque traffic cannot be matched, so it follows the catch-all rule of the first
/// route (the split, when there is one).
fn opaque_route(policy: &OutboundPolicy) -> api::OpaqueRoute {
    use api::opaque_route::{Distribution, RouteBackend, Rule, WeightedRouteBackend, distribution};
    let first = policy.routes.first();
    let rule = first.and_then(|r| {
        r.rules
            .iter()
            .find(|rule| rule.matches.contains(&crate::index::match_all()))
    });
    let backends: Vec<Backend> = match rule {
        Some(rule) => rule.backends.clone(),
        None => vec![Backend {
            namespace: policy.namespace.clone(),
            service: policy.service.clone(),
            port: policy.port,
            weight: 1000,
            authority: policy.authority.clone(),
        }],
    };
    api::OpaqueRoute {
        metadata: Some(first.map_or_else(
            || origin_meta(&RouteOrigin::Default),
            |r| origin_meta(&r.origin),
        )),
        rules: vec![Rule {
            backends: Some(Distribution {
                kind: Some(distribution::Kind::RandomAvailable(
                    distribution::RandomAvailable {
                        backends: backends
                            .iter()
                            .map(|b| WeightedRouteBackend {
                                backend: Some(RouteBackend {
                                    backend: Some(backend(b)),
                                    filters: Vec::new(),
                                }),
                                weight: b.weight,
                            })
                            .collect(),
                    },
                )),
            }),
            filters: Vec::new(),
        }],
    }
}

fn http_rule(rule: &OutboundRule) -> api::http_route::Rule {
    use api::http_route::{Distribution, RouteBackend, WeightedRouteBackend, distribution};
    api::http_route::Rule {
        matches: rule.matches.iter().map(http_match).collect(),
        filters: Vec::new(),
        backends: Some(Distribution {
            kind: Some(distribution::Kind::RandomAvailable(
                distribution::RandomAvailable {
                    backends: rule
                        .backends
                        .iter()
                        .map(|b| WeightedRouteBackend {
                            backend: Some(RouteBackend {
                                backend: Some(backend(b)),
                                filters: Vec::new(),
                                ..Default::default()
                            }),
                            weight: b.weight,
                        })
                        .collect(),
                },
            )),
        }),
        timeouts: rule.timeout.map(|t| http_route::Timeouts {
            request: Some(duration(t)),
            response: None,
            idle: None,
        }),
        retry: rule.retry.then(|| api::http_route::Retry {
            max_retries: MAX_RETRIES,
            max_request_bytes: MAX_RETRY_BODY,
            conditions: Some(api::http_route::retry::Conditions {
                status_ranges: vec![api::http_route::retry::conditions::StatusRange {
                    start: 500,
                    end: 599,
                }],
            }),
            timeout: None,
            backoff: Some(api::ExponentialBackoff {
                min_backoff: Some(duration(Duration::from_millis(25))),
                max_backoff: Some(duration(Duration::from_millis(250))),
                jitter_ratio: 1.0,
                respect_retry_after_hint: false,
            }),
        }),
        ..Default::default()
    }
}

/// A route match in the proxy API's form (shared with inbound routes).
pub(crate) fn http_match(m: &RouteMatch) -> http_route::HttpRouteMatch {
    use http_route::{header_match, path_match, query_param_match};
    http_route::HttpRouteMatch {
        path: m.path.as_ref().map(|p| http_route::PathMatch {
            kind: Some(match p {
                PathMatch::Exact(s) => path_match::Kind::Exact(s.clone()),
                PathMatch::Prefix(s) => path_match::Kind::Prefix(s.clone()),
                PathMatch::Regex(s) => path_match::Kind::Regex(s.clone()),
            }),
        }),
        headers: m
            .headers
            .iter()
            .map(|(name, v)| http_route::HeaderMatch {
                name: name.clone(),
                value: Some(match v {
                    ValueMatch::Exact(s) => header_match::Value::Exact(s.clone().into_bytes()),
                    ValueMatch::Regex(s) => header_match::Value::Regex(s.clone()),
                }),
            })
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|(name, v)| http_route::QueryParamMatch {
                name: name.clone(),
                value: Some(match v {
                    ValueMatch::Exact(s) => query_param_match::Value::Exact(s.clone()),
                    ValueMatch::Regex(s) => query_param_match::Value::Regex(s.clone()),
                }),
            })
            .collect(),
        method: m
            .method
            .as_ref()
            .and_then(|s| http::Method::from_bytes(s.as_bytes()).ok())
            .map(Into::into),
    }
}

fn backend(b: &Backend) -> api::Backend {
    use api::backend::{BalanceP2c, EndpointDiscovery, Kind, balance_p2c, endpoint_discovery};
    api::Backend {
        metadata: Some(service_meta(&b.namespace, &b.service, b.port)),
        queue: Some(api::Queue {
            capacity: QUEUE_CAPACITY,
            failfast_timeout: Some(duration(FAILFAST_TIMEOUT)),
        }),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: b.authority.clone(),
                    },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: Some(duration(EWMA_DEFAULT_RTT)),
                decay: Some(duration(EWMA_DECAY)),
            })),
        })),
    }
}

fn failure_accrual(max_failures: u32) -> api::FailureAccrual {
    use api::failure_accrual::{ConsecutiveFailures, Kind};
    api::FailureAccrual {
        kind: Some(Kind::ConsecutiveFailures(ConsecutiveFailures {
            max_failures,
            backoff: Some(api::ExponentialBackoff {
                min_backoff: Some(duration(Duration::from_secs(1))),
                max_backoff: Some(duration(Duration::from_secs(60))),
                jitter_ratio: 0.5,
                respect_retry_after_hint: false,
            }),
        })),
        ejection: None,
    }
}
