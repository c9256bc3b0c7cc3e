//! Per-route metrics with Linkerd's names (`outbound_http_route_retry_*_total`),
//! labelled with the parent (the Service) and the route it came from. Handles are
//! looked up once per rule when a policy arrives, never per request.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::retry::RetryMetrics;

/// A Kubernetes-style reference, as the policy's metadata names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    /// API group (`core` for Services); empty for defaults.
    pub group: Arc<str>,
    /// Kind (`Service`, `HTTPRoute`, `TrafficSplit`), or `default`.
    pub kind: Arc<str>,
    /// Namespace; empty for defaults.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// Port, for Services; 0 when none.
    pub port: u16,
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Labels of a route's metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteLabels {
    /// The parent: the Service the policy is for.
    pub parent: Arc<ResourceRef>,
    /// The route: an HTTPRoute, a TrafficSplit, or the default route.
    pub route: Arc<ResourceRef>,
}

impl EncodeLabelSet for RouteLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let p = &self.parent;
        ("parent_group", &*p.group).encode(enc.encode_label())?;
        ("parent_kind", &*p.kind).encode(enc.encode_label())?;
        ("parent_namespace", &*p.namespace).encode(enc.encode_label())?;
        ("parent_name", &*p.name).encode(enc.encode_label())?;
        ("parent_port", p.port).encode(enc.encode_label())?;
        let r = &self.route;
        ("route_group", &*r.group).encode(enc.encode_label())?;
        ("route_kind", &*r.kind).encode(enc.encode_label())?;
        ("route_namespace", &*r.namespace).encode(enc.encode_label())?;
        ("route_name", &*r.name).encode(enc.encode_label())
    }
}

/// The route metric families.
#[derive(Clone, Debug, Default)]
pub struct RouteFamilies {
    retry_requests: Family<RouteLabels, Counter>,
    retry_successes: Family<RouteLabels, Counter>,
    retry_limit_exceeded: Family<RouteLabels, Counter>,
    retry_overflow: Family<RouteLabels, Counter>,
}

impl RouteFamilies {
    /// Registers every family in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "outbound_http_route_retry_requests",
            "Retries sent by route",
            self.retry_requests.clone(),
        );
        r.register(
            "outbound_http_route_retry_successes",
            "Requests that succeeded after a retry, by route",
            self.retry_successes.clone(),
        );
        r.register(
            "outbound_http_route_retry_limit_exceeded",
            "Requests not retried because the route's max_retries was reached",
            self.retry_limit_exceeded.clone(),
        );
        r.register(
            "outbound_http_route_retry_overflow",
            "Requests not retried because the retry budget was spent",
            self.retry_overflow.clone(),
        );
    }

    /// The retry counters of one route.
    pub fn retry(&self, labels: &RouteLabels) -> RetryMetrics {
        RetryMetrics {
            requests: self.retry_requests.get_or_create_owned(labels),
            successes: self.retry_successes.get_or_create_owned(labels),
            limit_exceeded: self.retry_limit_exceeded.get_or_create_owned(labels),
            overflow: self.retry_overflow.get_or_create_owned(labels),
        }
    }
}
