//! Outbound policy: the routes, backends, timeouts, retries and circuit breaking the
//! destination service serves per Service port over `OutboundPolicies.Watch`.
//!
//! # Layout
//! - [`model`]: the validated, pre-compiled policy the request path reads;
//! - [`convert`]: the proxy API's message into the model, dropping invalid routes;
//! - [`client`]: the watch stream per target, with fallback and reconnects;
//! - [`matching`]: choosing a route rule for a request;
//! - [`filter`]: header modifiers, redirects, failure injection;
//! - [`metrics`]: per-route metric labels and families.

pub mod client;
pub mod convert;
pub mod filter;
pub mod matching;
pub mod metrics;
pub mod model;

pub use self::client::watch_policy;
pub use self::metrics::{ResourceRef, RouteFamilies, RouteLabels};
pub use self::model::{
    Backend, BackendTarget, OutboundPolicy, PolicyState, Route, Rule, Timeouts, pick_weighted,
};
