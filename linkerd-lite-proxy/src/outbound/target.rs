//! Targets: what the outbound side sends to. Each has a discovery stream and a
//! balancer, shared by every connection and dropped after an idle timeout. An HTTP
//! target also watches its profile, whose traffic split may send each request to
//! another target (a backend) instead.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use crate::{
    balance::{BalanceConfig, Balancer},
    discovery::{Endpoint, ResolutionTask, Resolver},
    env::Config,
    http::{
        client::{Connector, Dest, TlsTarget},
        forward::EndpointClients,
    },
    metrics::{Direction, HttpLabels, Metrics, TcpLabels},
    profile::{self, Profile},
    tls::{SessionProtocol, TlsProvider, TransportHeader},
};

/// Shared state of the outbound side.
#[derive(Debug)]
pub struct Outbound {
    pub(super) config: Arc<Config>,
    resolver: Resolver,
    pub(super) tls: Option<Arc<dyn TlsProvider>>,
    pub(super) metrics: Metrics,
    targets: Mutex<HashMap<Arc<str>, Arc<Target>>>,
    epoch: Instant,
}

/// One destination: its endpoints, their clients, and a direct fallback.
#[derive(Debug)]
pub struct Target {
    /// The lookup key: an authority (`name:port`) or an original destination.
    pub key: Arc<str>,
    /// The balancer over discovered endpoints.
    pub balancer: Balancer<EndpointClients>,
    /// Clients straight to the address the application used, for targets discovery
    /// does not know.
    pub fallback: EndpointClients,
    last_used_ms: AtomicU64,
    _resolution: ResolutionTask,
    /// The profile stream, opened by the first HTTP request.
    profile: OnceLock<(watch::Receiver<Profile>, ResolutionTask)>,
}

impl Outbound {
    /// Builds the outbound side's shared state.
    pub fn new(
        config: Arc<Config>,
        resolver: Resolver,
        tls: Option<Arc<dyn TlsProvider>>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            resolver,
            tls,
            metrics,
            targets: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The cached target for `key`, created (and resolution started) on first use.
    /// `direct` is where to send when discovery does not know the target.
    pub fn target(&self, key: &str, direct: impl FnOnce() -> Dest) -> Arc<Target> {
        let now = self.now_ms();
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = targets.get(key) {
            t.last_used_ms.store(now, Ordering::Relaxed);
            return t.clone();
        }
        let key: Arc<str> = key.into();
        let (rx, task) = self.resolver.resolve(&key);
        let balance = BalanceConfig {
            failfast: self.config.failfast_timeout,
            max_waiting: self.config.max_pending_requests,
            decay: self.config.ewma_decay,
            default_rtt: self.config.ewma_default_rtt,
        };
        let make = {
            let key = key.clone();
            let metrics = self.metrics.clone();
            let tls = self.tls.clone();
            let timeout = self.config.connect_timeout;
            move |ep: &Arc<Endpoint>| endpoint_clients(&key, ep, tls.as_ref(), &metrics, timeout)
        };
        let target = Arc::new(Target {
            fallback: direct_clients(&key, direct(), &self.metrics, self.config.connect_timeout),
            balancer: Balancer::new(rx, balance, make),
            key: key.clone(),
            last_used_ms: AtomicU64::new(now),
            _resolution: task,
            profile: OnceLock::new(),
        });
        targets.insert(key, target.clone());
        target
    }

    /// Where one HTTP request for `root` goes: a backend of its traffic split, drawn
    /// in proportion to the weights, or `root` itself when it has no split. The
    /// first request waits (up to the fail-fast timeout) for the profile, so a
    /// split applies from the first request on.
    pub async fn backend(&self, root: &Arc<Target>) -> Arc<Target> {
        let mut rx = root
            .profile
            .get_or_init(|| self.resolver.profile(&root.key))
            .0
            .clone();
        if *rx.borrow() == Profile::Pending {
            let known = rx.wait_for(|p| *p != Profile::Pending);
            let _ = tokio::time::timeout(self.config.failfast_timeout, known).await;
        }
        let chosen = {
            let p = rx.borrow();
            let picked = p
                .overrides()
                .and_then(|o| profile::pick(o, &mut rand::rng()));
            match picked {
                Some(o) if *o.authority != *root.key => o.authority.clone(),
                _ => return root.clone(),
            }
        };
        self.target(&chosen, || match chosen.parse::<SocketAddr>() {
            Ok(a) => Dest::Addr(a),
            Err(_) => Dest::Name(chosen.clone()),
        })
    }

    /// Drops targets no connection holds that were unused for the idle timeout.
    pub fn evict_idle(&self) -> usize {
        let now = self.now_ms();
        let idle = self.config.cache_idle_timeout.as_millis() as u64;
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let before = targets.len();
        targets.retain(|_, t| {
            Arc::strong_count(t) > 1 || now - t.last_used_ms.load(Ordering::Relaxed) < idle
        });
        before - targets.len()
    }

    /// How many targets are cached.
    pub fn cached_targets(&self) -> usize {
        self.targets.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Evicts idle targets periodically until the process ends.
    pub async fn evict_idle_forever(self: Arc<Self>) {
        let period = (self.config.cache_idle_timeout / 2).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            let n = self.evict_idle();
            if n > 0 {
                tracing::debug!(evicted = n, "dropped idle outbound targets");
            }
        }
    }
}

impl Target {
    /// Marks the target as used now.
    pub fn touch(&self, outbound: &Outbound) {
        self.last_used_ms
            .store(outbound.now_ms(), Ordering::Relaxed);
    }
}

fn endpoint_clients(
    key: &Arc<str>,
    ep: &Arc<Endpoint>,
    tls: Option<&Arc<dyn TlsProvider>>,
    metrics: &Metrics,
    timeout: Duration,
) -> EndpointClients {
    let meshed = tls.zip(ep.identity.as_ref());
    let tls_label = if meshed.is_some() {
        "true"
    } else {
        "no_identity"
    };
    let peer_id = meshed.map(|(_, id)| id.clone());
    let labels = HttpLabels {
        direction: Direction::Outbound,
        authority: key.clone(),
        tls: tls_label,
        peer_id: peer_id.clone(),
        dst: ep.labels.clone(),
    };
    let tcp_labels = TcpLabels {
        direction: Direction::Outbound,
        peer: "dst",
        tls: tls_label,
        peer_id,
        authority: Some(key.clone()),
    };
    let mk = |protocol: Option<SessionProtocol>| {
        let (addr, tls) = match meshed {
            Some((provider, identity)) => {
                let (addr, header) = match ep.opaque_transport_port {
                    Some(port) => (
                        SocketAddr::new(ep.addr.ip(), port),
                        Some(TransportHeader {
                            port: ep.addr.port(),
                            protocol,
                        }),
                    ),
                    None => (ep.addr, None),
                };
                let t = TlsTarget {
                    provider: provider.clone(),
                    identity: identity.clone(),
                    header,
                };
                (addr, Some(t))
            }
            None => (ep.addr, None),
        };
        Connector::new(Dest::Addr(addr), tls, timeout)
            .with_metrics(metrics.clone(), tcp_labels.clone())
    };
    let connectors = [
        mk(Some(SessionProtocol::Http1)),
        mk(Some(SessionProtocol::Http2)),
        mk(None),
    ];
    EndpointClients::new(metrics, labels, connectors, meshed.is_some() || ep.h2)
}

fn direct_clients(
    key: &Arc<str>,
    dest: Dest,
    metrics: &Metrics,
    timeout: Duration,
) -> EndpointClients {
    let labels = HttpLabels {
        direction: Direction::Outbound,
        authority: key.clone(),
        tls: "no_identity",
        peer_id: None,
        dst: Arc::from(Vec::new()),
    };
    let tcp_labels = TcpLabels {
        direction: Direction::Outbound,
        peer: "dst",
        tls: "no_identity",
        peer_id: None,
        authority: Some(key.clone()),
    };
    let c = Connector::new(dest, None, timeout).with_metrics(metrics.clone(), tcp_labels);
    EndpointClients::new(metrics, labels, [c.clone(), c.clone(), c], false)
}
