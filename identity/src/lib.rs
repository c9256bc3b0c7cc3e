//! The linkerd-lite identity service: a certificate authority that issues short-lived
//! workload certificates bound to Kubernetes ServiceAccounts, over Linkerd's
//! `io.linkerd.proxy.identity.Identity/Certify` gRPC API.
//!
//! # Layout
//!
//! - [`pki`]: generating a trust anchor and an issuer, and checking an issuer (used by
//!   `mesh install` and `mesh check` too).
//! - [`ca`]: a loaded issuer that checks CSRs and signs workload leaves.
//! - [`issuer`]: the current issuer, reloaded when its files change (rotation).
//! - [`token`]: token review backends (Kubernetes TokenReview, local tokens file).
//! - [`service`]: the Certify RPC and its error-to-status mapping.
//! - [`tls`]: TLS on the gRPC port with a certificate the service issues itself.
//! - [`admin`], [`metrics`]: `/ready`, `/live`, `/metrics`.
//! - [`server`]: building and serving the whole service; [`args`]: the binary's flags.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod args;
pub mod ca;
pub mod issuer;
pub mod metrics;
pub mod pki;
mod reload;
pub mod server;
pub mod service;
pub mod tls;
pub mod token;

use std::sync::Arc;
use std::time::SystemTime;

/// The wall clock the service signs with; tests substitute their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The identity service's own service account, as `mesh install` names it; its TLS
/// certificate carries this account's identity.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "linkerd-lite-identity";

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Displays an error with its sources, `outer: inner: innermost`.
#[derive(Debug)]
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
