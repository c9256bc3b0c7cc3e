//! Inbound policy: the protocol and authorizations of a pod port.
//!
//! A pod whose service account is the destination of no TrafficTarget (on this port)
//! gets the mesh-wide default policy. Once any TrafficTarget names it, only
//! TrafficTargets admit clients:
//!
//! - a target with no rules, or with a TCPRoute covering the port, admits its sources to
//!   the whole port (server-level authorization, and the catch-all HTTP route);
//! - a target with HTTPRouteGroup rules admits its sources to those routes only (an
//!   HTTP route per distinct set of matches; identical ones merge their clients).
//!
//! TrafficTargets are looked up in the pod's namespace.

use std::collections::BTreeMap;

use smi_crds::mesh::WorkloadIdentity;
use smi_crds::model::{AccessRule, RouteKind};

use super::answers::{Authz, AuthzOrigin, Clients, InboundProtocol, InboundRoute, InboundServer};
use super::objects::{AppProtocol, RouteMatch};
use super::outbound::{match_all, smi_matches};
use super::store::{Namespace, Store};
use super::{DefaultPolicy, IndexConfig};

impl Store {
    /// The inbound policy of `pod.namespace:port`; `None` when the pod is unknown.
    pub(crate) fn inbound_server(
        &self,
        cfg: &IndexConfig,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Option<InboundServer> {
        let ns = self.namespace(namespace)?;
        let pod = ns.pods.get(pod)?;
        let protocol = if pod.opaque_ports.contains(&port) {
            InboundProtocol::Opaque
        } else {
            match pod.port_protocols.get(&port) {
                Some(AppProtocol::Http1) => InboundProtocol::Http1,
                Some(AppProtocol::Http2) => InboundProtocol::Http2,
                None => InboundProtocol::Detect,
            }
        };
        let mut targets: Vec<&AccessRule> = ns
            .access_rules
            .values()
            .filter(|a| {
                a.destination.namespace == namespace
                    && a.destination.name == pod.service_account
                    && a.port.is_none_or(|p| p == port)
            })
            .collect();
        targets.sort_by(|a, b| a.source.age_order(&b.source));

        let (authorizations, http_routes, labels) = if targets.is_empty() {
            let authz: Vec<Authz> = default_authz(cfg.default_policy).into_iter().collect();
            let route = InboundRoute {
                name: "default".to_string(),
                matches: vec![match_all()],
                authorizations: authz.clone(),
            };
            let labels = BTreeMap::from([
                ("kind".to_string(), "default".to_string()),
                ("name".to_string(), cfg.default_policy.as_str().to_string()),
            ]);
            (authz, vec![route], labels)
        } else {
            let (authz, routes) = target_policy(cfg, ns, &targets, port);
            let names: Vec<&str> = targets.iter().map(|t| t.source.name.as_str()).collect();
            let labels = BTreeMap::from([
                ("kind".to_string(), "traffictarget".to_string()),
                ("name".to_string(), names.join(",")),
            ]);
            (authz, routes, labels)
        };
        Some(InboundServer {
            protocol,
            server_ips: pod.ips.clone(),
            authorizations,
            http_routes,
            labels,
        })
    }
}

fn default_authz(policy: DefaultPolicy) -> Option<Authz> {
    let clients = match policy {
        DefaultPolicy::AllUnauthenticated => Clients::Unauthenticated,
        DefaultPolicy::AllAuthenticated => Clients::AnyMeshTls,
        DefaultPolicy::Deny => return None,
    };
    Some(Authz {
        origin: AuthzOrigin::Default(policy.as_str()),
        clients,
    })
}

fn target_policy(
    cfg: &IndexConfig,
    ns: &Namespace,
    targets: &[&AccessRule],
    port: u16,
) -> (Vec<Authz>, Vec<InboundRoute>) {
    let mut server: Vec<Authz> = Vec::new();
    // Distinct match sets, in first-seen order, with the targets admitting them.
    let mut routes: Vec<(Vec<RouteMatch>, Vec<Authz>)> = Vec::new();
    for target in targets {
        let authz = Authz {
            origin: AuthzOrigin::TrafficTarget {
                namespace: target.source.namespace.clone(),
                name: target.source.name.clone(),
            },
            clients: Clients::Identities(
                target
                    .sources
                    .iter()
                    .map(|sa| {
                        WorkloadIdentity {
                            namespace: sa.namespace.clone(),
                            service_account: sa.name.clone(),
                            control_plane_ns: cfg.control_plane_ns.clone(),
                            trust_domain: cfg.trust_domain.clone(),
                        }
                        .dns_name()
                    })
                    .collect(),
            ),
        };
        if target.rules.is_empty() {
            server.push(authz);
            continue;
        }
        for rule in &target.rules {
            match rule.route.kind {
                RouteKind::TcpRoute => {
                    let covers = ns
                        .tcp_routes
                        .get(&rule.route.name)
                        .is_some_and(|r| r.ports.is_empty() || r.ports.contains(&port));
                    if covers && !server.contains(&authz) {
                        server.push(authz.clone());
                    }
                }
                // UDP is not proxied.
                RouteKind::UdpRoute => {}
                RouteKind::HttpRouteGroup => {
                    let Some(group) = ns.route_groups.get(&rule.route.name) else {
                        continue;
                    };
                    let matches: Vec<RouteMatch> = group
                        .matches
                        .iter()
                        .filter(|m| rule.matches.is_empty() || rule.matches.contains(&m.name))
                        .flat_map(smi_matches)
                        .collect();
                    if matches.is_empty() {
                        continue;
                    }
                    match routes.iter_mut().find(|(m, _)| *m == matches) {
                        Some((_, authzs)) if !authzs.contains(&authz) => authzs.push(authz.clone()),
                        Some(_) => {}
                        None => routes.push((matches, vec![authz.clone()])),
                    }
                }
            }
        }
    }
    let mut http_routes = vec![InboundRoute {
        name: "default".to_string(),
        matches: vec![match_all()],
        authorizations: server.clone(),
    }];
    for (matches, mut authzs) in routes {
        let name = route_name(&authzs);
        // A client admitted to the whole port keeps access to the specific routes too:
        // the proxy checks only the best-matching route's authorizations.
        for a in &server {
            if !authzs.contains(a) {
                authzs.push(a.clone());
            }
        }
        http_routes.push(InboundRoute {
            name,
            matches,
            authorizations: authzs,
        });
    }
    (server, http_routes)
}

/// Names a route after the TrafficTargets admitting to it, e.g. `traffictarget:a,b`.
fn route_name(authzs: &[Authz]) -> String {
    let names: Vec<&str> = authzs
        .iter()
        .filter_map(|a| match &a.origin {
            AuthzOrigin::TrafficTarget { name, .. } => Some(name.as_str()),
            AuthzOrigin::Default(_) => None,
        })
        .collect();
    format!("traffictarget:{}", names.join(","))
}
