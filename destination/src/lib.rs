//! The linkerd-lite destination and policy service.
//!
//! It tells proxies where to send traffic and under which policy, over Linkerd's proxy
//! API (`linkerd2-proxy-api` 0.20): `Destination.Get/GetProfile`,
//! `OutboundPolicies.Get/Watch` and `InboundServerPolicies.GetPort/WatchPort`, all on one
//! gRPC port, with an admin server for `/ready`, `/live` and `/metrics`.
//!
//! # Layout
//!
//! - [`index`]: the in-memory index, pure logic: objects in, answers out, watchers woken
//!   only when their answer changes.
//! - [`k8s`]: Kubernetes objects (Service, EndpointSlice, Pod, SMI, Gateway API
//!   HTTPRoute) converted into the index's objects.
//! - [`source`]: the two feeds, a watched directory of YAML and the Kubernetes API.
//! - [`grpc`]: the proxy API server, generic over [`grpc::Discover`].
//! - [`admin`]: `/ready`, `/live`, `/metrics`; [`metrics`]: what `/metrics` exports.
//! - [`args`]: the binary's flags and how they are wired together.

pub mod admin;
pub mod args;
pub mod grpc;
pub mod index;
pub mod k8s;
pub mod metrics;
pub mod source;

/// Renders an error with its sources, `outer: inner: innermost`, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
