//! The `destination` binary's flags, and how they wire the service together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::index::{DefaultPolicy, Index, IndexConfig};
use crate::metrics::Metrics;
use crate::source::files::{FileSource, FilesConfig};
use crate::source::kubernetes::KubeSource;

/// Where the index's objects come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// The Kubernetes API, through the in-cluster or kubeconfig credentials.
    Kubernetes,
    /// A directory of YAML manifests, watched for changes (local mode).
    Files,
}

/// The linkerd-lite destination and policy service.
#[derive(Debug, clap::Parser)]
#[command(name = "destination", version, about)]
pub struct Args {
    /// Where objects come from.
    #[arg(
        long,
        value_enum,
        default_value = "kubernetes",
        env = "DESTINATION_SOURCE"
    )]
    source: SourceKind,
    /// The manifest directory, for `--source files`.
    #[arg(long, env = "DESTINATION_DIR", required_if_eq("source", "files"))]
    dir: Option<PathBuf>,
    /// The proxy API's listen address.
    #[arg(long, default_value = "0.0.0.0:8086", env = "DESTINATION_GRPC_ADDR")]
    grpc_addr: SocketAddr,
    /// The admin server's listen address (`/ready`, `/live`, `/metrics`).
    #[arg(long, default_value = "0.0.0.0:9990", env = "DESTINATION_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Inbound policy for pods no TrafficTarget names: all-unauthenticated,
    /// all-authenticated or deny.
    #[arg(
        long,
        default_value = "all-unauthenticated",
        env = "DESTINATION_DEFAULT_POLICY"
    )]
    default_policy: DefaultPolicy,
    /// The cluster's DNS domain.
    #[arg(
        long,
        default_value = "cluster.local",
        env = "DESTINATION_CLUSTER_DOMAIN"
    )]
    cluster_domain: String,
    /// The identity trust domain.
    #[arg(long, default_value = smi_crds::mesh::DEFAULT_TRUST_DOMAIN, env = "DESTINATION_TRUST_DOMAIN")]
    trust_domain: String,
    /// The control plane's namespace (part of every identity name).
    #[arg(long, default_value = smi_crds::mesh::DEFAULT_CONTROL_PLANE_NS, env = "DESTINATION_CONTROL_PLANE_NAMESPACE")]
    control_plane_namespace: String,
}

impl Args {
    /// Runs the service until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Args {
            source,
            dir,
            grpc_addr,
            admin_addr,
            default_policy,
            cluster_domain,
            trust_domain,
            control_plane_namespace,
        } = self;
        let index = Arc::new(Index::new(IndexConfig {
            cluster_domain,
            trust_domain,
            control_plane_ns: control_plane_namespace,
            default_policy,
        }));
        let metrics = Metrics::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                // An error means the sender is gone, which is also a stop.
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let grpc = TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("cannot listen on --grpc-addr {grpc_addr}"))?;
        let admin = TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot listen on --admin-addr {admin_addr}"))?;
        tracing::info!(grpc = %grpc.local_addr()?, admin = %admin.local_addr()?, ?source, "serving");
        tokio::spawn(Admin::new(index.clone(), metrics.clone()).serve(admin, stopped()));

        match source {
            SourceKind::Files => {
                let dir = dir.context("--dir is required with --source files")?;
                let files = FileSource::new(FilesConfig::new(dir), index.clone(), metrics.clone());
                let stop = stopped();
                tokio::spawn(async move {
                    if let Err(error) = files.run(stop).await {
                        tracing::error!(error = %crate::error_chain(&error), "files source stopped");
                    }
                });
            }
            SourceKind::Kubernetes => {
                let client = kube::Client::try_default()
                    .await
                    .context("cannot configure a Kubernetes client")?;
                tokio::spawn(KubeSource::new(client, index.clone(), metrics.clone()).run());
            }
        }

        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        crate::grpc::serve(grpc, index, metrics, stopped())
            .await
            .context("gRPC server failed")
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
