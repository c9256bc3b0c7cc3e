//! The thin Kubernetes glue: a client from a kubeconfig, and the few reads `check` and
//! `inject` make. Everything it fetches is handed to pure code as JSON.

use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::names;

/// A client for the given kubeconfig file and context, or the usual defaults
/// (`$KUBECONFIG`, `~/.kube/config`, then in-cluster).
pub async fn kube_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .context("cannot load the kubeconfig")?,
        None => kube::Config::infer()
            .await
            .context("cannot find a kubeconfig or in-cluster configuration")?,
    };
    let mut config = config;
    // `mesh check --wait` decides when to try again; a check should report promptly.
    config.default_retry = false;
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}

/// The trust-anchor bundle of an installed control plane.
pub async fn trust_anchors(client: &kube::Client, namespace: &str) -> anyhow::Result<String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
    let cm = api
        .get(names::TRUST_ROOTS_CONFIGMAP)
        .await
        .with_context(|| {
            format!(
                "cannot read configmap {namespace}/{}",
                names::TRUST_ROOTS_CONFIGMAP
            )
        })?;
    cm.data
        .and_then(|mut d| d.remove(names::TRUST_ROOTS_KEY))
        .with_context(|| {
            format!(
                "configmap {namespace}/{} has no key {}",
                names::TRUST_ROOTS_CONFIGMAP,
                names::TRUST_ROOTS_KEY
            )
        })
}

/// A response the API server gave, reduced to what the checks need.
#[derive(Debug)]
pub enum Fetched {
    /// 2xx with a body.
    Found(serde_json::Value),
    /// 404.
    NotFound,
}

/// Raw JSON access to API paths, so the checks can be pure functions of what the API
/// server returned.
#[derive(Clone)]
pub struct RawApi {
    client: kube::Client,
}

impl RawApi {
    /// Wraps a client.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// GETs a JSON document; a 404 is [`Fetched::NotFound`], not an error.
    pub async fn get(&self, path: &str) -> Result<Fetched, kube::Error> {
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(kube::Error::HttpError)?;
        match self.client.request::<serde_json::Value>(req).await {
            Ok(v) => Ok(Fetched::Found(v)),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Fetched::NotFound),
            Err(e) => Err(e),
        }
    }

    /// POSTs a JSON body and returns the JSON response.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, kube::Error> {
        let bytes = serde_json::to_vec(body).map_err(kube::Error::SerdeError)?;
        let req = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .map_err(kube::Error::HttpError)?;
        self.client.request(req).await
    }

    /// GETs a path as text, e.g. a component's `/ready` through the service proxy.
    pub async fn get_text(&self, path: &str) -> Result<String, kube::Error> {
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(kube::Error::HttpError)?;
        self.client.request_text(req).await
    }
}

impl std::fmt::Debug for RawApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawApi").finish_non_exhaustive()
    }
}

/// The path of a CRD object.
pub fn crd_path(name: &str) -> String {
    format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
}

/// Fails unless every CRD `mesh install --crds` renders is present.
pub async fn require_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api = RawApi::new(client.clone());
    let mut missing = Vec::new();
    for crd in smi_crds::crd::all() {
        let name = crd.metadata.name.unwrap_or_default();
        match api.get(&crd_path(&name)).await {
            Ok(Fetched::Found(_)) => {}
            Ok(Fetched::NotFound) => missing.push(name),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot read customresourcedefinition {name} (pass --ignore-cluster to \
                     render anyway)"
                )));
            }
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "the linkerd-lite CRDs must be installed first (missing: {}); run: \
             mesh install --crds | kubectl apply -f -",
            missing.join(", ")
        );
    }
    Ok(())
}
