//! The `io.linkerd.proxy.identity.Identity` gRPC service: `Certify`.
//!
//! Each refusal is a [`CertifyError`], turned into a gRPC status in one place
//! ([`CertifyError::into_status`]): a bad identity or CSR is `InvalidArgument` with the
//! reason, a token that is not accepted is `PermissionDenied` with a fixed message (the
//! reason is logged, never returned), and an unusable issuer or token backend is
//! `Unavailable`.

use std::sync::Arc;

use linkerd2_proxy_api::identity::identity_server::Identity;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use smi_crds::mesh::{IdentityNameError, WorkloadIdentity};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::Clock;
use crate::ca::{Ca, CsrError, LeafPolicy, SignError, check_csr};
use crate::metrics::Metrics;
use crate::token::{ReviewError, TokenReviewer};

/// The names identities must sit under.
#[derive(Clone, Debug)]
pub struct Names {
    /// The trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The control-plane namespace, e.g. `linkerd-lite`.
    pub control_plane_ns: String,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            trust_domain: smi_crds::mesh::DEFAULT_TRUST_DOMAIN.to_string(),
            control_plane_ns: smi_crds::mesh::DEFAULT_CONTROL_PLANE_NS.to_string(),
        }
    }
}

/// Why a Certify call is refused.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The requested identity is not one of this control plane's names.
    #[error("identity is not valid")]
    Identity(#[source] IdentityNameError),
    /// The CSR is unacceptable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The token is not valid UTF-8, or review refused it.
    #[error("token review refused the token")]
    TokenRejected(#[source] ReviewError),
    /// The token is valid but for another service account.
    #[error("token is for service account {token_for}, not identity {identity}")]
    TokenMismatch {
        /// Whom the token authenticates.
        token_for: String,
        /// The identity asked for.
        identity: String,
    },
    /// The token backend failed.
    #[error("token review is unavailable")]
    TokenBackend(#[source] ReviewError),
    /// The issuer cannot sign now.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl CertifyError {
    /// The metric label of this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Identity(_) => "identity",
            Self::Csr(_) => "csr",
            Self::TokenRejected(_) | Self::TokenMismatch { .. } => "token",
            Self::TokenBackend(_) => "token_backend",
            Self::Sign(SignError::Csr(_)) => "csr",
            Self::Sign(SignError::IssuerNotValid { .. }) => "issuer",
            Self::Sign(SignError::Sign { .. }) => "sign",
        }
    }

    /// The gRPC status returned to the caller.
    pub fn into_status(self) -> Status {
        match self {
            Self::Identity(e) => Status::invalid_argument(format!("identity is not valid: {e}")),
            Self::Csr(e) | Self::Sign(SignError::Csr(e)) => Status::invalid_argument(e.to_string()),
            // One message for every token refusal, so it says nothing about why.
            Self::TokenRejected(_) | Self::TokenMismatch { .. } => {
                Status::permission_denied("token was not accepted")
            }
            Self::TokenBackend(_) => Status::unavailable("token review is unavailable"),
            Self::Sign(SignError::IssuerNotValid { .. }) => {
                Status::unavailable("issuer is not valid at this time")
            }
            Self::Sign(SignError::Sign { .. }) => Status::internal("could not sign"),
        }
    }
}

/// The Certify service.
#[derive(Clone)]
pub struct IdentityService {
    issuer: watch::Receiver<Arc<Ca>>,
    reviewer: Arc<dyn TokenReviewer>,
    names: Names,
    leaf: LeafPolicy,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("names", &self.names)
            .field("leaf", &self.leaf)
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    /// A service signing with the issuer in `issuer` and reviewing tokens with
    /// `reviewer`.
    pub fn new(
        issuer: watch::Receiver<Arc<Ca>>,
        reviewer: Arc<dyn TokenReviewer>,
        names: Names,
        leaf: LeafPolicy,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Self {
            issuer,
            reviewer,
            names,
            leaf,
            metrics,
            clock,
        }
    }

    /// Handles one Certify request.
    pub async fn certify_request(
        &self,
        req: CertifyRequest,
    ) -> Result<CertifyResponse, CertifyError> {
        let identity = WorkloadIdentity::parse_dns(
            &req.identity,
            &self.names.control_plane_ns,
            &self.names.trust_domain,
        )
        .map_err(CertifyError::Identity)?;
        let key = check_csr(&req.certificate_signing_request, &req.identity)?;

        let token = std::str::from_utf8(&req.token).map_err(|_| {
            CertifyError::TokenRejected(ReviewError::Rejected("token is not utf-8".into()))
        })?;
        let account = self.reviewer.review(token).await.map_err(|e| match e {
            ReviewError::Rejected(_) => CertifyError::TokenRejected(e),
            ReviewError::Backend(_) => CertifyError::TokenBackend(e),
        })?;
        if account.namespace != identity.namespace || account.name != identity.service_account {
            return Err(CertifyError::TokenMismatch {
                token_for: account.to_string(),
                identity: req.identity,
            });
        }

        // Hold this issuer for the whole signature, even if a rotation lands meanwhile.
        let ca = self.issuer.borrow().clone();
        let leaf = ca.sign_key(&identity, &key, &self.leaf, (self.clock)())?;
        Ok(CertifyResponse {
            leaf_certificate: leaf.der.to_vec(),
            intermediate_certificates: leaf.intermediates.iter().map(|c| c.to_vec()).collect(),
            valid_until: Some(prost_types::Timestamp::from(leaf.valid_until)),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let req = request.into_inner();
        let identity = req.identity.clone();
        match self.certify_request(req).await {
            Ok(rsp) => {
                self.metrics.issued();
                tracing::debug!(%identity, "issued certificate");
                Ok(Response::new(rsp))
            }
            Err(error) => {
                self.metrics.failed(error.reason());
                tracing::info!(%identity, error = %crate::DisplayChain(&error), "refused certify");
                Err(error.into_status())
            }
        }
    }
}
