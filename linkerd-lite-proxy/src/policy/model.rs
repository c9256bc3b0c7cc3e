//! The outbound policy as the proxy applies it: validated, with regexes compiled,
//! header names parsed and metric handles looked up when the policy arrives.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::{filter::Filter, matching::RuleMatches, metrics::ResourceRef};
use crate::{
    balance::{FailureAccrual, Queue},
    retry::{RetryMetrics, RetryPolicy},
};

/// What the proxy knows of a target's outbound policy.
#[derive(Clone, Debug, Default)]
pub enum PolicyState {
    /// No answer yet.
    #[default]
    Pending,
    /// The destination does not know the target as a Service (or serves no HTTP
    /// policy for it): route as without policies (the profile's split, else the
    /// target itself).
    Fallback,
    /// The target's policy.
    Known(Arc<OutboundPolicy>),
}

impl PolicyState {
    /// Whether the first answer is still awaited.
    pub fn is_pending(&self) -> bool {
        matches!(self, Self::Pending)
    }
}

/// A Service port's outbound policy.
#[derive(Debug)]
pub struct OutboundPolicy {
    /// Unique per policy message, so that settings are applied to a backend's
    /// balancer once per change.
    pub id: u64,
    /// The Service the policy is for.
    pub parent: Arc<ResourceRef>,
    /// Routes for HTTP/1 requests, in the order the destination sent them.
    pub http1: Arc<[Route]>,
    /// Routes for HTTP/2 requests (often the same as `http1`).
    pub http2: Arc<[Route]>,
    /// Circuit breaking for the backends' endpoints; `None` turns it off.
    pub accrual: Option<FailureAccrual>,
}

/// An HTTP route: an HTTPRoute, a TrafficSplit, or the default route.
#[derive(Debug)]
pub struct Route {
    /// Where the route comes from.
    pub meta: Arc<ResourceRef>,
    /// Host names the route applies to (any, when the route names none).
    pub hosts: crate::policy::matching::Host,
    /// The route names no hosts.
    pub any_host: bool,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// One rule of a route: which requests, what to do with them, and where to send
/// them.
#[derive(Debug)]
pub struct Rule {
    /// The rule's matches (any one of them selects the rule).
    pub matches: RuleMatches,
    /// Applied in order to each request of the rule.
    pub filters: Vec<Filter>,
    /// The weighted backends; empty answers 500.
    pub backends: Vec<Backend>,
    /// The rule's timeouts.
    pub timeouts: Timeouts,
    /// The rule's retry policy, if it retries.
    pub retry: Option<RetryPolicy>,
    /// The route's retry counters.
    pub retry_metrics: RetryMetrics,
}

/// A rule's timeouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Bounds the whole request, retries included, until its response has ended.
    pub request: Option<Duration>,
    /// Bounds each try until its response headers arrive.
    pub response: Option<Duration>,
}

/// One weighted backend of a rule.
#[derive(Debug)]
pub struct Backend {
    /// Where it sends.
    pub target: BackendTarget,
    /// Relative weight; zero receives nothing.
    pub weight: u32,
    /// Filters applied after the rule's own.
    pub filters: Vec<Filter>,
    /// The backend's queue, when the policy sets one.
    pub queue: Option<Queue>,
}

/// What a backend resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendTarget {
    /// The policy's own Service: the target the request was addressed to.
    Parent,
    /// Another Service, by the authority to resolve with `Destination.Get`.
    Authority(Arc<str>),
    /// A single address.
    Addr(SocketAddr),
}

/// Picks an item at random in proportion to `weight`. `None` when no item has a
/// positive weight.
pub fn pick_weighted<'a, T, R: rand::Rng + ?Sized>(
    items: &'a [T],
    weight: impl Fn(&T) -> u32,
    rng: &mut R,
) -> Option<&'a T> {
    if let [one] = items {
        return (weight(one) > 0).then_some(one);
    }
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut point = rng.random_range(0..total);
    for i in items {
        let w = u64::from(weight(i));
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    // Unreachable: `point < total`, the sum of all weights.
    None
}
