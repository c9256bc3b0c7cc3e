//! Endpoint answers: the ready addresses behind a Service port, with identities,
//! protocol hints and metric labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use smi_crds::mesh::{WorkloadIdentity, ports};

use super::IndexConfig;
use super::answers::{DEFAULT_WEIGHT, Endpoint, EndpointSet, ProtocolHint};
use super::objects::Pod;
use super::store::{IpOwner, Store};

impl Store {
    /// The endpoints of `name.namespace` on Service port `port`.
    pub(crate) fn service_endpoints(
        &self,
        cfg: &IndexConfig,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> EndpointSet {
        let Some(ns) = self.namespace(namespace) else {
            return EndpointSet::default();
        };
        let Some(svc) = ns.services.get(name) else {
            return EndpointSet::default();
        };
        // Slice ports are matched to the Service port by name; a port the Service does
        // not declare is taken as the target port itself, as Linkerd does.
        let port_name = svc
            .ports
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.name.clone());
        let opaque = svc.opaque_ports.contains(&port);
        let mut set = EndpointSet {
            exists: true,
            labels: BTreeMap::from([
                ("namespace".to_string(), namespace.to_string()),
                ("service".to_string(), name.to_string()),
            ]),
            endpoints: BTreeMap::new(),
        };
        for slice_name in ns.slices_by_service.get(name).into_iter().flatten() {
            let Some(slice) = ns.slices.get(slice_name) else {
                continue;
            };
            let target_port = match &port_name {
                Some(wanted) => slice
                    .ports
                    .iter()
                    .find(|(n, _)| n == wanted)
                    .map(|(_, p)| *p),
                None => Some(port),
            };
            let Some(target_port) = target_port else {
                continue;
            };
            for ep in slice.endpoints.iter().filter(|e| e.ready) {
                let pod = ep.pod.as_ref().and_then(|p| ns.pods.get(p));
                for ip in &ep.addresses {
                    let addr = SocketAddr::new(*ip, target_port);
                    let opaque =
                        opaque || pod.is_some_and(|p| p.opaque_ports.contains(&target_port));
                    set.endpoints.insert(addr, endpoint(cfg, addr, pod, opaque));
                }
            }
        }
        set
    }

    /// The endpoints of a bare address: a cluster IP's Service, or a pod IP as itself.
    pub(crate) fn addr_endpoints(&self, cfg: &IndexConfig, addr: SocketAddr) -> EndpointSet {
        match self.ips.get(&addr.ip()) {
            Some(IpOwner::Service { namespace, name }) => {
                self.service_endpoints(cfg, namespace, name, addr.port())
            }
            Some(IpOwner::Pod { namespace, name }) => {
                let pod = self.namespace(namespace).and_then(|ns| ns.pods.get(name));
                let opaque = pod.is_some_and(|p| p.opaque_ports.contains(&addr.port()));
                EndpointSet {
                    exists: true,
                    labels: BTreeMap::from([("namespace".to_string(), namespace.clone())]),
                    endpoints: BTreeMap::from([(addr, endpoint(cfg, addr, pod, opaque))]),
                }
            }
            None => EndpointSet::default(),
        }
    }
}

fn endpoint(cfg: &IndexConfig, addr: SocketAddr, pod: Option<&Pod>, opaque: bool) -> Endpoint {
    let meshed = pod.filter(|p| p.meshed);
    let hint = match (meshed, opaque) {
        (Some(_), true) => ProtocolHint::Opaque {
            inbound_port: ports::PROXY_INBOUND,
        },
        (Some(_), false) => ProtocolHint::H2,
        (None, _) => ProtocolHint::Unknown,
    };
    Endpoint {
        addr,
        weight: DEFAULT_WEIGHT,
        identity: meshed.map(|p| pod_identity(cfg, p)),
        hint,
        labels: pod.map(pod_labels).unwrap_or_default(),
    }
}

/// The DNS-form identity of a pod's service account.
pub(crate) fn pod_identity(cfg: &IndexConfig, pod: &Pod) -> String {
    WorkloadIdentity {
        namespace: pod.namespace.clone(),
        service_account: pod.service_account.clone(),
        control_plane_ns: cfg.control_plane_ns.clone(),
        trust_domain: cfg.trust_domain.clone(),
    }
    .dns_name()
}

fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("namespace".to_string(), pod.namespace.clone()),
        ("pod".to_string(), pod.name.clone()),
        ("serviceaccount".to_string(), pod.service_account.clone()),
    ]);
    if let Some((kind, name)) = &pod.owner {
        labels.insert(kind.clone(), name.clone());
    }
    labels
}
