//! Putting the service together: issuer, token backend, gRPC and admin servers.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::identity::identity_server::IdentityServer;
use tokio::net::TcpListener;

use crate::Clock;
use crate::admin::{self, AdminState};
use crate::ca::LeafPolicy;
use crate::issuer::{IssuerFiles, IssuerStore, LoadError};
use crate::metrics::Metrics;
use crate::service::{IdentityService, Names};
use crate::tls::{ServerIdentity, TlsError};
use crate::token::TokenReviewer;
use crate::token::kubernetes::KubeTokenReviewer;
use crate::token::local::{LocalTokens, TokensFileError};

/// How tokens are validated.
#[derive(Clone)]
pub enum TokenBackend {
    /// TokenReview through the Kubernetes API, requiring `audience`.
    Kubernetes {
        /// The API client.
        client: kube::Client,
        /// The audience tokens must be bound to.
        audience: String,
    },
    /// A local tokens file (see [`crate::token::local`]).
    Local {
        /// The tokens file.
        path: PathBuf,
    },
}

impl std::fmt::Debug for TokenBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubernetes { audience, .. } => f
                .debug_struct("Kubernetes")
                .field("audience", audience)
                .finish_non_exhaustive(),
            Self::Local { path } => f.debug_struct("Local").field("path", path).finish(),
        }
    }
}

/// The identity service's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The issuer's files.
    pub issuer: IssuerFiles,
    /// How tokens are validated.
    pub tokens: TokenBackend,
    /// The names identities must sit under.
    pub names: Names,
    /// Leaf lifetime and backdating.
    pub leaf: LeafPolicy,
    /// How often the issuer and tokens files are checked for changes.
    pub reload_interval: Duration,
    /// The service's own service account; its TLS certificate carries that identity.
    pub service_account: String,
    /// Whether plaintext gRPC connections are refused (TLS is always offered).
    pub require_tls: bool,
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The issuer cannot be loaded.
    #[error(transparent)]
    Issuer(#[from] LoadError),
    /// The tokens file cannot be loaded.
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
    /// The service's own TLS identity cannot be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The gRPC server failed.
    #[error("identity grpc server failed")]
    Grpc(#[source] tonic::transport::Error),
}

/// A built identity service, ready to serve.
pub struct Identity {
    store: IssuerStore,
    service: IdentityService,
    metrics: Arc<Metrics>,
    clock: Clock,
    tls: ServerIdentity,
    require_tls: bool,
    // Kept so the tokens file keeps being reloaded.
    _tokens: Option<Arc<LocalTokens>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the issuer (refusing an unusable one) and the token backend.
    pub async fn build(config: Config, clock: Clock) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::default());
        let store = IssuerStore::load(
            config.issuer,
            Some(config.reload_interval),
            clock.clone(),
            metrics.clone(),
        )
        .await?;
        let (reviewer, tokens): (Arc<dyn TokenReviewer>, _) = match config.tokens {
            TokenBackend::Kubernetes { client, audience } => {
                (Arc::new(KubeTokenReviewer::new(client, audience)), None)
            }
            TokenBackend::Local { path } => {
                let tokens =
                    Arc::new(LocalTokens::load(&path, Some(config.reload_interval)).await?);
                (tokens.clone(), Some(tokens))
            }
        };
        let tls = ServerIdentity::spawn(
            crate::tls::service_identity(&config.service_account, &config.names),
            store.subscribe(),
            config.leaf.clone(),
            clock.clone(),
        )?;
        let service = IdentityService::new(
            store.subscribe(),
            reviewer,
            config.names,
            config.leaf,
            metrics.clone(),
            clock.clone(),
        );
        Ok(Self {
            store,
            service,
            metrics,
            clock,
            tls,
            require_tls: config.require_tls,
            _tokens: tokens,
        })
    }

    /// The metrics, for embedding.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves gRPC on `grpc` and the admin endpoints on `admin` until `shutdown`
    /// completes; in-flight calls then finish before this returns.
    pub async fn serve(
        self,
        grpc: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let issuer = self.store.subscribe();
        let clock = self.clock.clone();
        let state = AdminState {
            metrics: self.metrics.clone(),
            ready: Arc::new(move || issuer.borrow().is_valid_at(clock())),
        };
        let mut admin_stop = stop_rx.clone();
        let admin_task = tokio::spawn(admin::serve(admin, state, async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        }));
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut grpc_stop = stop_rx;
        let (incoming, accept_task) =
            crate::tls::incoming(grpc, self.tls.server_config(), self.require_tls);
        let result = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(self.service))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(StartError::Grpc);
        accept_task.abort();
        admin_task.abort();
        drop(self.store);
        result
    }
}
