//! Targets: what the outbound side sends to. Each has a discovery stream and a
//! balancer, shared by every connection and dropped after an idle timeout. An HTTP
//! target also watches its outbound policy and its profile: the policy's routes
//! send each request to one of their backends (other targets, or the target
//! itself); without a policy, the profile's traffic split does.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{Request, Response, uri::Authority};
use tokio::{sync::watch, time::Instant};

use crate::{
    balance::{BalanceConfig, Balancer, Pick, PickError},
    discovery::{Endpoint, ResolutionTask, Resolver},
    env::Config,
    http::{
        Body, ProxyError,
        client::{Connector, Dest, TlsTarget},
        forward::EndpointClients,
    },
    metrics::{Direction, HttpLabels, Metrics, TcpLabels},
    policy::{OutboundPolicy, PolicyState},
    profile::{self, Profile},
    retry::{ReqBody, RetryBudget},
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
    /// The outbound policy stream, opened by the first HTTP request.
    policy: OnceLock<(watch::Receiver<PolicyState>, ResolutionTask)>,
    /// The retry budget of requests addressed to this target.
    budget: OnceLock<RetryBudget>,
}

/// How an HTTP request for a target is routed.
#[derive(Debug)]
pub(super) enum Plan {
    /// By the target's outbound policy.
    Policy(Arc<OutboundPolicy>),
    /// Without a policy: to this target (the profile's split backend, or the
    /// target itself).
    Direct(Arc<Target>),
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
            policy: OnceLock::new(),
            budget: OnceLock::new(),
        });
        targets.insert(key, target.clone());
        target
    }

    /// How one HTTP request for `root` is routed: by its outbound policy when the
    /// destination serves one; otherwise to a backend of its traffic split (drawn
    /// in proportion to the weights), or to `root` itself. The first request waits,
    /// up to the fail-fast timeout in all, for the first answers, so that policy
    /// and split apply from the first request on.
    pub(super) async fn plan(&self, root: &Arc<Target>) -> Plan {
        let (policy, _) = root.policy.get_or_init(|| {
            let workload = self.config.inbound_workload.as_deref();
            self.resolver
                .policy(&root.key, workload, &self.metrics.routes)
        });
        // Both streams open together, so a fallback does not wait twice.
        root.profile
            .get_or_init(|| self.resolver.profile(&root.key));
        if let PolicyState::Known(p) = &*policy.borrow() {
            return Plan::Policy(p.clone());
        }
        let mut policy = policy.clone();
        let mut deadline = None;
        if policy.borrow().is_pending() {
            let at = Instant::now() + self.config.failfast_timeout;
            deadline = Some(at);
            let known = policy.wait_for(|p| !p.is_pending());
            let _ = tokio::time::timeout_at(at, known).await;
        }
        if let PolicyState::Known(p) = &*policy.borrow() {
            return Plan::Policy(p.clone());
        }
        Plan::Direct(self.split_backend(root, self.profile(root), deadline).await)
    }

    fn profile(&self, root: &Target) -> watch::Receiver<Profile> {
        root.profile
            .get_or_init(|| self.resolver.profile(&root.key))
            .0
            .clone()
    }

    /// The retry budget of `root`, its parameters following the profile.
    pub(super) fn budget<'t>(&self, root: &'t Target) -> &'t RetryBudget {
        let budget = root.budget.get_or_init(RetryBudget::default);
        budget.configure(self.profile(root).borrow().budget());
        budget
    }

    /// A backend of `root`'s traffic split, or `root` itself.
    async fn split_backend(
        &self,
        root: &Arc<Target>,
        mut rx: watch::Receiver<Profile>,
        deadline: Option<Instant>,
    ) -> Arc<Target> {
        if *rx.borrow() == Profile::Pending {
            let at = deadline.unwrap_or_else(|| Instant::now() + self.config.failfast_timeout);
            let known = rx.wait_for(|p| *p != Profile::Pending);
            let _ = tokio::time::timeout_at(at, known).await;
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
        self.target_by_name(&chosen)
    }

    /// The target for a backend authority (`name:port` or `ip:port`).
    pub(super) fn target_by_name(&self, authority: &Arc<str>) -> Arc<Target> {
        self.target(authority, || match authority.parse::<SocketAddr>() {
            Ok(a) => Dest::Addr(a),
            Err(_) => Dest::Name(authority.clone()),
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

    /// Whether the cached target `key` routes by an outbound policy.
    pub fn policy_known(&self, key: &str) -> bool {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets
            .get(key)
            .and_then(|t| t.policy.get())
            .is_some_and(|(rx, _)| matches!(*rx.borrow(), PolicyState::Known(_)))
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

    /// Sends one request to an endpoint of this target (one try): picks it,
    /// forwards, and records latency and the outcome for failure accrual.
    pub(super) async fn send(
        &self,
        req: Request<ReqBody>,
        authority: &Authority,
        timeout: Option<Duration>,
    ) -> Result<Response<Body>, ProxyError> {
        match self.balancer.pick().await {
            Ok(Pick::Endpoint(mut f)) => {
                let rsp = f.slot.value.forward(req, authority, timeout).await;
                f.complete();
                f.record(rsp.as_ref().is_ok_and(|r| !r.status().is_server_error()));
                rsp
            }
            Ok(Pick::NotFound) => self.fallback.forward(req, authority, timeout).await,
            Err(PickError::NoEndpoints) => Err(ProxyError::Unavailable),
            Err(PickError::QueueFull) => Err(ProxyError::QueueFull),
        }
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
