//! The version-neutral traffic model.
//!
//! Every served SMI version (and, in the destination service, Gateway API HTTPRoute)
//! converts into these types; nothing downstream looks at a versioned resource. The
//! model has no Kubernetes dependency, so the proxy and pure-logic tests can use it.
//!
//! Weights are canonical: a split's backend weights are expressed in milli-units of
//! the split's total (they sum to 1000 unless every weight is zero), so equivalent
//! splits written in different versions (`"900m"`/`"100m"` in v1alpha1, `900`/`100`
//! or `9`/`1` in v1alpha4) produce identical models.

use serde::{Deserialize, Serialize};

/// Where a model object came from: enough to name it in errors and to order
/// conflicting objects (the oldest wins).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The `apiVersion` it was written in, e.g. `split.smi-spec.io/v1alpha4`.
    pub api_version: String,
    /// `metadata.creationTimestamp` as RFC 3339, when known. RFC 3339 timestamps in
    /// UTC order correctly as strings.
    pub created: Option<String>,
}

impl Source {
    /// `namespace/name`, as used in every message about this object.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Orders two sources oldest first; ties (or unknown timestamps, which sort last)
    /// break on `namespace/name` so that the order is total and stable.
    pub fn age_order(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |s: &Self| (s.created.is_none(), s.created.clone());
        rank(self)
            .cmp(&rank(other))
            .then_with(|| (&self.namespace, &self.name).cmp(&(&other.namespace, &other.name)))
    }
}

/// A weighted traffic split for a root Service (TrafficSplit, any version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// The object this split came from.
    pub source: Source,
    /// The root Service's name, in `source.namespace`.
    pub root: String,
    /// The backends, in the order written.
    pub backends: Vec<SplitBackend>,
    /// Route groups that select which requests are split; empty means every request.
    /// Requests matching none of them go to the root Service.
    pub matches: Vec<RouteRef>,
}

/// One backend of a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBackend {
    /// The backend Service's name, in the split's namespace.
    pub service: String,
    /// Share of the split's traffic in milli-units (thousandths). Zero sends no traffic.
    pub weight_milli: u32,
}

/// A reference from a split or an access rule to a route group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteRef {
    /// Which kind of route group.
    pub kind: RouteKind,
    /// Its name, in the referring object's namespace.
    pub name: String,
}

/// The kinds of `specs.smi-spec.io` route group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteKind {
    /// `HTTPRouteGroup`.
    HttpRouteGroup,
    /// `TCPRoute`.
    TcpRoute,
    /// `UDPRoute`.
    UdpRoute,
}

impl RouteKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpRouteGroup => "HTTPRouteGroup",
            Self::TcpRoute => "TCPRoute",
            Self::UdpRoute => "UDPRoute",
        }
    }

    /// Parses a Kubernetes kind name.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "HTTPRouteGroup" => Some(Self::HttpRouteGroup),
            "TCPRoute" => Some(Self::TcpRoute),
            "UDPRoute" => Some(Self::UdpRoute),
            _ => None,
        }
    }
}

/// A named group of HTTP matches (HTTPRouteGroup, any version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRouteGroup {
    /// The object this group came from.
    pub source: Source,
    /// The matches; a request matching any of them matches the group.
    pub matches: Vec<HttpMatch>,
}

/// One HTTP match. Every present condition must hold (AND); absent ones match all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpMatch {
    /// The match's name, referenced by TrafficTarget rules.
    pub name: String,
    /// A regular expression anchored at the start of the request path
    /// (validated to compile).
    pub path_regex: Option<String>,
    /// Upper-case method names; empty means any method (`*` is folded into empty).
    pub methods: Vec<String>,
    /// Header name (lower-case) and value regular expression, all of which must match.
    pub headers: Vec<HeaderMatch>,
}

/// A header condition of an [`HttpMatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// The header name, lower-cased.
    pub name: String,
    /// A regular expression the header's value must match (validated to compile).
    pub value_regex: String,
}

/// A group of L4 ports (TCPRoute or UDPRoute).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRoute {
    /// The object this route came from.
    pub source: Source,
    /// TCP or UDP.
    pub kind: RouteKind,
    /// The ports; empty means every port of the destination.
    pub ports: Vec<u16>,
}

/// An access rule (TrafficTarget, any version): who may call which workload, on what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    /// The object this rule came from.
    pub source: Source,
    /// The workloads being protected.
    pub destination: ServiceAccountRef,
    /// The port the rule applies to; `None` means every port.
    pub port: Option<u16>,
    /// The clients allowed.
    pub sources: Vec<ServiceAccountRef>,
    /// The routes allowed; empty means all traffic.
    pub rules: Vec<RuleRef>,
}

/// A service account, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceAccountRef {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// A route group named by an access rule, optionally narrowed to some of its matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// The route group.
    pub route: RouteRef,
    /// Names of the group's matches allowed; empty means all of them.
    pub matches: Vec<String>,
}

/// Turns relative weights (any unit) into milli-units of their total.
///
/// The result sums to exactly 1000 when any weight is non-zero (largest-remainder
/// rounding), a zero weight stays zero, and a non-zero weight never rounds down to
/// zero (the unit is taken from the largest share instead), so a tiny canary still
/// gets traffic. All zero weights give all zeros.
pub fn normalize_weights(raw: &[u128]) -> Vec<u32> {
    let total: u128 = raw.iter().sum();
    if total == 0 {
        return vec![0; raw.len()];
    }
    let mut out: Vec<u32> = Vec::with_capacity(raw.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(raw.len());
    for (i, &w) in raw.iter().enumerate() {
        let scaled = w * 1000;
        // Each share is at most 1000, so the cast cannot truncate.
        out.push((scaled / total) as u32);
        remainders.push((scaled % total, i));
    }
    let assigned: u32 = out.iter().sum();
    let mut missing = 1000 - assigned;
    // Largest remainder first; ties go to the earlier backend for determinism.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(rem, i) in &remainders {
        if missing == 0 {
            break;
        }
        if rem > 0 {
            out[i] += 1;
            missing -= 1;
        }
    }
    for i in 0..raw.len() {
        if raw[i] > 0 && out[i] == 0 {
            let largest = (0..out.len()).max_by_key(|&j| (out[j], std::cmp::Reverse(j)));
            if let Some(j) = largest.filter(|&j| out[j] > 1) {
                out[j] -= 1;
                out[i] = 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_normalise_to_thousandths() {
        assert_eq!(normalize_weights(&[900, 100]), vec![900, 100]);
        assert_eq!(normalize_weights(&[9, 1]), vec![900, 100]);
        assert_eq!(normalize_weights(&[900_000, 100_000]), vec![900, 100]);
        assert_eq!(normalize_weights(&[1, 1, 1]), vec![334, 333, 333]);
        assert_eq!(normalize_weights(&[0, 5]), vec![0, 1000]);
        assert_eq!(normalize_weights(&[0, 0]), vec![0, 0]);
        assert_eq!(normalize_weights(&[]), Vec::<u32>::new());
    }

    #[test]
    fn a_tiny_nonzero_weight_keeps_some_traffic() {
        let w = normalize_weights(&[1, 1_000_000]);
        assert_eq!(w, vec![1, 999]);
        assert_eq!(w.iter().sum::<u32>(), 1000);
    }

    #[test]
    fn oldest_source_orders_first() {
        let src = |name: &str, created: Option<&str>| Source {
            namespace: "ns".into(),
            name: name.into(),
            api_version: "split.smi-spec.io/v1alpha4".into(),
            created: created.map(str::to_string),
        };
        let old = src("b", Some("2024-01-01T00:00:00Z"));
        let new = src("a", Some("2025-01-01T00:00:00Z"));
        let unknown = src("0", None);
        assert!(old.age_order(&new).is_lt());
        assert!(new.age_order(&unknown).is_lt());
        let tie = src("c", Some("2024-01-01T00:00:00Z"));
        assert!(old.age_order(&tie).is_lt(), "ties break on name");
    }
}
