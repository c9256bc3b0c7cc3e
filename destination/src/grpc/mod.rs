//! The proxy API server: `Destination`, `OutboundPolicies` and
//! `InboundServerPolicies` on one tonic server, generic over [`Discover`].
//!
//! Every stream sends its first message as soon as it is opened (an explicit "no
//! endpoints" when nothing is known) and then only changes. Streams read the index
//! through `watch` channels, so a slow client only ever gets the latest state and never
//! holds anyone else up.
//!
//! # Layout
//!
//! - [`target`]: parsing authorities and workloads;
//! - `destination`: `Get` (endpoint diffs) and `GetProfile`;
//! - `outbound`: `OutboundPolicies.Get/Watch`;
//! - `inbound`: `InboundServerPolicies.GetPort/WatchPort`.

mod destination;
mod inbound;
mod outbound;
pub mod target;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::index::{
    EndpointTarget, EndpointsWatch, InboundWatch, Index, OutboundWatch, PodPortKey, ServicePortKey,
};
use crate::metrics::Metrics;

pub use destination::DestinationService;
pub use inbound::InboundService;
pub use outbound::OutboundService;

/// What the gRPC layer needs from the index.
pub trait Discover: Send + Sync + 'static {
    /// The cluster's DNS domain, to parse authorities.
    fn cluster_domain(&self) -> String;
    /// Watches the endpoints of a target.
    fn watch_endpoints(&self, target: EndpointTarget) -> EndpointsWatch;
    /// Watches the outbound policy of a Service port.
    fn watch_outbound(&self, key: ServicePortKey) -> OutboundWatch;
    /// Watches the inbound policy of a pod port.
    fn watch_inbound(&self, key: PodPortKey) -> InboundWatch;
    /// The Service port behind a cluster IP.
    fn service_for_addr(&self, addr: SocketAddr) -> Option<ServicePortKey>;
}

impl Discover for Index {
    fn cluster_domain(&self) -> String {
        self.config().cluster_domain
    }
    fn watch_endpoints(&self, target: EndpointTarget) -> EndpointsWatch {
        Index::watch_endpoints(self, target)
    }
    fn watch_outbound(&self, key: ServicePortKey) -> OutboundWatch {
        Index::watch_outbound(self, key)
    }
    fn watch_inbound(&self, key: PodPortKey) -> InboundWatch {
        Index::watch_inbound(self, key)
    }
    fn service_for_addr(&self, addr: SocketAddr) -> Option<ServicePortKey> {
        Index::service_for_addr(self, addr)
    }
}

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// Streams a policy `watch`: the current value at once, then every change, each
/// converted by `to_proto`. When the value becomes `None` (the object was deleted) the
/// stream ends with `NotFound` and `gone` as the message, so the proxy falls back.
pub(crate) fn policy_stream<T, M>(
    rx: tokio::sync::watch::Receiver<Option<Arc<T>>>,
    metrics: Metrics,
    rpc: &'static str,
    gone: &'static str,
    to_proto: fn(&T) -> M,
) -> BoxStream<M>
where
    T: Send + Sync + 'static,
    M: Send + 'static,
{
    let guard = metrics.watcher(rpc);
    let state = Some((rx, true, metrics, guard));
    Box::pin(futures::stream::unfold(state, move |state| async move {
        let (mut rx, first, metrics, guard) = state?;
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let current = rx.borrow_and_update().clone();
        match current {
            Some(value) => {
                metrics.sent(rpc);
                Some((Ok(to_proto(&value)), Some((rx, false, metrics, guard))))
            }
            None => Some((Err(tonic::Status::not_found(gone)), None)),
        }
    }))
}

/// How long a proxy may take to send the first bytes before detection gives up.
pub(crate) const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// Serves every RPC on `listener` until `shutdown` completes.
pub async fn serve<D: Discover>(
    listener: TcpListener,
    discover: Arc<D>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use linkerd2_proxy_api::destination::destination_server::DestinationServer;
    use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPoliciesServer;
    use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPoliciesServer;

    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(DestinationServer::new(DestinationService::new(
            discover.clone(),
            metrics.clone(),
        )))
        .add_service(OutboundPoliciesServer::new(OutboundService::new(
            discover.clone(),
            metrics.clone(),
        )))
        .add_service(InboundServerPoliciesServer::new(InboundService::new(
            discover, metrics,
        )))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// Turns a target error into `InvalidArgument`, counting it.
pub(crate) fn invalid(
    metrics: &Metrics,
    rpc: &'static str,
    err: target::TargetError,
) -> tonic::Status {
    metrics.error(rpc, "invalid_argument");
    tonic::Status::invalid_argument(err.to_string())
}
