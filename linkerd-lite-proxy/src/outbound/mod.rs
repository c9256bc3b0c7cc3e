//! The outbound side: connections from the local application to the mesh.
//!
//! A connection arrives redirected by iptables (its original destination is read
//! with `SO_ORIGINAL_DST`) or, in local mode, addressed to the proxy itself, which
//! then acts as an HTTP proxy routing by each request's authority.
//!
//! # Layout
//! - `accept`: the listener and per-connection protocol detection.
//! - `target`: discovery and balancing per target, cached with an idle timeout.
//! - `http`: the per-request routing service.
//! - `routes`: requests routed by an outbound policy: rule, filters, backend,
//!   timeouts and retries.
//! - `tcp`: opaque forwarding.

mod accept;
mod http;
mod routes;
mod target;
mod tcp;

pub use accept::serve;
pub use target::{Outbound, Target};
