//! After installing: the CRDs, the control plane's Deployments, its identity material
//! and its readiness.

use serde_json::Value;

use super::{CONTROL_PLANE, CRDS, EXISTENCE, Options, api_failure, data_plane, describe, identity};
use crate::check::cluster::{Fetched, RawApi, crd_path};
use crate::check::{CheckResult, Report, Status};
use crate::names;

pub(super) async fn checks(api: &RawApi, opts: &Options, r: &mut Report) {
    for crd in smi_crds::crd::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let expected: Vec<String> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.clone())
            .collect();
        r.results.push(check_crd(api, &name, &expected).await);
    }
    let ns = &opts.namespace;
    let desc = "control plane namespace exists";
    let ns_ok = match api.get(&format!("/api/v1/namespaces/{ns}")).await {
        Ok(Fetched::Found(_)) => CheckResult::ok(EXISTENCE, desc),
        Ok(Fetched::NotFound) => CheckResult::fail(
            EXISTENCE,
            desc,
            Status::Error,
            format!("namespace {ns} does not exist"),
            "install the control plane: mesh install | kubectl apply -f -",
        ),
        Err(e) => api_failure(EXISTENCE, desc, e),
    };
    let missing_ns = ns_ok.status == Status::Error;
    r.results.push(ns_ok);
    if missing_ns {
        return;
    }
    for c in [names::DESTINATION, names::IDENTITY] {
        r.results.push(check_deployment(api, ns, c).await);
    }
    let anchors = identity::checks(api, ns, opts.now, r).await;
    for c in [names::DESTINATION, names::IDENTITY] {
        let desc = format!("{c} service is ready");
        let path = format!(
            "/api/v1/namespaces/{ns}/services/{}:{}/proxy/ready",
            names::component(c),
            names::ADMIN_PORT_NAME
        );
        r.results.push(match api.get_text(&path).await {
            Ok(_) => CheckResult::ok(CONTROL_PLANE, desc),
            Err(e) => CheckResult::fail(
                CONTROL_PLANE,
                desc,
                Status::Error,
                format!("/ready through the API server: {}", describe(Err(e))),
                format!(
                    "look at its logs: kubectl -n {ns} logs deploy/{}",
                    names::component(c)
                ),
            ),
        });
    }
    if opts.proxy {
        data_plane::checks(api, opts, anchors.as_deref(), r).await;
    }
}

async fn check_crd(api: &RawApi, name: &str, expected: &[String]) -> CheckResult {
    let desc = format!("CRD {name} serves {}", expected.join(", "));
    let hint = "install or upgrade the CRDs: mesh install --crds | kubectl apply -f -";
    match api.get(&crd_path(name)).await {
        Ok(Fetched::Found(crd)) => {
            let served: Vec<&str> = crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v["served"] == true)
                        .filter_map(|v| v["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let missing: Vec<&str> = expected
                .iter()
                .map(String::as_str)
                .filter(|v| !served.contains(v))
                .collect();
            if missing.is_empty() {
                CheckResult::ok(CRDS, desc)
            } else {
                CheckResult::fail(
                    CRDS,
                    desc,
                    Status::Error,
                    format!("not served: {}", missing.join(", ")),
                    hint,
                )
            }
        }
        Ok(Fetched::NotFound) => CheckResult::fail(
            CRDS,
            desc,
            Status::Error,
            format!("{name} is not installed"),
            hint,
        ),
        Err(e) => api_failure(CRDS, desc, e),
    }
}

async fn check_deployment(api: &RawApi, ns: &str, c: &str) -> CheckResult {
    let name = names::component(c);
    let desc = format!("{name} deployment is available");
    let hint = format!("kubectl -n {ns} describe deploy/{name}");
    match api
        .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"))
        .await
    {
        Ok(Fetched::Found(d)) => {
            let want = d
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let have = d
                .pointer("/status/availableReplicas")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if have >= want {
                CheckResult::ok(EXISTENCE, desc)
            } else {
                CheckResult::fail(
                    EXISTENCE,
                    desc,
                    Status::Error,
                    format!("{have} of {want} replicas available"),
                    hint,
                )
            }
        }
        Ok(Fetched::NotFound) => CheckResult::fail(
            EXISTENCE,
            desc,
            Status::Error,
            format!("deployment {ns}/{name} does not exist"),
            "install the control plane: mesh install | kubectl apply -f -",
        ),
        Err(e) => api_failure(EXISTENCE, desc, e),
    }
}
