//! `mesh check --proxy`: the proxies of meshed pods.

use serde_json::Value;
use smi_crds::mesh::annotations;

use super::{DATA_PLANE, Options, api_failure};
use crate::check::cluster::{Fetched, RawApi};
use crate::check::{CheckResult, Report, Status};

/// Every meshed pod's proxy: ready, on this version, trusting the installed anchors.
pub(super) async fn checks(
    api: &RawApi,
    opts: &Options,
    anchors_digest: Option<&str>,
    r: &mut Report,
) {
    let path = format!(
        "/api/v1/pods?labelSelector={}%3D{}",
        annotations::PROXY_CONTROL_PLANE_NS,
        opts.namespace
    );
    let desc = "data plane proxies are ready";
    let pods = match api.get(&path).await {
        Ok(Fetched::Found(list)) => list["items"].as_array().cloned().unwrap_or_default(),
        Ok(Fetched::NotFound) => Vec::new(),
        Err(e) => {
            r.results.push(api_failure(DATA_PLANE, desc, e));
            return;
        }
    };
    let mut unready = Vec::new();
    let mut old = Vec::new();
    let mut untrusting = Vec::new();
    for pod in &pods {
        let id = format!(
            "{}/{}",
            pod.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            pod.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
        let statuses = ["initContainerStatuses", "containerStatuses"]
            .iter()
            .filter_map(|k| pod["status"][*k].as_array())
            .flatten();
        let ready = statuses
            .filter(|s| s["name"] == smi_crds::mesh::PROXY_CONTAINER_NAME)
            .any(|s| s["ready"] == true);
        if !ready {
            unready.push(id.clone());
        }
        let ann = |k: &str| pod["metadata"]["annotations"][k].as_str();
        match ann(annotations::PROXY_VERSION) {
            Some(v) if v == opts.version => {}
            v => old.push(format!("{id} ({})", v.unwrap_or("unknown"))),
        }
        if let Some(want) = anchors_digest
            && ann(annotations::TRUST_ANCHOR_DIGEST) != Some(want)
        {
            untrusting.push(id);
        }
    }
    let count = pods.len();
    r.results.push(if unready.is_empty() {
        CheckResult::ok(DATA_PLANE, format!("{desc} ({count} pods)"))
    } else {
        CheckResult::fail(
            DATA_PLANE,
            format!("{desc} ({count} pods)"),
            Status::Error,
            format!("not ready: {}", unready.join(", ")),
            "kubectl logs <pod> -c linkerd-lite-proxy",
        )
    });
    let desc = format!("data plane proxies are on version {}", opts.version);
    r.results.push(if old.is_empty() {
        CheckResult::ok(DATA_PLANE, desc)
    } else {
        CheckResult::fail(
            DATA_PLANE,
            desc,
            Status::Warning,
            old.join(", "),
            "re-inject and restart these workloads with this version of mesh",
        )
    });
    let desc = "data plane proxies use the installed trust anchors";
    r.results.push(if untrusting.is_empty() {
        CheckResult::ok(DATA_PLANE, desc)
    } else {
        CheckResult::fail(
            DATA_PLANE,
            desc,
            Status::Warning,
            untrusting.join(", "),
            "re-inject and restart these workloads so they trust the current anchors",
        )
    });
}
