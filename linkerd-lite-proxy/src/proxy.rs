//! Builds the whole proxy from a [`Config`]: binds the listeners, wires the sides
//! together, and runs until shutdown, then drains within the grace period.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin::{self, Admin},
    discovery::{self, Resolver, ResolverError},
    env::{self, Config},
    inbound::{self, Inbound, Policies},
    metrics::Metrics,
    outbound::{self, Outbound},
    tls::TlsProvider,
};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("binding the {which} listener on {addr}")]
    Bind {
        /// `outbound`, `inbound` or `admin`.
        which: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The destination client could not be built.
    #[error("configuring discovery")]
    Resolver(#[from] ResolverError),
}

/// A proxy with its listeners bound, ready to run.
#[derive(Debug)]
pub struct Proxy {
    config: Arc<Config>,
    outbound: Arc<Outbound>,
    inbound: Arc<Inbound>,
    admin: Arc<Admin>,
    listeners: [TcpListener; 3],
    addrs: Addrs,
    shutdown: CancellationToken,
}

/// The bound addresses (useful when the configuration asked for port 0).
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    /// Outbound listener.
    pub outbound: SocketAddr,
    /// Inbound listener.
    pub inbound: SocketAddr,
    /// Admin server.
    pub admin: SocketAddr,
}

async fn bind(which: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            which,
            addr,
            source,
        })
}

impl Proxy {
    /// Binds the listeners. `tls` is the identity to use for mTLS, if any;
    /// `ready` reports readiness for `/ready`.
    pub async fn bind(
        config: Config,
        tls: Option<Arc<dyn TlsProvider>>,
        ready: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let channel = config
            .destination_addr
            .as_deref()
            .map(discovery::channel)
            .transpose()?;
        let resolver = Resolver::with_channel(channel.clone(), &config.destination_context);
        let policies = Policies::new(
            channel,
            config.inbound_workload.clone(),
            config.default_policy,
            metrics.clone(),
        );
        let out_l = bind("outbound", config.outbound_addr).await?;
        let in_l = bind("inbound", config.inbound_addr).await?;
        let admin_l = bind("admin", config.admin_addr).await?;
        let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
        let addrs = Addrs {
            outbound: local(&out_l, config.outbound_addr),
            inbound: local(&in_l, config.inbound_addr),
            admin: local(&admin_l, config.admin_addr),
        };
        let shutdown = CancellationToken::new();
        let env_json = serde_json::to_string_pretty(&serde_json::Value::Object(
            env::dump_env()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        ))
        .unwrap_or_default();
        let admin = Arc::new(Admin {
            metrics: metrics.clone(),
            ready,
            shutdown: shutdown.clone(),
            config_dump: format!("{config:#?}\n"),
            env_json,
        });
        Ok(Self {
            outbound: Outbound::new(config.clone(), resolver, tls.clone(), metrics.clone()),
            inbound: Inbound::new(config.clone(), tls, metrics, policies),
            config,
            admin,
            listeners: [out_l, in_l, admin_l],
            addrs,
            shutdown,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// A token that shuts the proxy down when cancelled (as `POST /shutdown` does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The outbound side, for inspection in tests.
    pub fn outbound(&self) -> Arc<Outbound> {
        self.outbound.clone()
    }

    /// Runs until the shutdown token is cancelled; then stops accepting, lets
    /// in-flight work finish within the grace period, and returns whether it did.
    pub async fn run(self) -> bool {
        let Self {
            config,
            outbound,
            inbound,
            admin,
            listeners: [out_l, in_l, admin_l],
            shutdown,
            ..
        } = self;
        let tracker = TaskTracker::new();
        let admin_stop = CancellationToken::new();
        let evict = tokio::spawn(outbound.clone().evict_idle_forever());
        let admin_task = tokio::spawn(admin::serve(admin, admin_l, admin_stop.clone()));
        let out_task = tokio::spawn(outbound::serve(
            outbound,
            out_l,
            shutdown.clone(),
            tracker.clone(),
        ));
        let in_task = tokio::spawn(inbound::serve(
            inbound,
            in_l,
            shutdown.clone(),
            tracker.clone(),
        ));
        shutdown.cancelled().await;
        tracing::info!(grace = ?config.shutdown_grace_period, "shutting down");
        let _ = tokio::join!(out_task, in_task);
        tracker.close();
        let drained = tokio::time::timeout(config.shutdown_grace_period, tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!("grace period ended with connections still open");
        }
        admin_stop.cancel();
        let _ = admin_task.await;
        evict.abort();
        drained
    }
}
