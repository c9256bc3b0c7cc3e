//! The objects, by namespace, with the secondary lookups the answers need (slices by
//! Service, owners by IP).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use smi_crds::model::{AccessRule, HttpRouteGroup, PortRoute, RouteKind, Split};

use super::objects::{Change, EndpointSlice, Kind, Object, ObjectRef, Pod, Route, Service};

/// The objects of one namespace.
#[derive(Debug, Default)]
pub(crate) struct Namespace {
    pub(crate) services: HashMap<String, Service>,
    pub(crate) slices: HashMap<String, EndpointSlice>,
    /// Service name → names of its slices.
    pub(crate) slices_by_service: HashMap<String, BTreeSet<String>>,
    pub(crate) pods: HashMap<String, Pod>,
    pub(crate) splits: HashMap<String, Split>,
    pub(crate) route_groups: HashMap<String, HttpRouteGroup>,
    pub(crate) tcp_routes: HashMap<String, PortRoute>,
    pub(crate) udp_routes: HashMap<String, PortRoute>,
    pub(crate) access_rules: HashMap<String, AccessRule>,
    pub(crate) http_routes: HashMap<String, Route>,
}

/// Who owns an IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IpOwner {
    /// A Service's cluster IP.
    Service { namespace: String, name: String },
    /// A pod's IP.
    Pod { namespace: String, name: String },
}

/// Every object the index holds.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) namespaces: HashMap<String, Namespace>,
    pub(crate) ips: HashMap<IpAddr, IpOwner>,
}

impl Store {
    pub(crate) fn namespace(&self, ns: &str) -> Option<&Namespace> {
        self.namespaces.get(ns)
    }

    /// Applies one change, returning the namespace it touched.
    pub(crate) fn apply(&mut self, change: Change) -> String {
        match change {
            Change::Upsert(obj) => {
                let r = obj.object_ref();
                self.delete(&r);
                self.insert(obj);
                r.namespace
            }
            Change::Delete(r) => {
                self.delete(&r);
                r.namespace
            }
        }
    }

    fn insert(&mut self, obj: Object) {
        let r = obj.object_ref();
        let ns = self.namespaces.entry(r.namespace.clone()).or_default();
        match obj {
            Object::Service(s) => {
                for ip in &s.cluster_ips {
                    self.ips.insert(
                        *ip,
                        IpOwner::Service {
                            namespace: r.namespace.clone(),
                            name: r.name.clone(),
                        },
                    );
                }
                ns.services.insert(r.name, s);
            }
            Object::EndpointSlice(s) => {
                ns.slices_by_service
                    .entry(s.service.clone())
                    .or_default()
                    .insert(r.name.clone());
                ns.slices.insert(r.name, s);
            }
            Object::Pod(p) => {
                for ip in &p.ips {
                    self.ips.insert(
                        *ip,
                        IpOwner::Pod {
                            namespace: r.namespace.clone(),
                            name: r.name.clone(),
                        },
                    );
                }
                ns.pods.insert(r.name, p);
            }
            Object::Split(s) => {
                ns.splits.insert(r.name, s);
            }
            Object::HttpRouteGroup(g) => {
                ns.route_groups.insert(r.name, g);
            }
            Object::PortRoute(p) => {
                let map = match p.kind {
                    RouteKind::UdpRoute => &mut ns.udp_routes,
                    _ => &mut ns.tcp_routes,
                };
                map.insert(r.name, p);
            }
            Object::AccessRule(a) => {
                ns.access_rules.insert(r.name, a);
            }
            Object::HttpRoute(route) => {
                ns.http_routes.insert(r.name, route);
            }
        }
    }

    fn delete(&mut self, r: &ObjectRef) {
        let Some(ns) = self.namespaces.get_mut(&r.namespace) else {
            return;
        };
        let owner_ips: Vec<IpAddr> = match r.kind {
            Kind::Service => ns
                .services
                .remove(&r.name)
                .map(|s| s.cluster_ips)
                .unwrap_or_default(),
            Kind::Pod => ns.pods.remove(&r.name).map(|p| p.ips).unwrap_or_default(),
            Kind::EndpointSlice => {
                if let Some(s) = ns.slices.remove(&r.name)
                    && let Some(set) = ns.slices_by_service.get_mut(&s.service)
                {
                    set.remove(&r.name);
                    if set.is_empty() {
                        ns.slices_by_service.remove(&s.service);
                    }
                }
                Vec::new()
            }
            Kind::TrafficSplit => {
                ns.splits.remove(&r.name);
                Vec::new()
            }
            Kind::HttpRouteGroup => {
                ns.route_groups.remove(&r.name);
                Vec::new()
            }
            Kind::TcpRoute => {
                ns.tcp_routes.remove(&r.name);
                Vec::new()
            }
            Kind::UdpRoute => {
                ns.udp_routes.remove(&r.name);
                Vec::new()
            }
            Kind::TrafficTarget => {
                ns.access_rules.remove(&r.name);
                Vec::new()
            }
            Kind::HttpRoute => {
                ns.http_routes.remove(&r.name);
                Vec::new()
            }
        };
        for ip in owner_ips {
            // Only forget an IP that still points at this object: another object may
            // have claimed it since.
            let ours = match self.ips.get(&ip) {
                Some(IpOwner::Service { namespace, name }) => {
                    r.kind == Kind::Service && *namespace == r.namespace && *name == r.name
                }
                Some(IpOwner::Pod { namespace, name }) => {
                    r.kind == Kind::Pod && *namespace == r.namespace && *name == r.name
                }
                None => false,
            };
            if ours {
                self.ips.remove(&ip);
            }
        }
    }

    /// Every object of one kind, by reference (for re-lists).
    pub(crate) fn refs_of(&self, kind: Kind) -> Vec<ObjectRef> {
        let mut out = Vec::new();
        for (ns_name, ns) in &self.namespaces {
            let names: Vec<&String> = match kind {
                Kind::Service => ns.services.keys().collect(),
                Kind::EndpointSlice => ns.slices.keys().collect(),
                Kind::Pod => ns.pods.keys().collect(),
                Kind::TrafficSplit => ns.splits.keys().collect(),
                Kind::HttpRouteGroup => ns.route_groups.keys().collect(),
                Kind::TcpRoute => ns.tcp_routes.keys().collect(),
                Kind::UdpRoute => ns.udp_routes.keys().collect(),
                Kind::TrafficTarget => ns.access_rules.keys().collect(),
                Kind::HttpRoute => ns.http_routes.keys().collect(),
            };
            out.extend(names.into_iter().map(|name| ObjectRef {
                kind,
                namespace: ns_name.clone(),
                name: name.clone(),
            }));
        }
        out
    }

    /// How many objects of one kind are held.
    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.namespaces
            .values()
            .map(|ns| match kind {
                Kind::Service => ns.services.len(),
                Kind::EndpointSlice => ns.slices.len(),
                Kind::Pod => ns.pods.len(),
                Kind::TrafficSplit => ns.splits.len(),
                Kind::HttpRouteGroup => ns.route_groups.len(),
                Kind::TcpRoute => ns.tcp_routes.len(),
                Kind::UdpRoute => ns.udp_routes.len(),
                Kind::TrafficTarget => ns.access_rules.len(),
                Kind::HttpRoute => ns.http_routes.len(),
            })
            .sum()
    }
}
