//! `mesh inject`: adds the proxy to workloads, offline.
//!
//! ```text
//! mesh inject deployment.yaml | kubectl apply -f -
//! kubectl get deploy -o yaml | mesh inject - | kubectl apply -f -
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use smi_crds::mesh;

use super::ClusterArgs;
use crate::manifest::{self, OutputFormat};
use crate::names;
use crate::patch::{self, InjectConfig, PortList, ProxyResources};

/// Add the linkerd-lite proxy to the workloads in a manifest.
///
/// Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs,
/// CronJobs and Pods get the proxy as a native sidecar and an init step that redirects
/// their traffic through it. Namespaces get the inject annotation. Everything else is
/// passed through unchanged. Injecting twice is the same as injecting once.
#[derive(Debug, clap::Args)]
pub struct Inject {
    /// A file, a directory (read recursively), or `-` for stdin.
    input: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: OutputFormat,

    /// The trust-anchor bundle (PEM) proxies use. Without it, it is read from the
    /// installed control plane's ConfigMap through the kubeconfig.
    #[arg(long, env = "MESH_IDENTITY_TRUST_ANCHORS_FILE")]
    identity_trust_anchors_file: Option<PathBuf>,

    /// The proxy image, without its tag.
    #[arg(long, default_value_t = format!("{}/proxy", names::DEFAULT_REGISTRY))]
    proxy_image: String,

    /// The proxy version: the image tag, recorded in an annotation.
    #[arg(long, default_value = names::VERSION)]
    proxy_version: String,

    /// The proxy image's pull policy.
    #[arg(long, default_value = "IfNotPresent")]
    image_pull_policy: String,

    /// Inbound ports the proxy does not intercept, e.g. `25,8000-8100`.
    #[arg(long, default_value = "")]
    skip_inbound_ports: PortList,

    /// Outbound ports the proxy does not intercept, e.g. `3306,5432`.
    #[arg(long, default_value = "")]
    skip_outbound_ports: PortList,

    /// Inbound ports that carry opaque TCP (no protocol detection).
    #[arg(long, default_value = "")]
    opaque_ports: PortList,

    /// The proxy's log filter.
    #[arg(long, default_value = "info")]
    proxy_log_level: String,

    /// The proxy's CPU request.
    #[arg(long, default_value = "100m")]
    proxy_cpu_request: String,

    /// The proxy's memory request.
    #[arg(long, default_value = "20Mi")]
    proxy_memory_request: String,

    /// The proxy's CPU limit (none by default).
    #[arg(long)]
    proxy_cpu_limit: Option<String>,

    /// The proxy's memory limit.
    #[arg(long, default_value = "250Mi")]
    proxy_memory_limit: String,

    /// Add the proxy as a regular container (first, with a start-up guard) instead of a
    /// native sidecar, for clusters older than Kubernetes 1.29.
    #[arg(long)]
    no_native_sidecar: bool,

    /// The control plane's namespace.
    #[arg(long, default_value = mesh::DEFAULT_CONTROL_PLANE_NS)]
    control_plane_namespace: String,

    /// The trust domain of workload identities.
    #[arg(long, default_value = mesh::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,

    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,

    #[command(flatten)]
    cluster: ClusterArgs,
}

impl Inject {
    /// Reads the input, injects, and prints the result.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            input,
            output,
            identity_trust_anchors_file,
            proxy_image,
            proxy_version,
            image_pull_policy,
            skip_inbound_ports,
            skip_outbound_ports,
            opaque_ports,
            proxy_log_level,
            proxy_cpu_request,
            proxy_memory_request,
            proxy_cpu_limit,
            proxy_memory_limit,
            no_native_sidecar,
            control_plane_namespace,
            trust_domain,
            cluster_domain,
            cluster,
        } = self;
        let docs = manifest::read_input(&input)?;
        let trust_anchors_pem = match identity_trust_anchors_file {
            Some(path) => std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read trust anchors {}", path.display()))?,
            None => {
                let client = cluster.client().await.context(
                    "no --identity-trust-anchors-file given and the cluster is unreachable",
                )?;
                crate::check::cluster::trust_anchors(&client, &control_plane_namespace).await?
            }
        };
        let trust_anchors_digest = identity::pki::trust_anchors_digest(&trust_anchors_pem)
            .context("invalid trust anchors")?;
        let cfg = InjectConfig {
            proxy_image,
            proxy_version,
            image_pull_policy,
            control_plane_ns: control_plane_namespace,
            trust_domain,
            cluster_domain,
            trust_anchors_pem,
            trust_anchors_digest,
            skip_inbound_ports,
            skip_outbound_ports,
            opaque_ports,
            log_level: proxy_log_level,
            resources: ProxyResources {
                cpu_request: proxy_cpu_request,
                memory_request: proxy_memory_request,
                cpu_limit: proxy_cpu_limit,
                memory_limit: Some(proxy_memory_limit),
            },
            native_sidecar: !no_native_sidecar,
        };
        let result = super::transform(&docs, output, |doc| patch::inject(doc, &cfg))?;
        super::emit(&result)?;
        Ok(ExitCode::SUCCESS)
    }
}
