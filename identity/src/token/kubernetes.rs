//! The `kubernetes` backend: a TokenReview through the API server.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::{ReviewError, ServiceAccount, TokenReviewer};
use futures::future::BoxFuture;

/// How long the API server has to answer a TokenReview.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Reviews tokens with the Kubernetes TokenReview API, for one audience.
#[derive(Clone)]
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
    audience: String,
}

impl std::fmt::Debug for KubeTokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl KubeTokenReviewer {
    /// A reviewer over `client` that requires tokens bound to `audience`.
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.into(),
        }
    }

    async fn review_token(&self, token: &str) -> Result<ServiceAccount, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let params = PostParams::default();
        let create = self.api.create(&params, &review);
        let reviewed = tokio::time::timeout(REVIEW_TIMEOUT, create)
            .await
            .map_err(|e| ReviewError::Backend(Box::new(e)))?
            .map_err(|e| ReviewError::Backend(Box::new(e)))?;
        let status = reviewed
            .status
            .ok_or_else(|| ReviewError::Rejected("tokenreview has no status".into()))?;
        if let Some(error) = status.error.filter(|e| !e.is_empty()) {
            return Err(ReviewError::Rejected(error));
        }
        if status.authenticated != Some(true) {
            return Err(ReviewError::Rejected("not authenticated".into()));
        }
        // An API server that echoes audiences must echo ours.
        if let Some(auds) = &status.audiences
            && !auds.iter().any(|a| a == &self.audience)
        {
            return Err(ReviewError::Rejected(format!(
                "token audiences {auds:?} do not include {:?}",
                self.audience
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        ServiceAccount::from_username(&username).ok_or_else(|| {
            ReviewError::Rejected(format!("user {username:?} is not a service account"))
        })
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<ServiceAccount, ReviewError>> {
        Box::pin(self.review_token(token))
    }
}
