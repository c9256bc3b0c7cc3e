//! Command-line parsing and the entry points: run the proxy, install the iptables
//! redirect, or wait for a running proxy to become ready.

use std::{io::Write as _, process::ExitCode, sync::Arc, time::Duration};

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
    /// Wait until the proxy's admin `/ready` answers 200 (e.g. as a postStart hook).
    ///
    /// The admin address comes from `LINKERD_LITE_PROXY_ADMIN_LISTEN_ADDR`, as for the
    /// proxy (default port 4191, polled over loopback).
    AwaitReady {
        /// How long to wait before giving up with exit status 1.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    let res = match args.command.unwrap_or(Cmd::Run) {
        Cmd::Run => run(),
        Cmd::Init(init) => linkerd_lite_proxy::init::apply(&init, &mut std::io::stdout())
            .context("installing iptables rules"),
        Cmd::AwaitReady { timeout } => await_ready(timeout),
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
    // One core (the sidecar default, as in Linkerd) runs everything on this thread:
    // no work-stealing scheduler, no cross-thread wake-ups on the request path.
    let mut builder = if config.cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.cores);
        b
    };
    let rt = builder
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

fn await_ready(timeout: Duration) -> anyhow::Result<()> {
    let admin = linkerd_lite_proxy::env::admin_addr(|name| std::env::var(name).ok())
        .context("invalid configuration")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let interval = Duration::from_millis(200);
    let took = rt.block_on(linkerd_lite_proxy::ready::await_ready(
        admin, timeout, interval,
    ))?;
    let took = humantime::format_duration(Duration::from_millis(took.as_millis() as u64));
    // A closed stdout must not turn success into failure.
    let _ = writeln!(
        std::io::stdout(),
        "linkerd-lite-proxy: proxy is ready (after {took})"
    );
    Ok(())
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
