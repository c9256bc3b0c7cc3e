//! The checks themselves. Each reads a few API paths through [`RawApi`] and turns the
//! JSON into [`CheckResult`]s; a check that cannot reach the API fails with the reason.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::cluster::{Fetched, RawApi};
use super::{CheckResult, Report, Status};

mod data_plane;
mod identity;
mod post;
mod pre;

/// The oldest Kubernetes we support: native sidecars (restartable init containers) are
/// on by default from 1.29.
pub const MIN_KUBERNETES: (u64, u64) = (1, 29);

/// How long certificates must stay valid before a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(60 * 24 * 3600);

/// What to check.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pre-install checks instead of post-install ones.
    pub pre: bool,
    /// Also check every meshed pod's proxy.
    pub proxy: bool,
    /// The control plane's namespace.
    pub namespace: String,
    /// The proxy version this CLI injects.
    pub version: String,
    /// The time certificates are judged at.
    pub now: SystemTime,
}

const API: &str = "kubernetes-api";
const VERSION: &str = "kubernetes-version";
pub(super) const PRE: &str = "pre-kubernetes-setup";
pub(super) const CRDS: &str = "linkerd-lite-crds";
pub(super) const EXISTENCE: &str = "linkerd-lite-existence";
pub(super) const IDENTITY: &str = "linkerd-lite-identity";
pub(super) const CONTROL_PLANE: &str = "linkerd-lite-control-plane";
pub(super) const DATA_PLANE: &str = "linkerd-lite-data-plane";

/// Runs every applicable check. `client` is the result of building a client, so that a
/// bad kubeconfig is reported as the first failed check rather than an error.
pub async fn run(client: anyhow::Result<kube::Client>, opts: &Options) -> Report {
    let mut r = Report::default();
    let client = match client {
        Ok(c) => {
            r.results
                .push(CheckResult::ok(API, "can initialize the client"));
            c
        }
        Err(e) => {
            r.results.push(CheckResult::fail(
                API,
                "can initialize the client",
                Status::Error,
                format!("{e}: {}", e.root_cause()),
                "check the kubeconfig (--kubeconfig, $KUBECONFIG) and --context",
            ));
            return r;
        }
    };
    let api = RawApi::new(client);
    let version = match api.get("/version").await {
        Ok(Fetched::Found(v)) => {
            r.results
                .push(CheckResult::ok(API, "can query the Kubernetes API"));
            v
        }
        other => {
            r.results.push(CheckResult::fail(
                API,
                "can query the Kubernetes API",
                Status::Error,
                describe(other.map(|_| ())),
                "check that the API server is reachable and the credentials are valid",
            ));
            return r;
        }
    };
    r.results.push(check_version(&version));
    if opts.pre {
        pre::checks(&api, opts, &mut r).await;
    } else {
        post::checks(&api, opts, &mut r).await;
    }
    r
}

pub(super) fn describe(e: Result<(), kube::Error>) -> String {
    match e {
        Ok(()) => "the API server answered 404 Not Found".to_string(),
        Err(kube::Error::Api(s)) => format!("the API server answered {}: {}", s.code, s.message),
        Err(e) => format!("{:#}", anyhow::Error::new(e)),
    }
}

fn check_version(v: &Value) -> CheckResult {
    let (min_major, min_minor) = MIN_KUBERNETES;
    let desc = format!("is running the minimum Kubernetes API version ({min_major}.{min_minor})");
    let num = |k: &str| -> Option<u64> {
        let s = v.get(k)?.as_str()?;
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()
    };
    match (num("major"), num("minor")) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_KUBERNETES => {
            CheckResult::ok(VERSION, desc)
        }
        (Some(major), Some(minor)) => CheckResult::fail(
            VERSION,
            desc,
            Status::Error,
            format!("the cluster runs Kubernetes {major}.{minor}"),
            "upgrade the cluster; native sidecars need Kubernetes 1.29 or newer",
        ),
        _ => CheckResult::fail(
            VERSION,
            desc,
            Status::Error,
            format!("cannot read major/minor from /version: {v}"),
            "check that the server is a Kubernetes API server",
        ),
    }
}

pub(super) fn item_names(list: &Value) -> Vec<String> {
    list.get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn api_failure(
    category: &'static str,
    desc: impl Into<String>,
    e: kube::Error,
) -> CheckResult {
    CheckResult::fail(
        category,
        desc,
        Status::Error,
        describe(Err(e)),
        "check that the API server is reachable and the credentials may read this",
    )
}
