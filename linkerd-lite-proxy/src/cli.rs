//! Command-line parsing and the two entry points: run the proxy, or install the
//! iptables redirect.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use linkerd_lite_proxy::{env::Config, identity, init::InitArgs, proxy::Proxy, tls::TlsProvider};

/// The linkerd-lite sidecar proxy. Configured by `LINKERD_LITE_PROXY_*` variables.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the proxy (the default).
    Run,
    /// Install the iptables redirect through the proxy (run as root in the init container).
    Init(InitArgs),
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    let res = match args.command.unwrap_or(Cmd::Run) {
        Cmd::Run => run(),
        Cmd::Init(init) => linkerd_lite_proxy::init::apply(&init, &mut std::io::stdout())
            .context("installing iptables rules"),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkerd-lite-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let config = Config::from_env().context("invalid configuration")?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .context("invalid LINKERD_LITE_PROXY_LOG")?,
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.cores)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let (tls, ready) = identity(&config)?;
        let proxy = Proxy::bind(config, tls, ready).await?;
        let addrs = proxy.addrs();
        tracing::info!(outbound = %addrs.outbound, inbound = %addrs.inbound, admin = %addrs.admin, "proxy listening");
        let token = proxy.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            token.cancel();
        });
        proxy.run().await;
        Ok(())
    })
}

type Ready = Box<dyn Fn() -> bool + Send + Sync>;

/// The TLS provider and readiness check for the configured identity: with an
/// identity service, the certify loop's identity (ready once certified); without,
/// plaintext only and always ready.
fn identity(config: &Config) -> anyhow::Result<(Option<Arc<dyn TlsProvider>>, Ready)> {
    let Some(c) = &config.identity else {
        return Ok((None, Box::new(|| true)));
    };
    let addr = if c.addr.contains("://") {
        c.addr.clone()
    } else {
        format!("http://{}", c.addr)
    };
    let mut id_config = identity::Config::new(
        addr,
        c.name.clone(),
        c.token_file.clone(),
        c.trust_anchors_pem.clone(),
    );
    id_config.svc_name = c.svc_name.clone();
    id_config.dir = c.dir.clone();
    let id = identity::spawn(id_config).context("starting the identity client")?;
    let ready = {
        let id = id.clone();
        Box::new(move || id.is_ready())
    };
    Ok((Some(Arc::new(id)), ready))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
