//! `Destination.Get` (endpoint updates as diffs) and `Destination.GetProfile`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::destination as api;
use linkerd2_proxy_api::meta;
use tonic::{Request, Response, Status};

use super::target::{Target, parse_authority};
use super::{BoxStream, Discover, duration, invalid};
use crate::index::answers::{Endpoint, EndpointSet, OutboundPolicy, ProtocolHint, RouteOrigin};
use crate::index::{EndpointTarget, EndpointsWatch, OutboundWatch};
use crate::metrics::{Metrics, WatcherGuard};

const GET: &str = "Destination.Get";
const GET_PROFILE: &str = "Destination.GetProfile";

/// The `Destination` service.
#[derive(Debug)]
pub struct DestinationService<D> {
    discover: Arc<D>,
    metrics: Metrics,
}

impl<D> DestinationService<D> {
    /// A service answering from `discover`.
    pub fn new(discover: Arc<D>, metrics: Metrics) -> Self {
        Self { discover, metrics }
    }
}

#[tonic::async_trait]
impl<D: Discover> api::destination_server::Destination for DestinationService<D> {
    type GetStream = BoxStream<api::Update>;
    type GetProfileStream = BoxStream<api::DestinationProfile>;

    async fn get(
        &self,
        req: Request<api::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let path = req.into_inner().path;
        let target = match parse_authority(&path, &self.discover.cluster_domain())
            .map_err(|e| invalid(&self.metrics, GET, e))?
        {
            Target::Service(k) => EndpointTarget::Service {
                namespace: k.namespace,
                name: k.name,
                port: k.port,
            },
            Target::Addr(addr) => EndpointTarget::Addr(addr),
        };
        let rx = self.discover.watch_endpoints(target);
        Ok(Response::new(endpoint_stream(rx, self.metrics.clone())))
    }

    async fn get_profile(
        &self,
        req: Request<api::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let path = req.into_inner().path;
        let target = parse_authority(&path, &self.discover.cluster_domain())
            .map_err(|e| invalid(&self.metrics, GET_PROFILE, e))?;
        let source = match target {
            Target::Service(key) => ProfileSource::Service(self.discover.watch_outbound(key)),
            Target::Addr(addr) => match self.discover.service_for_addr(addr) {
                Some(key) => ProfileSource::Service(self.discover.watch_outbound(key)),
                None => ProfileSource::Endpoint(
                    addr,
                    self.discover.watch_endpoints(EndpointTarget::Addr(addr)),
                ),
            },
        };
        Ok(Response::new(profile_stream(source, self.metrics.clone())))
    }
}

// === Get ===

struct GetState {
    rx: EndpointsWatch,
    /// What the client holds; `None` before the first message.
    sent: Option<BTreeMap<SocketAddr, Endpoint>>,
    pending: VecDeque<api::Update>,
    metrics: Metrics,
    _guard: WatcherGuard,
}

fn endpoint_stream(rx: EndpointsWatch, metrics: Metrics) -> BoxStream<api::Update> {
    let state = GetState {
        rx,
        sent: None,
        pending: VecDeque::new(),
        _guard: metrics.watcher(GET),
        metrics,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(update) = st.pending.pop_front() {
                st.metrics.sent(GET);
                return Some((Ok(update), st));
            }
            if st.sent.is_some() && st.rx.changed().await.is_err() {
                return None;
            }
            let set = st.rx.borrow_and_update().clone();
            st.pending = diff(st.sent.as_ref(), &set);
            st.sent = Some(set.endpoints.clone());
        }
    }))
}

/// The updates that take a client from `sent` to `set`.
fn diff(sent: Option<&BTreeMap<SocketAddr, Endpoint>>, set: &EndpointSet) -> VecDeque<api::Update> {
    use api::update::Update as U;
    let mut out = VecDeque::new();
    if set.endpoints.is_empty() {
        if sent.is_none_or(|s| !s.is_empty()) {
            out.push_back(api::Update {
                update: Some(U::NoEndpoints(api::NoEndpoints { exists: set.exists })),
            });
        }
        return out;
    }
    let empty = BTreeMap::new();
    let sent = sent.unwrap_or(&empty);
    let removed: Vec<_> = sent
        .keys()
        .filter(|a| !set.endpoints.contains_key(a))
        .map(|a| (*a).into())
        .collect();
    if !removed.is_empty() {
        out.push_back(api::Update {
            update: Some(U::Remove(api::AddrSet { addrs: removed })),
        });
    }
    let added: Vec<_> = set
        .endpoints
        .values()
        .filter(|e| sent.get(&e.addr) != Some(*e))
        .map(weighted_addr)
        .collect();
    if !added.is_empty() {
        out.push_back(api::Update {
            update: Some(U::Add(api::WeightedAddrSet {
                addrs: added,
                metric_labels: to_hash(&set.labels),
            })),
        });
    }
    out
}

fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(crate) fn weighted_addr(e: &Endpoint) -> api::WeightedAddr {
    use api::protocol_hint::{self, Protocol};
    let tls_identity = e.identity.as_ref().map(|name| {
        let dns = api::tls_identity::DnsLikeIdentity { name: name.clone() };
        api::TlsIdentity {
            strategy: Some(api::tls_identity::Strategy::DnsLikeIdentity(dns.clone())),
            server_name: Some(dns),
        }
    });
    let protocol_hint = match e.hint {
        ProtocolHint::Unknown => None,
        ProtocolHint::H2 => Some(api::ProtocolHint {
            protocol: Some(Protocol::H2(protocol_hint::H2 {})),
            opaque_transport: None,
        }),
        ProtocolHint::Opaque { inbound_port } => Some(api::ProtocolHint {
            protocol: Some(Protocol::Opaque(protocol_hint::Opaque {})),
            opaque_transport: Some(protocol_hint::OpaqueTransport {
                inbound_port: u32::from(inbound_port),
            }),
        }),
    };
    api::WeightedAddr {
        addr: Some(e.addr.into()),
        weight: e.weight,
        metric_labels: to_hash(&e.labels),
        tls_identity,
        protocol_hint,
        authority_override: None,
        http2: None,
        resource_ref: None,
    }
}

// === GetProfile ===

enum ProfileSource {
    Service(OutboundWatch),
    Endpoint(SocketAddr, EndpointsWatch),
}

impl ProfileSource {
    async fn changed(&mut self) -> bool {
        match self {
            ProfileSource::Service(rx) => rx.changed().await.is_ok(),
            ProfileSource::Endpoint(_, rx) => rx.changed().await.is_ok(),
        }
    }

    fn current(&mut self) -> api::DestinationProfile {
        match self {
            ProfileSource::Service(rx) => match rx.borrow_and_update().as_deref() {
                Some(policy) => service_profile(policy),
                None => default_profile(),
            },
            ProfileSource::Endpoint(addr, rx) => {
                let set = rx.borrow_and_update();
                api::DestinationProfile {
                    endpoint: set.endpoints.get(addr).map(weighted_addr),
                    ..default_profile()
                }
            }
        }
    }
}

fn profile_stream(source: ProfileSource, metrics: Metrics) -> BoxStream<api::DestinationProfile> {
    let guard = metrics.watcher(GET_PROFILE);
    let state = (source, None::<api::DestinationProfile>, metrics, guard);
    Box::pin(futures::stream::unfold(
        state,
        |(mut source, last, metrics, guard)| async move {
            loop {
                if last.is_some() && !source.changed().await {
                    return None;
                }
                let profile = source.current();
                if last.as_ref() != Some(&profile) {
                    metrics.sent(GET_PROFILE);
                    return Some((Ok(profile.clone()), (source, Some(profile), metrics, guard)));
                }
            }
        },
    ))
}

/// The retry budget every profile carries: retries may add 20 % to requests, at least
/// 10 per second, over a 10 s window.
fn retry_budget() -> api::RetryBudget {
    api::RetryBudget {
        retry_ratio: 0.2,
        min_retries_per_second: 10,
        ttl: Some(duration(Duration::from_secs(10))),
    }
}

fn default_profile() -> api::DestinationProfile {
    api::DestinationProfile {
        retry_budget: Some(retry_budget()),
        ..Default::default()
    }
}

/// A Service's profile. `dst_overrides` carry the split when the active route table is
/// one rule matching every request (a TrafficSplit without `matches`, or an HTTPRoute
/// with a single catch-all rule); richer tables are only expressible through
/// `OutboundPolicies`.
pub(crate) fn service_profile(policy: &OutboundPolicy) -> api::DestinationProfile {
    let fqdn = policy
        .authority
        .rsplit_once(':')
        .map_or(policy.authority.as_str(), |(h, _)| h)
        .to_string();
    let single = match policy.routes.as_slice() {
        [route] if route.rules.len() == 1 => Some((&route.origin, &route.rules[0])),
        _ => None,
    };
    let catch_all = single.filter(|(_, r)| r.matches == vec![crate::index::match_all()]);
    let dst_overrides = match catch_all {
        Some((origin, rule)) if *origin != RouteOrigin::Default => rule
            .backends
            .iter()
            .map(|b| api::WeightedDst {
                authority: b.authority.clone(),
                weight: b.weight,
                backend_ref: Some(super::outbound::service_meta(
                    &b.namespace,
                    &b.service,
                    b.port,
                )),
            })
            .collect(),
        _ => Vec::new(),
    };
    let routes = match catch_all {
        Some((_, rule)) if rule.timeout.is_some() || rule.retry => vec![api::Route {
            condition: Some(api::RequestMatch {
                r#match: Some(api::request_match::Match::Path(api::PathMatch {
                    regex: ".*".to_string(),
                })),
            }),
            response_classes: vec![api::ResponseClass {
                condition: Some(api::ResponseMatch {
                    r#match: Some(api::response_match::Match::Status(api::HttpStatusRange {
                        min: 500,
                        max: 599,
                    })),
                }),
                is_failure: true,
            }],
            metrics_labels: HashMap::from([("route".to_string(), "default".to_string())]),
            is_retryable: rule.retry,
            timeout: rule.timeout.map(duration),
        }],
        _ => Vec::new(),
    };
    api::DestinationProfile {
        fully_qualified_name: fqdn,
        opaque_protocol: policy.opaque,
        routes,
        retry_budget: Some(retry_budget()),
        dst_overrides,
        endpoint: None,
        parent_ref: Some(super::outbound::service_meta(
            &policy.namespace,
            &policy.service,
            policy.port,
        )),
        profile_ref: None::<meta::Metadata>,
    }
}
