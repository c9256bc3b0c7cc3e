//! The linkerd-lite sidecar proxy.
//!
//! It intercepts a workload's traffic (iptables redirect, installed by the `init`
//! subcommand), detects HTTP/1, HTTP/2 or opaque TCP, and proxies it: outbound with
//! discovery from the destination service and power-of-two-choices peak-EWMA
//! balancing, between proxies over mTLS, inbound to the application on 127.0.0.1
//! with the client's verified identity in `l5d-client-id`. Metrics use Linkerd's
//! names. Configuration comes from `LINKERD_LITE_PROXY_*` variables ([`mod@env`]).
//!
//! # Layout
//! - [`mod@env`]: every environment variable, parsed into a typed [`env::Config`].
//! - [`proxy`]: binds and runs everything; graceful shutdown.
//! - [`outbound`] and [`inbound`]: the two directions, following the request path
//!   (accept → detect → http or tcp → balance → endpoint).
//! - [`detect`]: protocol and TLS ClientHello detection.
//! - [`discovery`] and [`balance`]: `Destination.Get` streams, p2c + peak EWMA,
//!   failure accrual (circuit breaking).
//! - [`policy`]: `OutboundPolicies.Watch` streams: routes, backends, timeouts,
//!   retries, failure accrual.
//! - [`retry`] and [`backoff`]: retries with budgets and replayable bodies.
//! - [`route`]: HTTP route matching (Gateway API precedence), shared by both sides.
//! - [`profile`]: `Destination.GetProfile` streams: traffic splits (when no policy)
//!   and retry budgets.
//! - [`http`]: connectors, pooled clients, forwarding, errors as responses.
//! - [`identity`]: the certified workload identity (certify loop, TLS configurations).
//! - [`tls`]: the TLS seams, the transport header and the client-identity header.
//! - [`metrics`] and [`admin`]: Prometheus metrics and the admin server.
//! - [`init`]: the iptables rules of the init step.
//! - [`route`]: HTTP route matching with Gateway API precedence (both directions).
//! - [`ready`]: the `await-ready` poll of the admin server's `/ready`.
//! - [`io`] and [`net`]: stream adaptors and socket helpers.

pub mod admin;
pub mod backoff;
pub mod balance;
pub mod detect;
pub mod discovery;
pub mod env;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod io;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod policy;
pub mod profile;
pub mod proxy;
pub mod ready;
pub mod retry;
pub mod route;
pub mod tls;
