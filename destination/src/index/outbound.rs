//! Outbound policy: the route table of a Service port.
//!
//! # Precedence
//!
//! 1. Gateway API HTTPRoutes whose `parentRefs` name the Service (and this port, or no
//!    port) win. Every such route is served, oldest first; the proxy picks the most
//!    specific match across them.
//! 2. Otherwise the oldest TrafficSplit whose root is the Service applies; younger
//!    splits naming the same root are ignored and reported when they arrive.
//! 3. Otherwise a default route sends everything to the Service itself.
//!
//! Backends: a zero weight sends no traffic; a backend whose Service does not exist is
//! skipped; when nothing is left the rule falls back to the parent Service. A split
//! with `matches` gets two rules: the matched requests are split, the rest go to the
//! parent Service.
//!
//! Timeouts come from an HTTPRoute rule's `timeouts.request`, else from the Service's
//! `mesh.linkerd-lite.io/timeout` annotation. Retries are allowed by the
//! `mesh.linkerd-lite.io/retry: "true"` annotation on the HTTPRoute, else on the
//! Service. Failure accrual is on by default (7 consecutive failures) and tuned or
//! turned off (`0`) with `mesh.linkerd-lite.io/failure-accrual-consecutive`.

use smi_crds::model::{HttpMatch, RouteKind, Split};

use super::IndexConfig;
use super::answers::{Backend, OutboundPolicy, OutboundRoute, OutboundRule, RouteOrigin};
use super::objects::{PathMatch, Route, RouteBackend, RouteMatch, Service, ValueMatch};
use super::store::{Namespace, Store};

/// Consecutive failures before an endpoint is ejected, unless annotated otherwise.
pub const DEFAULT_FAILURE_ACCRUAL: u32 = 7;

impl Store {
    /// The outbound policy of `name.namespace:port`; `None` when the Service is unknown.
    pub(crate) fn outbound_policy(
        &self,
        cfg: &IndexConfig,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Option<OutboundPolicy> {
        let ns = self.namespace(namespace)?;
        let svc = ns.services.get(name)?;
        let ctx = RouteCtx {
            cfg,
            ns,
            namespace,
            svc,
            port,
        };
        let routes = ctx.routes();
        Some(OutboundPolicy {
            namespace: namespace.to_string(),
            service: name.to_string(),
            port,
            authority: cfg.authority(namespace, name, port),
            opaque: svc.opaque_ports.contains(&port),
            routes,
            failure_accrual: match svc.failure_accrual {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(DEFAULT_FAILURE_ACCRUAL),
            },
        })
    }
}

/// The splits of a namespace naming `root`, oldest (the winner) first.
pub(crate) fn splits_for<'a>(ns: &'a Namespace, root: &str) -> Vec<&'a Split> {
    let mut splits: Vec<&Split> = ns.splits.values().filter(|s| s.root == root).collect();
    splits.sort_by(|a, b| a.source.age_order(&b.source));
    splits
}

/// The catch-all match: every path.
pub fn match_all() -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::Prefix("/".to_string())),
        ..RouteMatch::default()
    }
}

/// Expands an SMI HTTP match into route matches, one per method.
pub(crate) fn smi_matches(m: &HttpMatch) -> Vec<RouteMatch> {
    let base = RouteMatch {
        path: Some(match &m.path_regex {
            // SMI anchors the expression at the start of the path only. `^(?:re).*` means
            // that both to proxies that search for a match and to those that require a
            // full match.
            Some(re) => PathMatch::Regex(format!("^(?:{re}).*")),
            None => PathMatch::Prefix("/".to_string()),
        }),
        method: None,
        headers: m
            .headers
            .iter()
            .map(|h| (h.name.clone(), ValueMatch::Regex(h.value_regex.clone())))
            .collect(),
        query_params: Vec::new(),
    };
    if m.methods.is_empty() {
        return vec![base];
    }
    m.methods
        .iter()
        .map(|method| RouteMatch {
            method: Some(method.clone()),
            ..base.clone()
        })
        .collect()
}

struct RouteCtx<'a> {
    cfg: &'a IndexConfig,
    ns: &'a Namespace,
    namespace: &'a str,
    svc: &'a Service,
    port: u16,
}

impl RouteCtx<'_> {
    fn routes(&self) -> Vec<OutboundRoute> {
        let mut http_routes: Vec<&Route> = self
            .ns
            .http_routes
            .values()
            .filter(|r| {
                r.parents
                    .iter()
                    .any(|p| p.service == self.svc.name && p.port.is_none_or(|p| p == self.port))
            })
            .collect();
        if !http_routes.is_empty() {
            http_routes.sort_by(|a, b| a.source.age_order(&b.source));
            return http_routes
                .into_iter()
                .map(|r| self.http_route(r))
                .collect();
        }
        if let Some(split) = splits_for(self.ns, &self.svc.name).first() {
            return vec![self.split_route(split)];
        }
        vec![OutboundRoute {
            origin: RouteOrigin::Default,
            rules: vec![self.rule(vec![match_all()], vec![self.root()], None, None)],
        }]
    }

    fn http_route(&self, route: &Route) -> OutboundRoute {
        let rules = route
            .rules
            .iter()
            .map(|rule| {
                let matches = if rule.matches.is_empty() {
                    vec![match_all()]
                } else {
                    rule.matches.clone()
                };
                let backends = self.backends(&rule.backends);
                self.rule(matches, backends, rule.timeout, route.retryable)
            })
            .collect();
        OutboundRoute {
            origin: RouteOrigin::HttpRoute {
                namespace: route.source.namespace.clone(),
                name: route.source.name.clone(),
            },
            rules,
        }
    }

    fn split_route(&self, split: &Split) -> OutboundRoute {
        let backends: Vec<RouteBackend> = split
            .backends
            .iter()
            .map(|b| RouteBackend {
                service: b.service.clone(),
                port: None,
                weight_milli: b.weight_milli,
            })
            .collect();
        let backends = self.backends(&backends);
        let mut rules = Vec::new();
        if split.matches.is_empty() {
            rules.push(self.rule(vec![match_all()], backends, None, None));
        } else {
            let matches: Vec<RouteMatch> = split
                .matches
                .iter()
                .filter(|r| r.kind == RouteKind::HttpRouteGroup)
                .filter_map(|r| self.ns.route_groups.get(&r.name))
                .flat_map(|g| g.matches.iter().flat_map(smi_matches))
                .collect();
            if !matches.is_empty() {
                rules.push(self.rule(matches, backends, None, None));
            }
            rules.push(self.rule(vec![match_all()], vec![self.root()], None, None));
        }
        OutboundRoute {
            origin: RouteOrigin::TrafficSplit {
                namespace: split.source.namespace.clone(),
                name: split.source.name.clone(),
            },
            rules,
        }
    }

    /// Resolves backends: drops zero weights and missing Services, falling back to the
    /// parent Service when nothing is left.
    fn backends(&self, backends: &[RouteBackend]) -> Vec<Backend> {
        if backends.is_empty() {
            return vec![self.root()];
        }
        let live: Vec<Backend> = backends
            .iter()
            .filter(|b| b.weight_milli > 0 && self.ns.services.contains_key(&b.service))
            .map(|b| {
                let port = b.port.unwrap_or(self.port);
                Backend {
                    namespace: self.namespace.to_string(),
                    service: b.service.clone(),
                    port,
                    weight: b.weight_milli,
                    authority: self.cfg.authority(self.namespace, &b.service, port),
                }
            })
            .collect();
        if live.is_empty() {
            vec![self.root()]
        } else {
            live
        }
    }

    fn root(&self) -> Backend {
        Backend {
            namespace: self.namespace.to_string(),
            service: self.svc.name.clone(),
            port: self.port,
            weight: 1000,
            authority: self
                .cfg
                .authority(self.namespace, &self.svc.name, self.port),
        }
    }

    fn rule(
        &self,
        matches: Vec<RouteMatch>,
        backends: Vec<Backend>,
        timeout: Option<std::time::Duration>,
        retryable: Option<bool>,
    ) -> OutboundRule {
        OutboundRule {
            matches,
            backends,
            timeout: timeout.or(self.svc.timeout),
            retry: retryable.unwrap_or(self.svc.retryable),
        }
    }
}
