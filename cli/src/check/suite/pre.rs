//! Before installing: no previous installation, and permission to create what
//! `mesh install` renders.

use serde_json::{Value, json};
use smi_crds::mesh::annotations;

use super::{Options, PRE, api_failure, item_names};
use crate::check::cluster::{Fetched, RawApi};
use crate::check::{CheckResult, Report, Status};

pub(super) async fn checks(api: &RawApi, opts: &Options, r: &mut Report) {
    let ns = &opts.namespace;
    let desc = "control plane namespace does not already exist";
    r.results.push(match api.get(&format!("/api/v1/namespaces/{ns}")).await {
        Ok(Fetched::NotFound) => CheckResult::ok(PRE, desc),
        Ok(Fetched::Found(_)) => CheckResult::fail(
            PRE,
            desc,
            Status::Error,
            format!("namespace {ns} exists"),
            "the control plane may already be installed: run `mesh check` instead, or delete the namespace",
        ),
        Err(e) => api_failure(PRE, desc, e),
    });
    for (group, resource, namespaced) in [
        ("", "namespaces", false),
        ("apiextensions.k8s.io", "customresourcedefinitions", false),
        ("rbac.authorization.k8s.io", "clusterroles", false),
        ("rbac.authorization.k8s.io", "clusterrolebindings", false),
        ("", "serviceaccounts", true),
        ("", "services", true),
        ("", "configmaps", true),
        ("", "secrets", true),
        ("apps", "deployments", true),
    ] {
        let desc = format!("can create {resource}");
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": { "resourceAttributes": {
                "group": group,
                "resource": resource,
                "verb": "create",
                "namespace": if namespaced { ns.as_str() } else { "" },
            } },
        });
        let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        r.results.push(match api.post(path, &review).await {
            Ok(v) if v.pointer("/status/allowed") == Some(&Value::Bool(true)) => {
                CheckResult::ok(PRE, desc)
            }
            Ok(v) => CheckResult::fail(
                PRE,
                desc,
                Status::Error,
                format!(
                    "not allowed{}",
                    v.pointer("/status/reason")
                        .and_then(Value::as_str)
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                ),
                "install with a cluster-admin account",
            ),
            Err(e) => api_failure(PRE, desc, e),
        });
    }
    let desc = "no cluster-wide control-plane objects already exist";
    let path = format!(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles?labelSelector={}",
        annotations::CONTROL_PLANE_NS
    );
    r.results.push(match api.get(&path).await {
        Ok(Fetched::Found(list)) => {
            let existing = item_names(&list);
            if existing.is_empty() {
                CheckResult::ok(PRE, desc)
            } else {
                CheckResult::fail(
                    PRE,
                    desc,
                    Status::Error,
                    format!("clusterroles exist: {}", existing.join(", ")),
                    "remove the previous installation (mesh install --ignore-cluster | kubectl delete -f -)",
                )
            }
        }
        Ok(Fetched::NotFound) => CheckResult::ok(PRE, desc),
        Err(e) => api_failure(PRE, desc, e),
    });
}
