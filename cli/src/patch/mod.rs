//! Adding the proxy to workloads and taking it away again, on parsed JSON values so that
//! fields we do not know survive untouched.
//!
//! Re-injecting is idempotent by construction: [`inject`] first removes whatever a
//! previous injection added, then adds it again.

mod ports;
mod proxy;

use serde_json::{Map, Value};
use smi_crds::mesh::{self, annotations};

pub use ports::{PortList, PortListError};
pub use proxy::{InjectConfig, ProxyResources};

/// What happened to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The proxy was added (or the namespace annotated).
    Injected,
    /// The proxy was removed.
    Uninjected,
    /// Nothing to do, with the reason.
    Skipped(String),
}

/// One line of the per-object report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The object, e.g. `deployment/web`.
    pub object: String,
    /// What happened to it.
    pub outcome: Outcome,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Outcome::Injected => write!(f, "{} injected", self.object),
            Outcome::Uninjected => write!(f, "{} uninjected", self.object),
            Outcome::Skipped(why) => write!(f, "{} skipped ({why})", self.object),
        }
    }
}

/// Why an object cannot be injected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// Host-network pods share the node's network namespace; iptables rules there would
    /// capture the node's traffic.
    #[error("{object}: {field} is true; host-network pods cannot be meshed")]
    HostNetwork {
        /// The object, e.g. `deployment/web`.
        object: String,
        /// The path of the field.
        field: String,
    },
    /// A field has the wrong shape.
    #[error("{object}: field {field} must be {expected}")]
    Shape {
        /// The object.
        object: String,
        /// The path of the field.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A port annotation on the workload is malformed.
    #[error("{object}: annotation {annotation}")]
    PortAnnotation {
        /// The object.
        object: String,
        /// The annotation's name.
        annotation: &'static str,
        /// What is wrong with it.
        #[source]
        source: PortListError,
    },
}

/// Where a kind keeps its pod template, as JSON-pointer segments, or `None` for kinds
/// that hold no pods.
fn pod_template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects the proxy into every workload of a document (recursing into `List` items).
/// Returns one report per object; an unchanged document compares equal to its input.
pub fn inject(doc: &mut Value, cfg: &InjectConfig) -> Result<Vec<Report>, PatchError> {
    for_each_object(doc, &mut |obj| inject_object(obj, cfg))
}

/// Removes what [`inject`] added from every object of a document.
pub fn uninject(doc: &mut Value) -> Result<Vec<Report>, PatchError> {
    for_each_object(doc, &mut uninject_object)
}

fn for_each_object(
    doc: &mut Value,
    f: &mut dyn FnMut(&mut Value) -> Result<Report, PatchError>,
) -> Result<Vec<Report>, PatchError> {
    if doc.get("kind").and_then(Value::as_str) == Some("List") {
        let mut reports = Vec::new();
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                reports.extend(for_each_object(item, f)?);
            }
        }
        return Ok(reports);
    }
    Ok(vec![f(doc)?])
}

fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or_default()
}

fn inject_object(obj: &mut Value, cfg: &InjectConfig) -> Result<Report, PatchError> {
    let object = crate::manifest::object_ref(obj);
    let skipped = |why: &str| {
        Ok(Report {
            object: object.clone(),
            outcome: Outcome::Skipped(why.to_string()),
        })
    };
    let kind = kind_of(obj).to_string();
    if kind == "Namespace" {
        return annotate_namespace(obj, &object);
    }
    let Some(path) = pod_template_path(&kind) else {
        return skipped("not a workload");
    };
    if annotation(obj, annotations::INJECT) == Some("disabled") {
        return skipped("injection disabled by annotation");
    }
    let template = walk_mut(obj, path, &object)?;
    if annotation(template, annotations::INJECT) == Some("disabled") {
        return skipped("injection disabled by annotation");
    }
    let spec_field = field_path(path, "spec");
    let spec = template
        .get("spec")
        .ok_or_else(|| shape(&object, &spec_field, "a mapping"))?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(PatchError::HostNetwork {
            object,
            field: format!("{spec_field}.hostNetwork"),
        });
    }
    remove_proxy(template, &object, &spec_field)?;
    let workload_cfg = cfg.for_workload(template, &object)?;
    proxy::add(template, &workload_cfg, &object, &spec_field)?;
    Ok(Report {
        object,
        outcome: Outcome::Injected,
    })
}

fn uninject_object(obj: &mut Value) -> Result<Report, PatchError> {
    let object = crate::manifest::object_ref(obj);
    let kind = kind_of(obj).to_string();
    if kind == "Namespace" {
        let had = remove_annotation(obj, annotations::INJECT, Some("enabled"));
        return Ok(Report {
            object,
            outcome: if had {
                Outcome::Uninjected
            } else {
                Outcome::Skipped("not annotated".to_string())
            },
        });
    }
    let Some(path) = pod_template_path(&kind) else {
        return Ok(Report {
            object,
            outcome: Outcome::Skipped("not a workload".to_string()),
        });
    };
    let template = walk_mut(obj, path, &object)?;
    let spec_field = field_path(path, "spec");
    let removed = remove_proxy(template, &object, &spec_field)?;
    Ok(Report {
        object,
        outcome: if removed {
            Outcome::Uninjected
        } else {
            Outcome::Skipped("no proxy".to_string())
        },
    })
}

fn annotate_namespace(obj: &mut Value, object: &str) -> Result<Report, PatchError> {
    let current = annotation(obj, annotations::INJECT).map(str::to_string);
    let outcome = match current.as_deref() {
        Some("enabled") => Outcome::Skipped("already annotated".to_string()),
        Some(_) => Outcome::Skipped("injection disabled by annotation".to_string()),
        None => {
            let meta = child_map(obj, "metadata", object, "metadata")?;
            let ann = child_map_in(meta, "annotations", object, "metadata.annotations")?;
            ann.insert(annotations::INJECT.to_string(), "enabled".into());
            Outcome::Injected
        }
    };
    Ok(Report {
        object: object.to_string(),
        outcome,
    })
}

/// Removes the containers, volumes, annotations and label that injection adds. Returns
/// whether anything was there. Maps and lists left empty are removed, since injection
/// creates them when absent.
fn remove_proxy(template: &mut Value, object: &str, spec_field: &str) -> Result<bool, PatchError> {
    let mut removed = false;
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
        for (list, names) in [
            (
                "initContainers",
                &[mesh::INIT_CONTAINER_NAME, mesh::PROXY_CONTAINER_NAME][..],
            ),
            ("containers", &[mesh::PROXY_CONTAINER_NAME][..]),
            ("volumes", proxy::VOLUME_NAMES),
        ] {
            let Some(value) = spec.get_mut(list) else {
                continue;
            };
            let items = value
                .as_array_mut()
                .ok_or_else(|| shape(object, &format!("{spec_field}.{list}"), "a sequence"))?;
            let before = items.len();
            items.retain(|c| {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                !names.contains(&name)
            });
            if items.len() != before {
                removed = true;
                if items.is_empty() && list != "containers" {
                    spec.remove(list);
                }
            }
        }
    }
    for key in [annotations::PROXY_VERSION, annotations::TRUST_ANCHOR_DIGEST] {
        removed |= remove_annotation(template, key, None);
    }
    removed |= remove_meta_entry(
        template,
        "labels",
        annotations::PROXY_CONTROL_PLANE_NS,
        None,
    );
    Ok(removed)
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

fn remove_annotation(obj: &mut Value, key: &str, only_if: Option<&str>) -> bool {
    remove_meta_entry(obj, "annotations", key, only_if)
}

fn remove_meta_entry(obj: &mut Value, map: &str, key: &str, only_if: Option<&str>) -> bool {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return false;
    };
    let Some(entries) = meta.get_mut(map).and_then(Value::as_object_mut) else {
        return false;
    };
    if only_if.is_some_and(|v| entries.get(key).and_then(Value::as_str) != Some(v)) {
        return false;
    }
    let removed = entries.shift_remove(key).is_some();
    if removed && entries.is_empty() {
        meta.shift_remove(map);
        // A pod template without metadata (common in CronJobs) got it from injection.
        if meta.is_empty()
            && let Some(obj) = obj.as_object_mut()
        {
            obj.shift_remove("metadata");
        }
    }
    removed
}

fn walk_mut<'a>(
    obj: &'a mut Value,
    path: &[&str],
    object: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = obj;
    for (i, seg) in path.iter().enumerate() {
        let field = path[..=i].join(".");
        cur = cur
            .as_object_mut()
            .ok_or_else(|| shape(object, &field, "a mapping"))?
            .get_mut(*seg)
            .filter(|v| v.is_object())
            .ok_or_else(|| shape(object, &field, "a mapping"))?;
    }
    Ok(cur)
}

fn field_path(path: &[&str], last: &str) -> String {
    path.iter()
        .copied()
        .chain(std::iter::once(last))
        .collect::<Vec<_>>()
        .join(".")
}

/// The map under `key`, created (at the end) when absent.
fn child_map<'a>(
    obj: &'a mut Value,
    key: &str,
    object: &str,
    field: &str,
) -> Result<&'a mut Map<String, Value>, PatchError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| shape(object, field, "a mapping"))?;
    child_map_in(map, key, object, field)
}

fn child_map_in<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    object: &str,
    field: &str,
) -> Result<&'a mut Map<String, Value>, PatchError> {
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry
        .as_object_mut()
        .ok_or_else(|| shape(object, field, "a mapping"))
}

fn shape(object: &str, field: &str, expected: &'static str) -> PatchError {
    PatchError::Shape {
        object: object.to_string(),
        field: field.to_string(),
        expected,
    }
}

#[cfg(test)]
mod tests;
