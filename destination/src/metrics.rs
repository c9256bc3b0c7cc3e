//! The service's Prometheus metrics: live watchers and updates sent per RPC, index
//! sizes, and errors by where they happened.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::index::Index;

/// Labels naming an RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// e.g. `Destination.Get`.
    pub rpc: &'static str,
}

/// Labels naming a kind of object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// e.g. `Service`.
    pub kind: &'static str,
}

/// Labels naming where an error happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `files`, `kubernetes` or an RPC name.
    pub source: &'static str,
    /// What went wrong, e.g. `invalid_object`, `parse`, `watch`, `invalid_argument`.
    pub reason: &'static str,
}

/// Every metric the service exports. Cheap to clone; clones share values.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Open streams per RPC.
    pub watchers: Family<RpcLabels, Gauge>,
    /// Messages sent per RPC.
    pub updates: Family<RpcLabels, Counter>,
    /// Objects held by the index, per kind (refreshed on scrape).
    pub index_objects: Family<KindLabels, Gauge>,
    /// Keys with at least one live subscriber (refreshed on scrape).
    pub index_subscriptions: Family<RpcLabels, Gauge>,
    /// Errors by source and reason.
    pub errors: Family<ErrorLabels, Counter>,
}

impl Metrics {
    /// Registers every metric under the `destination` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("destination");
        sub.register("watchers", "Open streams per RPC", self.watchers.clone());
        sub.register("updates", "Messages sent per RPC", self.updates.clone());
        sub.register(
            "index_objects",
            "Objects held by the index, per kind",
            self.index_objects.clone(),
        );
        sub.register(
            "index_subscriptions",
            "Index keys with live subscribers",
            self.index_subscriptions.clone(),
        );
        sub.register("errors", "Errors by source and reason", self.errors.clone());
    }

    /// Counts one error.
    pub fn error(&self, source: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { source, reason })
            .inc();
    }

    /// Copies the index's sizes into the gauges.
    pub fn refresh(&self, index: &Index) {
        let stats = index.stats();
        for (kind, n) in stats.objects {
            self.index_objects
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for (rpc, n) in [
            ("endpoints", stats.endpoint_keys),
            ("outbound", stats.outbound_keys),
            ("inbound", stats.inbound_keys),
        ] {
            self.index_subscriptions
                .get_or_create(&RpcLabels { rpc })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Marks a stream open until the guard drops.
    pub fn watcher(&self, rpc: &'static str) -> WatcherGuard {
        let gauge = self.watchers.get_or_create(&RpcLabels { rpc }).clone();
        gauge.inc();
        WatcherGuard { gauge }
    }

    /// Counts one message sent.
    pub fn sent(&self, rpc: &'static str) {
        self.updates.get_or_create(&RpcLabels { rpc }).inc();
    }
}

/// Decrements an RPC's open-stream gauge when dropped.
#[derive(Debug)]
pub struct WatcherGuard {
    gauge: Gauge,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
