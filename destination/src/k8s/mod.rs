//! Kubernetes objects turned into the index's objects.
//!
//! Both sources use this: the files source on documents parsed from YAML, the
//! Kubernetes source on objects from the API. Conversion is pure; an object that cannot
//! be converted is an error naming it, and the caller skips it.
//!
//! # Layout
//!
//! - this file: Service, EndpointSlice and Pod, and [`from_value`], which sorts any
//!   document into the right converter;
//! - [`gateway`]: Gateway API HTTPRoute (GAMMA: routes whose parent is a Service).

pub mod gateway;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use smi_crds::convert::SmiObject;
use smi_crds::mesh::{PROXY_CONTAINER_NAME, annotations};

use crate::index::objects::{self, AppProtocol, Object};

/// Why a Kubernetes object could not be turned into an index object.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A required field is missing.
    #[error("{kind} {object}: missing field {field}")]
    Missing {
        /// The kind.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// The field's path.
        field: &'static str,
    },
    /// A field has a value that cannot be used.
    #[error("{kind} {object}: field {field}: {reason}")]
    Invalid {
        /// The kind.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// The field's path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The document does not have the shape of its kind.
    #[error("{kind} {object}: does not match the {kind} schema")]
    Schema {
        /// The kind.
        kind: &'static str,
        /// `namespace/name`, as far as it could be read.
        object: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// An SMI object failed validation.
    #[error(transparent)]
    Smi(Box<smi_crds::convert::ValidationError>),
}

/// Converts any document into an index object.
///
/// Returns `Ok(None)` for documents the index does not use (ConfigMaps, Deployments,
/// HTTPRoutes attached only to Gateways, ...). `default_ns` fills a missing
/// `metadata.namespace`, as `kubectl apply` would.
pub fn from_value(
    mut doc: serde_json::Value,
    default_ns: &str,
) -> Result<Option<Object>, ConvertError> {
    if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut())
        && !meta.contains_key("namespace")
    {
        meta.insert("namespace".to_string(), default_ns.into());
    }
    let api_version = doc
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let kind = doc
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => Some(Object::Service(service(&typed::<core::Service>(
            doc, "Service",
        )?)?)),
        ("v1", "Pod") => Some(Object::Pod(pod(&typed::<core::Pod>(doc, "Pod")?)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Some(Object::EndpointSlice(endpoint_slice(&typed::<
                discovery::EndpointSlice,
            >(
                doc,
                "EndpointSlice",
            )?)?))
        }
        (v, "HTTPRoute") if v.starts_with("gateway.networking.k8s.io/") => {
            gateway::http_route(&doc)?.map(Object::HttpRoute)
        }
        _ => smi_crds::convert::from_json(&doc)
            .map_err(|e| ConvertError::Smi(Box::new(e)))?
            .map(smi_object),
    };
    Ok(obj)
}

/// Turns an SMI model object into an index object.
pub fn smi_object(obj: SmiObject) -> Object {
    match obj {
        SmiObject::Split(s) => Object::Split(s),
        SmiObject::HttpRouteGroup(g) => Object::HttpRouteGroup(g),
        SmiObject::PortRoute(r) => Object::PortRoute(r),
        SmiObject::AccessRule(a) => Object::AccessRule(a),
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    doc: serde_json::Value,
    kind: &'static str,
) -> Result<T, ConvertError> {
    let object = doc_key(&doc);
    serde_json::from_value(doc).map_err(|source| ConvertError::Schema {
        kind,
        object,
        source,
    })
}

/// `namespace/name` of a raw document, as far as it can be read.
pub fn doc_key(doc: &serde_json::Value) -> String {
    let meta = doc.get("metadata");
    let get = |f: &str| {
        meta.and_then(|m| m.get(f))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    format!("{}/{}", get("namespace"), get("name"))
}

/// `(namespace, name)` of an object, both required.
fn names(meta: &ObjectMeta, kind: &'static str) -> Result<(String, String), ConvertError> {
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let name = meta.name.clone().ok_or_else(|| ConvertError::Missing {
        kind,
        object: format!("{namespace}/?"),
        field: "metadata.name",
    })?;
    Ok((namespace, name))
}

fn parse_ip(
    s: &str,
    kind: &'static str,
    object: &str,
    field: &str,
) -> Result<IpAddr, ConvertError> {
    s.parse().map_err(|_| ConvertError::Invalid {
        kind,
        object: object.to_string(),
        field: field.to_string(),
        reason: format!("{s:?} is not an IP address"),
    })
}

fn port_u16(p: i32, kind: &'static str, object: &str, field: &str) -> Result<u16, ConvertError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ConvertError::Invalid {
            kind,
            object: object.to_string(),
            field: field.to_string(),
            reason: format!("{p} is not a port number"),
        })
}

/// Converts a Service.
pub fn service(svc: &core::Service) -> Result<objects::Service, ConvertError> {
    let (namespace, name) = names(&svc.metadata, "Service")?;
    let object = format!("{namespace}/{name}");
    let spec = svc.spec.clone().unwrap_or_default();
    let mut cluster_ips = Vec::new();
    let ips = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default();
    for ip in ips.iter().filter(|ip| !ip.is_empty() && *ip != "None") {
        cluster_ips.push(parse_ip(ip, "Service", &object, "spec.clusterIPs")?);
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        ports.push(objects::ServicePort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: port_u16(p.port, "Service", &object, &format!("spec.ports[{i}].port"))?,
            app_protocol: p.app_protocol.clone(),
        });
    }
    let notes = Annotations::new(&svc.metadata, "Service", &object);
    Ok(objects::Service {
        namespace,
        name,
        cluster_ips,
        ports,
        opaque_ports: notes.ports(annotations::OPAQUE_PORTS),
        timeout: notes.duration(annotations::TIMEOUT),
        retryable: notes.flag(annotations::RETRYABLE).unwrap_or(false),
        failure_accrual: notes.number(annotations::FAILURE_ACCRUAL),
    })
}

/// Converts an EndpointSlice.
pub fn endpoint_slice(
    slice: &discovery::EndpointSlice,
) -> Result<objects::EndpointSlice, ConvertError> {
    let (namespace, name) = names(&slice.metadata, "EndpointSlice")?;
    let object = format!("{namespace}/{name}");
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .cloned()
        .ok_or(ConvertError::Missing {
            kind: "EndpointSlice",
            object: object.clone(),
            field: "metadata.labels[kubernetes.io/service-name]",
        })?;
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        // A port without a number means "all ports"; there is nothing to dial.
        if let Some(num) = p.port {
            let field = format!("ports[{i}].port");
            ports.push((
                p.name.clone().filter(|n| !n.is_empty()),
                port_u16(num, "EndpointSlice", &object, &field)?,
            ));
        }
    }
    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let mut addresses = Vec::new();
        for a in &ep.addresses {
            let field = format!("endpoints[{i}].addresses");
            addresses.push(parse_ip(a, "EndpointSlice", &object, &field)?);
        }
        endpoints.push(objects::SliceEndpoint {
            addresses,
            ready: ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            pod: ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                .and_then(|r| r.name.clone()),
        });
    }
    Ok(objects::EndpointSlice {
        namespace,
        name,
        service,
        ports,
        endpoints,
    })
}

/// Converts a Pod.
pub fn pod(pod: &core::Pod) -> Result<objects::Pod, ConvertError> {
    let (namespace, name) = names(&pod.metadata, "Pod")?;
    let object = format!("{namespace}/{name}");
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut ips = Vec::new();
    let raw_ips: Vec<String> = match status.pod_ips {
        Some(list) if !list.is_empty() => list.into_iter().map(|p| p.ip).collect(),
        _ => status.pod_ip.into_iter().collect(),
    };
    for ip in raw_ips.iter().filter(|ip| !ip.is_empty()) {
        ips.push(parse_ip(ip, "Pod", &object, "status.podIPs")?);
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let meshed = containers.clone().any(|c| c.name == PROXY_CONTAINER_NAME);
    let mut port_protocols = BTreeMap::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let (Ok(port), Some(pname)) = (u16::try_from(p.container_port), p.name.as_deref())
            else {
                continue;
            };
            let proto = if ["http2", "h2c", "grpc"]
                .iter()
                .any(|s| pname.starts_with(s))
            {
                Some(AppProtocol::Http2)
            } else if pname == "http" || pname.starts_with("http-") {
                Some(AppProtocol::Http1)
            } else {
                None
            };
            if let Some(proto) = proto {
                port_protocols.insert(port, proto);
            }
        }
    }
    let notes = Annotations::new(&pod.metadata, "Pod", &object);
    Ok(objects::Pod {
        service_account: spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        owner: owner(&pod.metadata),
        opaque_ports: notes.ports(annotations::OPAQUE_PORTS),
        namespace,
        name,
        ips,
        meshed,
        port_protocols,
    })
}

/// The workload owning a pod: a ReplicaSet made by a Deployment is reported as the
/// Deployment, as Linkerd's labels do.
fn owner(meta: &ObjectMeta) -> Option<(String, String)> {
    let owner = meta
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| meta.owner_references.as_ref()?.first())?;
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    if owner.kind == "ReplicaSet"
        && let Some(deploy) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}")))
    {
        return Some(("deployment".to_string(), deploy.to_string()));
    }
    Some((owner.kind.to_lowercase(), owner.name.clone()))
}

/// Reads mesh annotations; a malformed one is ignored with a warning naming it, so a
/// typo in an annotation never takes a Service out of discovery.
struct Annotations<'a> {
    map: Option<&'a BTreeMap<String, String>>,
    kind: &'static str,
    object: &'a str,
}

impl<'a> Annotations<'a> {
    fn new(meta: &'a ObjectMeta, kind: &'static str, object: &'a str) -> Self {
        Self {
            map: meta.annotations.as_ref(),
            kind,
            object,
        }
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.map?.get(key).map(|s| s.trim())
    }

    fn warn(&self, key: &str, value: &str, expected: &str) {
        tracing::warn!(
            kind = self.kind,
            object = self.object,
            annotation = key,
            value,
            "ignoring annotation: expected {expected}"
        );
    }

    fn ports(&self, key: &str) -> BTreeSet<u16> {
        let Some(value) = self.get(key) else {
            return BTreeSet::new();
        };
        match parse_port_list(value) {
            Some(ports) => ports,
            None => {
                self.warn(
                    key,
                    value,
                    "comma-separated ports or ranges such as 3306,4000-4010",
                );
                BTreeSet::new()
            }
        }
    }

    fn duration(&self, key: &str) -> Option<Duration> {
        let value = self.get(key)?;
        let parsed = humantime::parse_duration(value).ok();
        if parsed.is_none() {
            self.warn(key, value, "a duration such as 2s or 500ms");
        }
        parsed
    }

    fn flag(&self, key: &str) -> Option<bool> {
        let value = self.get(key)?;
        match value {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.warn(key, value, "true or false");
                None
            }
        }
    }

    fn number(&self, key: &str) -> Option<u32> {
        let value = self.get(key)?;
        let parsed = value.parse().ok();
        if parsed.is_none() {
            self.warn(key, value, "a non-negative integer");
        }
        parsed
    }
}

/// Parses `80,443,4000-4010`.
fn parse_port_list(s: &str) -> Option<BTreeSet<u16>> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
                if lo == 0 || lo > hi {
                    return None;
                }
                out.extend(lo..=hi);
            }
            None => {
                let p: u16 = part.parse().ok()?;
                if p == 0 {
                    return None;
                }
                out.insert(p);
            }
        }
    }
    Some(out)
}
