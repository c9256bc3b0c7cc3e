//! Gateway API HTTPRoute (`gateway.networking.k8s.io/v1` and `v1beta1`) attached to
//! Services (GAMMA), turned into the index's [`Route`].
//!
//! Only the fields mesh routing uses are read. Parents other than core Services in the
//! route's namespace are ignored (a route attached only to Gateways is not ours);
//! backends other than Services in the route's namespace are skipped with a warning,
//! since cross-namespace references would need a ReferenceGrant.

use serde::Deserialize;
use smi_crds::model::{Source, normalize_weights};

use super::ConvertError;
use crate::index::objects::{
    PathMatch, Route, RouteBackend, RouteMatch, RouteParent, RouteRule, ValueMatch,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    api_version: String,
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: String,
    namespace: Option<String>,
    creation_timestamp: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    parent_refs: Vec<Ref>,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ref {
    group: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
    port: Option<u16>,
    weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    matches: Vec<Match>,
    #[serde(default)]
    backend_refs: Vec<Ref>,
    timeouts: Option<Timeouts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Match {
    path: Option<TypedValue>,
    #[serde(default)]
    headers: Vec<NamedValue>,
    #[serde(default)]
    query_params: Vec<NamedValue>,
    method: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TypedValue {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedValue {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Timeouts {
    request: Option<String>,
}

/// Converts an HTTPRoute document; `Ok(None)` when none of its parents is a Service in
/// its namespace.
pub fn http_route(doc: &serde_json::Value) -> Result<Option<Route>, ConvertError> {
    let object = super::doc_key(doc);
    let doc: Doc = serde_json::from_value(doc.clone()).map_err(|source| ConvertError::Schema {
        kind: "HTTPRoute",
        object: object.clone(),
        source,
    })?;
    let namespace = doc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let invalid = |field: String, reason: String| ConvertError::Invalid {
        kind: "HTTPRoute",
        object: object.clone(),
        field,
        reason,
    };
    let parents: Vec<RouteParent> = doc
        .spec
        .parent_refs
        .iter()
        .filter(|r| is_service_parent(r) && r.namespace.as_ref().is_none_or(|n| *n == namespace))
        .map(|r| RouteParent {
            service: r.name.clone(),
            port: r.port,
        })
        .collect();
    if parents.is_empty() {
        return Ok(None);
    }
    let mut rules = Vec::new();
    for (i, rule) in doc.spec.rules.iter().enumerate() {
        let mut matches = Vec::new();
        for (j, m) in rule.matches.iter().enumerate() {
            matches.push(
                route_match(m)
                    .map_err(|(f, r)| invalid(format!("spec.rules[{i}].matches[{j}].{f}"), r))?,
            );
        }
        let refs: Vec<&Ref> = rule
            .backend_refs
            .iter()
            .filter(|b| {
                let ok = is_service_backend(b) && b.namespace.as_ref().is_none_or(|n| *n == namespace);
                if !ok {
                    tracing::warn!(
                        route = %object,
                        backend = %b.name,
                        "skipping HTTPRoute backend: only Services in the route's namespace are supported"
                    );
                }
                ok
            })
            .collect();
        let weights = normalize_weights(
            &refs
                .iter()
                .map(|b| u128::from(b.weight.unwrap_or(1)))
                .collect::<Vec<_>>(),
        );
        let backends = refs
            .iter()
            .zip(weights)
            .map(|(b, weight_milli)| RouteBackend {
                service: b.name.clone(),
                port: b.port,
                weight_milli,
            })
            .collect();
        let timeout = match rule.timeouts.as_ref().and_then(|t| t.request.as_deref()) {
            Some(t) => Some(humantime::parse_duration(t).map_err(|_| {
                invalid(
                    format!("spec.rules[{i}].timeouts.request"),
                    format!("{t:?} is not a duration such as 10s or 500ms"),
                )
            })?),
            None => None,
        };
        rules.push(RouteRule {
            matches,
            backends,
            timeout,
        });
    }
    if rules.is_empty() {
        // An HTTPRoute without rules routes everything to its parent.
        rules.push(RouteRule {
            matches: Vec::new(),
            backends: Vec::new(),
            timeout: None,
        });
    }
    let retryable = match doc
        .metadata
        .annotations
        .get(smi_crds::mesh::annotations::RETRYABLE)
        .map(String::as_str)
    {
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(invalid(
                format!(
                    "metadata.annotations[{}]",
                    smi_crds::mesh::annotations::RETRYABLE
                ),
                format!("{other:?} is not true or false"),
            ));
        }
        None => None,
    };
    Ok(Some(Route {
        source: Source {
            namespace,
            name: doc.metadata.name,
            api_version: doc.api_version,
            created: doc.metadata.creation_timestamp,
        },
        parents,
        rules,
        retryable,
    }))
}

fn core_group(r: &Ref) -> bool {
    r.group
        .as_deref()
        .is_none_or(|g| g.is_empty() || g == "core")
}

/// A parentRef's kind defaults to Gateway, so a Service parent must say so. (Its group
/// should be `""`; an omitted group is tolerated, as no other group has Services.)
fn is_service_parent(r: &Ref) -> bool {
    r.kind.as_deref() == Some("Service") && core_group(r)
}

/// A backendRef's kind defaults to Service.
fn is_service_backend(r: &Ref) -> bool {
    core_group(r) && r.kind.as_deref().is_none_or(|k| k == "Service")
}

fn route_match(m: &Match) -> Result<RouteMatch, (String, String)> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".to_string()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_string());
            match p.kind.as_deref().unwrap_or("PathPrefix") {
                "Exact" => PathMatch::Exact(value),
                "PathPrefix" => PathMatch::Prefix(value),
                "RegularExpression" => {
                    check_regex(&value).map_err(|r| ("path.value".to_string(), r))?;
                    PathMatch::Regex(value)
                }
                other => {
                    return Err((
                        "path.type".to_string(),
                        format!(
                            "unknown type {other:?}: expected Exact, PathPrefix or RegularExpression"
                        ),
                    ));
                }
            }
        }
    };
    let values = |list: &[NamedValue], field: &str, lower: bool| {
        list.iter()
            .enumerate()
            .map(|(k, h)| {
                let name = if lower {
                    h.name.to_ascii_lowercase()
                } else {
                    h.name.clone()
                };
                let value = match h.kind.as_deref().unwrap_or("Exact") {
                    "Exact" => ValueMatch::Exact(h.value.clone()),
                    "RegularExpression" => {
                        check_regex(&h.value).map_err(|r| (format!("{field}[{k}].value"), r))?;
                        ValueMatch::Regex(h.value.clone())
                    }
                    other => {
                        return Err((
                            format!("{field}[{k}].type"),
                            format!("unknown type {other:?}: expected Exact or RegularExpression"),
                        ));
                    }
                };
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(RouteMatch {
        path: Some(path),
        method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
        headers: values(&m.headers, "headers", true)?,
        query_params: values(&m.query_params, "queryParams", false)?,
    })
}

fn check_regex(re: &str) -> Result<(), String> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}
