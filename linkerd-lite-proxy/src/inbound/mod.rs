//! The inbound side: connections from the network to the local application.
//!
//! A connection is mTLS-terminated when its ClientHello asks for this proxy's
//! identity; anything else (plaintext, or TLS for another name) is passed through as
//! is, subject to the port's policy (or the default policy). The application is reached on 127.0.0.1 at
//! the port named by the transport header, the original destination, or (local mode)
//! the configured default port.
//!
//! # Layout
//! - `accept`: TLS peeking, termination, policy and protocol detection.
//! - [`policy`]: per-port policy from `InboundServerPolicies.WatchPort`: opaque or
//!   not, server-level authorizations, and HTTP routes with their own.
//! - [`authz`]: one authorization compiled (networks, identities, suffixes).
//! - `http`: the per-request service: route authorization, then `l5d-client-id`.

mod accept;
pub mod authz;
mod http;
pub mod policy;

pub use accept::{Inbound, serve};
pub use policy::{Policies, PortPolicy, PortWatch};
