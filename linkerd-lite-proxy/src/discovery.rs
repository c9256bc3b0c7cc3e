//! The discovery client: a `Destination.Get` stream per target, folded into the
//! current set of endpoints and published on a `watch` channel.
//!
//! The stream is reconnected with backoff when it fails; the last known endpoints stay
//! in use meanwhile, and the first update after a reconnect replaces them.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use linkerd2_proxy_api::destination::{
    self as api, destination_client::DestinationClient, protocol_hint, update,
};
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use crate::{
    policy::{self, PolicyState, RouteFamilies},
    profile::{self, Profile},
};

/// One endpoint of a target, as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where the workload listens.
    pub addr: SocketAddr,
    /// The identity to require over mTLS; `None` means plaintext.
    pub identity: Option<Arc<str>>,
    /// Whether the peer is a proxy that accepts HTTP/1 upgraded to HTTP/2.
    pub h2: bool,
    /// Whether the endpoint's traffic is opaque TCP (no protocol detection).
    pub opaque: bool,
    /// The peer proxy's inbound port, to connect to with a transport header.
    pub opaque_transport_port: Option<u16>,
    /// Load-balancing weight (informational; p2c ignores it).
    pub weight: u32,
    /// Metric labels, prefixed with `dst_` and sorted.
    pub labels: Arc<[(Arc<str>, Arc<str>)]>,
}

/// The current answer for a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    /// No answer yet.
    #[default]
    Pending,
    /// Discovery does not know the target; the caller may fall back to the address
    /// it was given.
    NotFound,
    /// The target exists with these endpoints (possibly none).
    Endpoints(Arc<BTreeMap<SocketAddr, Arc<Endpoint>>>),
}

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[error("destination address {addr:?} is not a valid uri authority")]
pub struct ResolverError {
    addr: String,
    #[source]
    source: tonic::transport::Error,
}

/// A client of the destination service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Resolver {
    client: Option<DestinationClient<Channel>>,
    policies: Option<OutboundPoliciesClient<Channel>>,
    context: Arc<str>,
}

/// Aborts the resolution task when dropped.
#[derive(Debug)]
pub struct ResolutionTask(Option<JoinHandle<()>>);

impl ResolutionTask {
    /// No task: nothing to abort.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Spawns `fut`, aborted when the returned handle drops.
    pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(tokio::spawn(fut)))
    }
}

impl Drop for ResolutionTask {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

impl Resolver {
    /// A resolver against `addr` (`host:port`); `None` resolves nothing.
    pub fn new(addr: Option<&str>, context: &str) -> Result<Self, ResolverError> {
        Ok(Self::with_channel(addr.map(channel).transpose()?, context))
    }

    /// A resolver over an existing channel to the destination service.
    pub fn with_channel(channel: Option<Channel>, context: &str) -> Self {
        Self {
            policies: channel.clone().map(OutboundPoliciesClient::new),
            client: channel.map(DestinationClient::new),
            context: context.into(),
        }
    }

    /// Starts watching the outbound policy of `path` (an authority or `ip:port`),
    /// asking as `workload`; route metrics register in `families`.
    pub fn policy(
        &self,
        path: &str,
        workload: Option<&str>,
        families: &RouteFamilies,
    ) -> (watch::Receiver<PolicyState>, ResolutionTask) {
        policy::watch_policy(self.policies.clone(), path, workload, families.clone())
    }

    /// Starts watching the profile (traffic split) of `path`, an authority
    /// `name:port` or `ip:port`.
    pub fn profile(&self, path: &str) -> (watch::Receiver<Profile>, ResolutionTask) {
        profile::watch_profile(self.client.clone(), path, &self.context)
    }

    /// Starts resolving `path` (an authority `name:port` or `ip:port`).
    pub fn resolve(&self, path: &str) -> (watch::Receiver<Resolution>, ResolutionTask) {
        let Some(client) = self.client.clone() else {
            let (_tx, rx) = watch::channel(Resolution::NotFound);
            return (rx, ResolutionTask(None));
        };
        let (tx, rx) = watch::channel(Resolution::Pending);
        let req = api::GetDestination {
            scheme: "k8s".into(),
            path: path.to_string(),
            context_token: self.context.to_string(),
        };
        let task = tokio::spawn(run(client, req, tx));
        (rx, ResolutionTask(Some(task)))
    }
}

/// A lazily connecting channel to the destination service at `addr` (`host:port`).
pub fn channel(addr: &str) -> Result<Channel, ResolverError> {
    TonicEndpoint::from_shared(format!("http://{addr}"))
        .map(|e| {
            e.connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect_lazy()
        })
        .map_err(|source| ResolverError {
            addr: addr.to_string(),
            source,
        })
}

async fn run(
    mut client: DestinationClient<Channel>,
    req: api::GetDestination,
    tx: watch::Sender<Resolution>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get(req.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                let mut fresh = true;
                loop {
                    match stream.message().await {
                        Ok(Some(up)) => {
                            backoff = Duration::from_millis(100);
                            tx.send_modify(|r| apply(r, up, std::mem::take(&mut fresh)));
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(path = %req.path, %status, "destination stream failed");
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                tracing::debug!(path = %req.path, %status, "destination rejected the lookup");
                tx.send_replace(Resolution::NotFound);
                return;
            }
            Err(status) => {
                tracing::debug!(path = %req.path, %status, "destination lookup failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Applies one update; `fresh` marks the first update of a new stream, which replaces
/// whatever was known before.
fn apply(res: &mut Resolution, up: api::Update, fresh: bool) {
    let mut current = match (&*res, fresh) {
        (Resolution::Endpoints(eps), false) => (**eps).clone(),
        _ => BTreeMap::new(),
    };
    match up.update {
        Some(update::Update::Add(set)) => {
            for wa in set.addrs {
                if let Some(ep) = convert(wa, &set.metric_labels) {
                    current.insert(ep.addr, Arc::new(ep));
                }
            }
        }
        Some(update::Update::Remove(set)) => {
            for a in set.addrs {
                if let Some(addr) = tcp_addr(&a) {
                    current.remove(&addr);
                }
            }
        }
        Some(update::Update::NoEndpoints(ne)) if !ne.exists => {
            *res = Resolution::NotFound;
            return;
        }
        Some(update::Update::NoEndpoints(_)) => current.clear(),
        None => return,
    }
    *res = Resolution::Endpoints(Arc::new(current));
}

fn tcp_addr(a: &linkerd2_proxy_api::net::TcpAddress) -> Option<SocketAddr> {
    let ip = IpAddr::try_from(a.ip?).ok()?;
    let port = u16::try_from(a.port).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn convert(
    wa: api::WeightedAddr,
    set_labels: &std::collections::HashMap<String, String>,
) -> Option<Endpoint> {
    let addr = tcp_addr(wa.addr.as_ref()?)?;
    let identity = wa.tls_identity.and_then(|t| match t.strategy {
        Some(api::tls_identity::Strategy::DnsLikeIdentity(d)) if !d.name.is_empty() => {
            Some(Arc::<str>::from(d.name))
        }
        _ => None,
    });
    let hint = wa.protocol_hint.unwrap_or_default();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in set_labels.iter().chain(wa.metric_labels.iter()) {
        labels.insert(format!("dst_{k}"), v.clone());
    }
    Some(Endpoint {
        addr,
        identity,
        h2: matches!(hint.protocol, Some(protocol_hint::Protocol::H2(_))),
        opaque: matches!(hint.protocol, Some(protocol_hint::Protocol::Opaque(_))),
        opaque_transport_port: hint
            .opaque_transport
            .and_then(|o| u16::try_from(o.inbound_port).ok())
            .filter(|p| *p != 0),
        weight: wa.weight,
        labels: labels
            .into_iter()
            .map(|(k, v)| (Arc::from(k), Arc::from(v)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::net::TcpAddress;

    fn addr(port: u16) -> TcpAddress {
        TcpAddress {
            ip: Some(IpAddr::from([10, 0, 0, 1]).into()),
            port: u32::from(port),
        }
    }

    fn add(ports: &[u16]) -> api::Update {
        api::Update {
            update: Some(update::Update::Add(api::WeightedAddrSet {
                addrs: ports
                    .iter()
                    .map(|p| api::WeightedAddr {
                        addr: Some(addr(*p)),
                        weight: 10_000,
                        metric_labels: [("pod".to_string(), format!("web-{p}"))].into(),
                        tls_identity: Some(api::TlsIdentity {
                            server_name: None,
                            strategy: Some(api::tls_identity::Strategy::DnsLikeIdentity(
                                api::tls_identity::DnsLikeIdentity {
                                    name: "web.id".into(),
                                },
                            )),
                        }),
                        protocol_hint: Some(api::ProtocolHint {
                            opaque_transport: Some(protocol_hint::OpaqueTransport {
                                inbound_port: 4143,
                            }),
                            protocol: Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                metric_labels: [("namespace".to_string(), "shop".to_string())].into(),
            })),
        }
    }

    fn ports(r: &Resolution) -> Vec<u16> {
        match r {
            Resolution::Endpoints(e) => e.keys().map(|a| a.port()).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn updates_fold_into_the_endpoint_set() {
        let mut r = Resolution::Pending;
        apply(&mut r, add(&[80, 81]), true);
        apply(&mut r, add(&[82]), false);
        assert_eq!(ports(&r), vec![80, 81, 82]);
        let remove = api::Update {
            update: Some(update::Update::Remove(api::AddrSet {
                addrs: vec![addr(81)],
            })),
        };
        apply(&mut r, remove, false);
        assert_eq!(ports(&r), vec![80, 82]);
        let Resolution::Endpoints(eps) = &r else {
            unreachable!()
        };
        let ep = eps.values().next().unwrap();
        assert_eq!(ep.identity.as_deref(), Some("web.id"));
        assert!(ep.h2);
        assert_eq!(ep.opaque_transport_port, Some(4143));
        let labels: Vec<_> = ep.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(labels, vec!["dst_namespace=shop", "dst_pod=web-80"]);
        // A reconnected stream's first update replaces the set.
        apply(&mut r, add(&[90]), true);
        assert_eq!(ports(&r), vec![90]);
    }

    #[test]
    fn no_endpoints_distinguishes_unknown_from_empty() {
        let mut r = Resolution::Pending;
        let ne = |exists| api::Update {
            update: Some(update::Update::NoEndpoints(api::NoEndpoints { exists })),
        };
        apply(&mut r, ne(true), true);
        assert_eq!(ports(&r), Vec::<u16>::new());
        apply(&mut r, ne(false), false);
        assert_eq!(r, Resolution::NotFound);
    }
}
