//! Token validation: who does a bearer token belong to?
//!
//! Two backends implement [`TokenReviewer`]: [`kubernetes::KubeTokenReviewer`] asks the
//! API server with a TokenReview, and [`local::LocalTokens`] reads a tokens file (local
//! mode and tests).

pub mod kubernetes;
pub mod local;

use futures::future::BoxFuture;

/// A Kubernetes service account: who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
}

impl ServiceAccount {
    /// Parses a Kubernetes username of the form `system:serviceaccount:NS:SA`.
    pub fn from_username(username: &str) -> Option<Self> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        if namespace.is_empty() || name.is_empty() || name.contains(':') {
            return None;
        }
        Some(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a token was not mapped to a service account.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The token is not valid; the reason is for logs only, never for the caller.
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The backend could not decide (e.g. the API server is unreachable).
    #[error("token review backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Maps a bearer token to the service account it authenticates.
pub trait TokenReviewer: Send + Sync + 'static {
    /// Reviews `token`.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<ServiceAccount, ReviewError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_account_usernames() {
        assert_eq!(
            ServiceAccount::from_username("system:serviceaccount:shop:web"),
            Some(ServiceAccount {
                namespace: "shop".into(),
                name: "web".into()
            })
        );
        for bad in [
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:serviceaccount:shop:",
            "system:serviceaccount:a:b:c",
            "system:node:worker-1",
            "alice",
        ] {
            assert_eq!(ServiceAccount::from_username(bad), None, "{bad}");
        }
    }
}
