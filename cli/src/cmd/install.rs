//! `mesh install`: renders the CRDs or the control plane for `kubectl apply`.
//!
//! ```text
//! mesh install --crds | kubectl apply -f -
//! mesh install | kubectl apply -f -
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use smi_crds::mesh;

use super::ClusterArgs;
use crate::install::{self, IdentityMaterial, Values};
use crate::manifest;

/// Print the linkerd-lite control plane (or, with --crds, its CRDs) as YAML.
///
/// Run `mesh install --crds | kubectl apply -f -` first, then
/// `mesh install | kubectl apply -f -`. Without the identity files a new trust anchor and
/// issuer are generated; keep the output if you need them again.
#[derive(Debug, clap::Args)]
pub struct Install {
    /// Render the CustomResourceDefinitions instead of the control plane.
    #[arg(long)]
    crds: bool,

    /// A YAML values file (the Helm chart's values.yaml format).
    #[arg(long = "values", short = 'f')]
    values_file: Option<PathBuf>,

    /// Set a value by path, e.g. `--set destination.replicas=2`; repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    sets: Vec<String>,

    /// The image registry (images are REGISTRY/COMPONENT:TAG).
    #[arg(long)]
    registry: Option<String>,

    /// The image tag for the control plane and the proxy.
    #[arg(long)]
    image_tag: Option<String>,

    /// Replicas of each control-plane Deployment.
    #[arg(long)]
    replicas: Option<u32>,

    /// The control plane's log filter.
    #[arg(long)]
    log_level: Option<String>,

    /// all-unauthenticated, all-authenticated or deny.
    #[arg(long)]
    default_inbound_policy: Option<String>,

    /// The proxy's default log filter.
    #[arg(long)]
    proxy_log_level: Option<String>,

    /// The trust domain of workload identities.
    #[arg(long)]
    identity_trust_domain: Option<String>,

    /// A PEM trust-anchor bundle (with the two issuer flags).
    #[arg(long)]
    identity_trust_anchors_file: Option<PathBuf>,

    /// A PEM issuer certificate signed by a trust anchor.
    #[arg(long)]
    identity_issuer_certificate_file: Option<PathBuf>,

    /// The issuer's PEM PKCS#8 private key.
    #[arg(long)]
    identity_issuer_key_file: Option<PathBuf>,

    /// Do not ask the cluster whether the CRDs are installed.
    #[arg(long)]
    ignore_cluster: bool,

    #[command(flatten)]
    cluster: ClusterArgs,
}

impl Install {
    /// Renders and prints.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            crds,
            values_file,
            sets,
            registry,
            image_tag,
            replicas,
            log_level,
            default_inbound_policy,
            proxy_log_level,
            identity_trust_domain,
            identity_trust_anchors_file,
            identity_issuer_certificate_file,
            identity_issuer_key_file,
            ignore_cluster,
            cluster,
        } = self;
        if crds {
            let yaml = smi_crds::crd::render_yaml().context("cannot render the CRDs")?;
            super::write_stdout(&yaml)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut values = Values::load(values_file.as_deref(), &sets)?;
        if let Some(r) = registry {
            values.image.registry = r;
        }
        if let Some(t) = image_tag {
            values.image.tag = t;
        }
        if let Some(n) = replicas {
            values.destination.replicas = n;
            values.identity.replicas = n;
        }
        if let Some(l) = log_level {
            values.log_level = l;
        }
        if let Some(p) = default_inbound_policy {
            values.default_inbound_policy = p;
        }
        if let Some(l) = proxy_log_level {
            values.proxy.log_level = l;
        }
        if let Some(d) = identity_trust_domain {
            values.identity_trust_domain = d;
        }
        values.validate()?;
        let ns = mesh::DEFAULT_CONTROL_PLANE_NS;
        let identity = IdentityMaterial::load_or_generate(
            identity_trust_anchors_file.as_deref(),
            identity_issuer_certificate_file.as_deref(),
            identity_issuer_key_file.as_deref(),
            &values.identity_trust_domain,
            ns,
        )?;
        if !ignore_cluster {
            let client = cluster.client().await.context(
                "cannot reach the cluster to verify the CRDs are installed \
                 (pass --ignore-cluster to render anyway)",
            )?;
            crate::check::cluster::require_crds(&client).await?;
        }
        let objects = install::control_plane(ns, &values, &identity)?;
        let yaml = manifest::to_yaml_stream(&objects).context("cannot write the control plane")?;
        super::write_stdout(&yaml)?;
        Ok(ExitCode::SUCCESS)
    }
}
