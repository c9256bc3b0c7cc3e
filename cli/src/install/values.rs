//! The install's values: defaults, a `--values` file, `--set path=value` and flags, in
//! that order. The same names and defaults are in the Helm chart's `values.yaml`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smi_crds::mesh;

use crate::names;
use crate::patch::PortList;

/// Everything `mesh install` can be told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Values {
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The trust domain of workload identities.
    pub identity_trust_domain: String,
    /// Where the images come from.
    pub image: Image,
    /// The control-plane components' log filter.
    pub log_level: String,
    /// The mesh-wide policy for destinations without a TrafficTarget.
    pub default_inbound_policy: String,
    /// The destination service.
    pub destination: Component,
    /// The identity service.
    pub identity: Component,
    /// Defaults recorded for the proxy.
    pub proxy: Proxy,
}

/// Image registry, tag and pull policy, shared by every component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    /// e.g. `ghcr.io/linkerd-lite`; images are `{registry}/{component}:{tag}`.
    pub registry: String,
    /// The image tag, e.g. `v0.1.0`.
    pub tag: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub pull_policy: String,
}

/// A control-plane Deployment's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    /// Number of pods.
    pub replicas: u32,
    /// Requests and limits.
    pub resources: Resources,
}

/// Requests and limits as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// e.g. `100m`.
    pub cpu_request: String,
    /// e.g. `50Mi`.
    pub memory_request: String,
    /// e.g. `250Mi`.
    pub memory_limit: String,
}

/// Proxy defaults, recorded in the config ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    /// The proxy's log filter.
    pub log_level: String,
    /// Requests and limits.
    pub resources: Resources,
    /// Inbound ports not intercepted, e.g. `25,8000-8100`.
    pub skip_inbound_ports: String,
    /// Outbound ports not intercepted.
    pub skip_outbound_ports: String,
    /// Inbound ports carrying opaque TCP.
    pub opaque_ports: String,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            identity_trust_domain: mesh::DEFAULT_TRUST_DOMAIN.into(),
            image: Image {
                registry: names::DEFAULT_REGISTRY.into(),
                tag: names::VERSION.into(),
                pull_policy: "IfNotPresent".into(),
            },
            log_level: "info".into(),
            default_inbound_policy: "all-unauthenticated".into(),
            destination: Component {
                replicas: 1,
                resources: Resources {
                    cpu_request: "100m".into(),
                    memory_request: "50Mi".into(),
                    memory_limit: "250Mi".into(),
                },
            },
            identity: Component {
                replicas: 1,
                resources: Resources {
                    cpu_request: "100m".into(),
                    memory_request: "20Mi".into(),
                    memory_limit: "250Mi".into(),
                },
            },
            proxy: Proxy {
                log_level: "info".into(),
                resources: Resources {
                    cpu_request: "100m".into(),
                    memory_request: "20Mi".into(),
                    memory_limit: "250Mi".into(),
                },
                skip_inbound_ports: String::new(),
                skip_outbound_ports: String::new(),
                opaque_ports: String::new(),
            },
        }
    }
}

/// Why values are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// The values file could not be read.
    #[error("cannot read values file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The values file is not YAML.
    #[error("values file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A `--set` is not `path=value`.
    #[error("--set {0:?} is not of the form path.to.key=value")]
    Set(String),
    /// A value has the wrong type or an unknown key.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the value came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// The paths the Helm chart takes that `mesh install` gets from flags instead; allowed in
/// a values file so one file serves both.
const HELM_ONLY: &[&str] = &["identityTrustAnchorsPEM", "installNamespace"];

impl Values {
    /// Defaults overlaid with a values file (if any) and `--set` entries.
    pub fn load(file: Option<&Path>, sets: &[String]) -> Result<Self, ValuesError> {
        let mut tree =
            serde_json::to_value(Values::default()).map_err(|e| ValuesError::Invalid {
                origin: "defaults".into(),
                message: e.to_string(),
            })?;
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ValuesError::Read {
                path: shown.clone(),
                source,
            })?;
            let mut overlay: Value =
                serde_saphyr::from_str(&text).map_err(|e| ValuesError::Parse {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
            if let Some(obj) = overlay.as_object_mut() {
                for key in HELM_ONLY {
                    obj.shift_remove(*key);
                }
                if let Some(id) = obj.get_mut("identity").and_then(Value::as_object_mut) {
                    id.shift_remove("issuer");
                }
            }
            merge(&mut tree, overlay);
            Self::from_tree(tree.clone(), &format!("values file {shown}"))?;
        }
        for set in sets {
            let (path, raw) = set
                .split_once('=')
                .filter(|(p, _)| !p.is_empty())
                .ok_or_else(|| ValuesError::Set(set.clone()))?;
            // A string-typed value takes the text as is (`opaquePorts=3306`); others parse
            // as a YAML scalar, so `replicas=3` is a number.
            let pointer = format!("/{}", path.replace('.', "/"));
            let value: Value = match tree.pointer(&pointer) {
                Some(Value::String(_)) => Value::String(raw.to_string()),
                _ => serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string())),
            };
            let mut overlay = value;
            for seg in path.rsplit('.') {
                let mut m = serde_json::Map::new();
                m.insert(seg.to_string(), overlay);
                overlay = Value::Object(m);
            }
            merge(&mut tree, overlay);
            Self::from_tree(tree.clone(), &format!("--set {set}"))?;
        }
        Self::from_tree(tree, "values")
    }

    fn from_tree(tree: Value, origin: &str) -> Result<Self, ValuesError> {
        serde_json::from_value(tree).map_err(|e| ValuesError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Checks the values that have a fixed set of forms.
    pub fn validate(&self) -> Result<(), ValuesError> {
        let bad = |field: &str, message: String| ValuesError::Invalid {
            origin: format!("value {field}"),
            message,
        };
        const POLICIES: &[&str] = &["all-unauthenticated", "all-authenticated", "deny"];
        if !POLICIES.contains(&self.default_inbound_policy.as_str()) {
            return Err(bad(
                "defaultInboundPolicy",
                format!(
                    "{:?} is not one of {}",
                    self.default_inbound_policy,
                    POLICIES.join(", ")
                ),
            ));
        }
        for (field, c) in [
            ("destination", &self.destination),
            ("identity", &self.identity),
        ] {
            if c.replicas == 0 {
                return Err(bad(
                    &format!("{field}.replicas"),
                    "must be at least 1".into(),
                ));
            }
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image.pull_policy.as_str()) {
            return Err(bad(
                "image.pullPolicy",
                format!(
                    "{:?} is not Always, IfNotPresent or Never",
                    self.image.pull_policy
                ),
            ));
        }
        for (field, ports) in [
            ("proxy.skipInboundPorts", &self.proxy.skip_inbound_ports),
            ("proxy.skipOutboundPorts", &self.proxy.skip_outbound_ports),
            ("proxy.opaquePorts", &self.proxy.opaque_ports),
        ] {
            ports
                .parse::<PortList>()
                .map_err(|e| bad(field, e.to_string()))?;
        }
        if !mesh::is_dns_label(self.identity_trust_domain.split('.').next().unwrap_or("")) {
            return Err(bad(
                "identityTrustDomain",
                format!("{:?} is not a DNS name", self.identity_trust_domain),
            ));
        }
        Ok(())
    }
}

/// Overlays `over` onto `base`: maps merge key by key, anything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_overrides_with_yaml_scalars() {
        let v = Values::load(
            None,
            &[
                "destination.replicas=3".into(),
                "image.tag=v9".into(),
                "proxy.opaquePorts=3306".into(),
                "image.tag=1.2".into(),
            ],
        )
        .unwrap();
        assert_eq!(v.destination.replicas, 3);
        assert_eq!(v.image.tag, "1.2", "string values stay text");
        assert_eq!(v.proxy.opaque_ports, "3306");
        assert_eq!(v.identity.replicas, 1);
    }

    #[test]
    fn unknown_and_mistyped_values_name_their_origin() {
        let e = Values::load(None, &["destination.replicaz=3".into()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--set destination.replicaz=3: unknown field `replicaz`"),
            "{e}"
        );
        let e = Values::load(None, &["destination.replicas=many".into()]).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = Values::load(None, &["nonsense".into()]).unwrap_err();
        assert!(e.to_string().contains("path.to.key=value"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let v = Values {
            default_inbound_policy: "allow".into(),
            ..Values::default()
        };
        let e = v.validate().unwrap_err();
        assert!(
            e.to_string().starts_with("value defaultInboundPolicy"),
            "{e}"
        );
        let mut v = Values::default();
        v.proxy.skip_outbound_ports = "x".into();
        assert!(
            v.validate()
                .unwrap_err()
                .to_string()
                .contains("proxy.skipOutboundPorts")
        );
        assert!(Values::default().validate().is_ok());
    }
}
