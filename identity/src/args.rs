//! The `identity` binary's flags, and running it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use smi_crds::mesh::{
    DEFAULT_CONTROL_PLANE_NS, DEFAULT_TRUST_DOMAIN, IDENTITY_TOKEN_AUDIENCE, ports,
};

use crate::ca::LeafPolicy;
use crate::issuer::IssuerFiles;
use crate::server::{Config, Identity, TokenBackend};
use crate::service::Names;

/// How tokens are validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenValidation {
    /// A TokenReview through the Kubernetes API server.
    Kubernetes,
    /// A local tokens file (`--tokens-file`).
    Local,
}

/// The linkerd-lite identity service: issues workload certificates over
/// `io.linkerd.proxy.identity.Identity/Certify`.
#[derive(Debug, Parser)]
#[command(name = "identity", version)]
pub struct Args {
    /// Trust anchor bundle (PEM).
    #[arg(long, env = "IDENTITY_TRUST_ANCHORS", value_name = "FILE")]
    pub trust_anchors: PathBuf,
    /// Issuer certificate (PEM); reloaded when it changes.
    #[arg(long, env = "IDENTITY_ISSUER_CERT", value_name = "FILE")]
    pub issuer_cert: PathBuf,
    /// Issuer private key (PEM, PKCS#8); reloaded when it changes.
    #[arg(long, env = "IDENTITY_ISSUER_KEY", value_name = "FILE")]
    pub issuer_key: PathBuf,
    /// How proxies' tokens are validated.
    #[arg(long, value_enum, default_value_t = TokenValidation::Kubernetes)]
    pub token_validation: TokenValidation,
    /// Tokens file for `--token-validation local`: lines of `<token> <ns>/<sa>`.
    #[arg(long, value_name = "FILE", required_if_eq("token_validation", "local"))]
    pub tokens_file: Option<PathBuf>,
    /// Audience tokens must be bound to (kubernetes validation).
    #[arg(long, default_value = IDENTITY_TOKEN_AUDIENCE)]
    pub audience: String,
    /// Trust domain of the identities issued.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Control-plane namespace, part of every identity name.
    #[arg(long, default_value = DEFAULT_CONTROL_PLANE_NS)]
    pub control_plane_namespace: String,
    /// Lifetime of issued leaf certificates.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub leaf_lifetime: Duration,
    /// How far leaves are backdated for clock skew.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub clock_skew: Duration,
    /// How often the issuer and tokens files are checked for changes.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// The service's own service account: its TLS certificate carries this identity
    /// in the control-plane namespace.
    #[arg(long, default_value = crate::DEFAULT_SERVICE_ACCOUNT)]
    pub service_account: String,
    /// Refuse plaintext gRPC connections (TLS is always offered on the same port).
    #[arg(long)]
    pub require_tls: bool,
    /// gRPC listen address.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::IDENTITY_GRPC)))]
    pub grpc_addr: SocketAddr,
    /// Admin (`/ready`, `/live`, `/metrics`) listen address.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_PLANE_ADMIN)))]
    pub admin_addr: SocketAddr,
}

impl Args {
    /// Runs the service until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            trust_anchors,
            issuer_cert,
            issuer_key,
            token_validation,
            tokens_file,
            audience,
            trust_domain,
            control_plane_namespace,
            leaf_lifetime,
            clock_skew,
            reload_interval,
            service_account,
            require_tls,
            grpc_addr,
            admin_addr,
        } = self;
        let tokens = match (token_validation, tokens_file) {
            (TokenValidation::Local, Some(path)) => TokenBackend::Local { path },
            (TokenValidation::Local, None) => {
                anyhow::bail!("--token-validation local needs --tokens-file")
            }
            (TokenValidation::Kubernetes, _) => {
                let client = kube::Client::try_default()
                    .await
                    .context("cannot configure the kubernetes client")?;
                TokenBackend::Kubernetes { client, audience }
            }
        };
        let config = Config {
            issuer: IssuerFiles {
                trust_anchors,
                issuer_cert,
                issuer_key,
            },
            tokens,
            names: Names {
                trust_domain,
                control_plane_ns: control_plane_namespace,
            },
            leaf: LeafPolicy {
                lifetime: leaf_lifetime,
                clock_skew,
            },
            reload_interval,
            service_account,
            require_tls,
        };
        let identity = Identity::build(config, crate::system_clock())
            .await
            .map_err(|e| anyhow::anyhow!("{}", crate::DisplayChain(&e)))?;
        let grpc = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("cannot listen on --grpc-addr {grpc_addr}"))?;
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot listen on --admin-addr {admin_addr}"))?;
        tracing::info!(%grpc_addr, %admin_addr, "identity service serving");
        identity.serve(grpc, admin, shutdown_signal()).await?;
        Ok(())
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
