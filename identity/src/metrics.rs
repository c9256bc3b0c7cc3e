//! The service's Prometheus metrics.

use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a Certify call failed, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Whether an issuer reload was accepted, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// Counters and gauges of the identity service.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    issued: Counter,
    failures: Family<Reason, Counter>,
    issuer_expiry: Gauge,
    reloads: Family<Outcome, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("identity");
        let issued = Counter::default();
        let failures = Family::<Reason, Counter>::default();
        let issuer_expiry = Gauge::default();
        let reloads = Family::<Outcome, Counter>::default();
        registry.register(
            "certificates_issued",
            "Leaf certificates signed",
            issued.clone(),
        );
        registry.register(
            "certify_failures",
            "Certify calls refused, by reason",
            failures.clone(),
        );
        registry.register(
            "issuer_expiry_timestamp_seconds",
            "When the current issuer certificate expires (UNIX seconds)",
            issuer_expiry.clone(),
        );
        registry.register(
            "issuer_reloads",
            "Issuer reloads after its files changed, by outcome",
            reloads.clone(),
        );
        Self {
            registry,
            issued,
            failures,
            issuer_expiry,
            reloads,
        }
    }
}

impl Metrics {
    /// Counts a signed leaf.
    pub fn issued(&self) {
        self.issued.inc();
    }

    /// Counts a refused Certify call.
    pub fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&Reason { reason }).inc();
    }

    /// Records the current issuer's expiry.
    pub fn set_issuer_expiry(&self, not_after: SystemTime) {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.issuer_expiry.set(secs);
    }

    /// Counts an issuer reload.
    pub fn reloaded(&self, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "refused" };
        self.reloads.get_or_create(&Outcome { outcome }).inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn encodes_counters_and_gauges() {
        let m = Metrics::default();
        m.issued();
        m.issued();
        m.failed("token");
        m.set_issuer_expiry(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
        m.reloaded(true);
        let text = m.encode();
        assert!(
            text.contains("identity_certificates_issued_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("identity_certify_failures_total{reason=\"token\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("identity_issuer_expiry_timestamp_seconds 1900000000\n"),
            "{text}"
        );
        assert!(
            text.contains("identity_issuer_reloads_total{outcome=\"accepted\"} 1\n"),
            "{text}"
        );
    }
}
