//! The in-memory index: pure logic, no kube and no tonic.
//!
//! Sources feed it [`Change`]s; readers subscribe to answers with `watch_*`, each a
//! `tokio::sync::watch` channel per key. After every batch of changes the index
//! recomputes only the subscribed answers in the namespaces the batch touched, and
//! sends only those that changed, so a watcher is woken only when its answer moves and a
//! slow reader simply sees the latest state.

pub mod answers;
mod endpoints;
mod inbound;
pub mod objects;
mod outbound;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use answers::{EndpointSet, InboundServer, OutboundPolicy};
use objects::{Change, Kind, Object};
use store::{IpOwner, Store};

pub use outbound::{DEFAULT_FAILURE_ACCRUAL, match_all};

/// The mesh-wide default inbound policy, for pods no TrafficTarget names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Admit every client, meshed or not.
    #[default]
    AllUnauthenticated,
    /// Admit clients with a mesh TLS identity.
    AllAuthenticated,
    /// Admit nobody.
    Deny,
}

impl DefaultPolicy {
    /// The policy's name as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::Deny => "deny",
        }
    }
}

/// A default policy name that is not one of the three.
#[derive(Debug, thiserror::Error)]
#[error("unknown default policy {0:?}: expected all-unauthenticated, all-authenticated or deny")]
pub struct UnknownPolicy(String);

impl FromStr for DefaultPolicy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all-unauthenticated" => Ok(Self::AllUnauthenticated),
            "all-authenticated" => Ok(Self::AllAuthenticated),
            "deny" => Ok(Self::Deny),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

/// The names and defaults the index answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    /// The cluster's DNS domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The identity trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The control plane's namespace, part of every identity name.
    pub control_plane_ns: String,
    /// The default inbound policy.
    pub default_policy: DefaultPolicy,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_string(),
            trust_domain: smi_crds::mesh::DEFAULT_TRUST_DOMAIN.to_string(),
            control_plane_ns: smi_crds::mesh::DEFAULT_CONTROL_PLANE_NS.to_string(),
            default_policy: DefaultPolicy::default(),
        }
    }
}

impl IndexConfig {
    /// `name.namespace.svc.{cluster_domain}:port`.
    pub fn authority(&self, namespace: &str, name: &str, port: u16) -> String {
        format!("{name}.{namespace}.svc.{}:{port}", self.cluster_domain)
    }
}

/// What an endpoint watch is keyed on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointTarget {
    /// A Service port by name.
    Service {
        /// The namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// The Service port.
        port: u16,
    },
    /// A bare address: a cluster IP or a pod IP.
    Addr(SocketAddr),
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePortKey {
    /// The namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port.
    pub port: u16,
}

/// A pod port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodPortKey {
    /// The namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The port.
    pub port: u16,
}

/// The latest outbound policy, or `None` while the Service is unknown.
pub type OutboundWatch = watch::Receiver<Option<Arc<OutboundPolicy>>>;
/// The latest inbound server, or `None` while the pod is unknown.
pub type InboundWatch = watch::Receiver<Option<Arc<InboundServer>>>;
/// The latest endpoint set.
pub type EndpointsWatch = watch::Receiver<Arc<EndpointSet>>;

/// How many of each thing the index holds, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Objects per kind.
    pub objects: Vec<(Kind, usize)>,
    /// Live endpoint subscriptions (keys, not streams).
    pub endpoint_keys: usize,
    /// Live outbound subscriptions.
    pub outbound_keys: usize,
    /// Live inbound subscriptions.
    pub inbound_keys: usize,
}

/// The index. Share it as `Arc<Index>`.
#[derive(Debug)]
pub struct Index {
    state: Mutex<State>,
    synced: AtomicBool,
}

#[derive(Debug)]
struct State {
    config: IndexConfig,
    store: Store,
    endpoints: HashMap<EndpointTarget, watch::Sender<Arc<EndpointSet>>>,
    outbound: HashMap<ServicePortKey, watch::Sender<Option<Arc<OutboundPolicy>>>>,
    inbound: HashMap<PodPortKey, watch::Sender<Option<Arc<InboundServer>>>>,
}

impl Index {
    /// An empty index.
    pub fn new(config: IndexConfig) -> Self {
        Self {
            state: Mutex::new(State {
                config,
                store: Store::default(),
                endpoints: HashMap::new(),
                outbound: HashMap::new(),
                inbound: HashMap::new(),
            }),
            synced: AtomicBool::new(false),
        }
    }

    /// The index's configuration.
    pub fn config(&self) -> IndexConfig {
        self.lock().config.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the index itself; the data
        // is still consistent enough to keep serving, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a batch of changes and wakes the watchers whose answers changed.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        let mut state = self.lock();
        let mut dirty = HashSet::new();
        for change in changes {
            if let Change::Upsert(Object::Split(split)) = &change {
                report_split_conflict(&state.store, split);
            }
            dirty.insert(state.store.apply(change));
        }
        state.notify(&dirty);
    }

    /// Replaces every object of `kind` with `objects` (a re-list), waking watchers.
    pub fn replace_kind(&self, kind: Kind, objects: Vec<Object>) {
        let mut state = self.lock();
        let mut dirty = HashSet::new();
        let keep: HashSet<_> = objects.iter().map(Object::object_ref).collect();
        for r in state.store.refs_of(kind) {
            if !keep.contains(&r) {
                dirty.insert(state.store.apply(Change::Delete(r)));
            }
        }
        for obj in objects {
            dirty.insert(state.store.apply(Change::Upsert(obj)));
        }
        state.notify(&dirty);
    }

    /// Marks the first full sync done (readiness).
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Whether the first full sync is done.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Watches the endpoints of a target.
    pub fn watch_endpoints(&self, target: EndpointTarget) -> EndpointsWatch {
        let mut state = self.lock();
        let State {
            config,
            store,
            endpoints,
            ..
        } = &mut *state;
        if let Some(tx) = endpoints.get(&target) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Arc::new(compute_endpoints(store, config, &target)));
        endpoints.insert(target, tx);
        rx
    }

    /// Watches the outbound policy of a Service port.
    pub fn watch_outbound(&self, key: ServicePortKey) -> OutboundWatch {
        let mut state = self.lock();
        let State {
            config,
            store,
            outbound,
            ..
        } = &mut *state;
        if let Some(tx) = outbound.get(&key) {
            return tx.subscribe();
        }
        let value = store
            .outbound_policy(config, &key.namespace, &key.name, key.port)
            .map(Arc::new);
        let (tx, rx) = watch::channel(value);
        outbound.insert(key, tx);
        rx
    }

    /// Watches the inbound policy of a pod port.
    pub fn watch_inbound(&self, key: PodPortKey) -> InboundWatch {
        let mut state = self.lock();
        let State {
            config,
            store,
            inbound,
            ..
        } = &mut *state;
        if let Some(tx) = inbound.get(&key) {
            return tx.subscribe();
        }
        let value = store
            .inbound_server(config, &key.namespace, &key.pod, key.port)
            .map(Arc::new);
        let (tx, rx) = watch::channel(value);
        inbound.insert(key, tx);
        rx
    }

    /// The Service port behind a cluster IP, if any.
    pub fn service_for_addr(&self, addr: SocketAddr) -> Option<ServicePortKey> {
        match self.lock().store.ips.get(&addr.ip()) {
            Some(IpOwner::Service { namespace, name }) => Some(ServicePortKey {
                namespace: namespace.clone(),
                name: name.clone(),
                port: addr.port(),
            }),
            _ => None,
        }
    }

    /// Object counts and live subscriptions.
    pub fn stats(&self) -> IndexStats {
        let state = self.lock();
        IndexStats {
            objects: Kind::ALL
                .iter()
                .map(|k| (*k, state.store.count(*k)))
                .collect(),
            endpoint_keys: state.endpoints.len(),
            outbound_keys: state.outbound.len(),
            inbound_keys: state.inbound.len(),
        }
    }
}

fn compute_endpoints(store: &Store, cfg: &IndexConfig, target: &EndpointTarget) -> EndpointSet {
    match target {
        EndpointTarget::Service {
            namespace,
            name,
            port,
        } => store.service_endpoints(cfg, namespace, name, *port),
        EndpointTarget::Addr(addr) => store.addr_endpoints(cfg, *addr),
    }
}

fn report_split_conflict(store: &Store, split: &smi_crds::model::Split) {
    let Some(ns) = store.namespace(&split.source.namespace) else {
        return;
    };
    let others: Vec<_> = outbound::splits_for(ns, &split.root)
        .into_iter()
        .filter(|s| s.source.name != split.source.name)
        .collect();
    if let Some(oldest) = others.first() {
        let winner = if oldest.source.age_order(&split.source).is_lt() {
            oldest.source.key()
        } else {
            split.source.key()
        };
        tracing::warn!(
            root = %format!("{}/{}", split.source.namespace, split.root),
            %winner,
            "several TrafficSplits name one root service; the oldest wins and the others are ignored"
        );
    }
}

impl State {
    /// Recomputes subscribed answers in `dirty` namespaces (and every address-keyed
    /// one, which may cross namespaces), sends those that changed and forgets keys
    /// nobody watches any more.
    fn notify(&mut self, dirty: &HashSet<String>) {
        let State {
            config,
            store,
            endpoints,
            outbound,
            inbound,
        } = self;
        endpoints.retain(|key, tx| {
            if tx.is_closed() {
                return false;
            }
            let affected = match key {
                EndpointTarget::Service { namespace, .. } => dirty.contains(namespace),
                EndpointTarget::Addr(_) => true,
            };
            if affected {
                let new = compute_endpoints(store, config, key);
                tx.send_if_modified(|cur| replace_if_changed(cur, new));
            }
            true
        });
        outbound.retain(|key, tx| {
            if tx.is_closed() {
                return false;
            }
            if dirty.contains(&key.namespace) {
                let new = store.outbound_policy(config, &key.namespace, &key.name, key.port);
                tx.send_if_modified(|cur| replace_opt_if_changed(cur, new));
            }
            true
        });
        inbound.retain(|key, tx| {
            if tx.is_closed() {
                return false;
            }
            if dirty.contains(&key.namespace) {
                let new = store.inbound_server(config, &key.namespace, &key.pod, key.port);
                tx.send_if_modified(|cur| replace_opt_if_changed(cur, new));
            }
            true
        });
    }
}

fn replace_if_changed<T: PartialEq>(cur: &mut Arc<T>, new: T) -> bool {
    if **cur == new {
        return false;
    }
    *cur = Arc::new(new);
    true
}

fn replace_opt_if_changed<T: PartialEq>(cur: &mut Option<Arc<T>>, new: Option<T>) -> bool {
    if cur.as_deref() == new.as_ref() {
        return false;
    }
    *cur = new.map(Arc::new);
    true
}
