//! The policy client: an `OutboundPolicies.Watch` stream per outbound HTTP target,
//! converted into the model and published on a `watch` channel.
//!
//! A target the destination does not know as a Service (`NotFound`, e.g. a raw IP
//! or a host outside the cluster), a target it refuses (`InvalidArgument`) and a
//! destination without the RPC (`Unimplemented`) all publish
//! [`PolicyState::Fallback`]: the target routes as it did before policies. After
//! `NotFound` the stream is asked again later, in case the Service appears. A
//! broken stream keeps the last policy in force while it reconnects with backoff.

use std::{net::SocketAddr, time::Duration};

use linkerd2_proxy_api::{
    net::TcpAddress,
    outbound::{self as api, outbound_policies_client::OutboundPoliciesClient, traffic_spec},
};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::{
    convert::{self, Ctx},
    metrics::RouteFamilies,
    model::PolicyState,
};
use crate::discovery::ResolutionTask;

/// The request naming `key` (an authority `name:port` or an address `ip:port`).
pub fn traffic_spec(key: &str, workload: Option<&str>) -> api::TrafficSpec {
    let target = match key.parse::<SocketAddr>() {
        Ok(addr) => traffic_spec::Target::Addr(TcpAddress {
            ip: Some(addr.ip().into()),
            port: u32::from(addr.port()),
        }),
        Err(_) => traffic_spec::Target::Authority(key.to_string()),
    };
    api::TrafficSpec {
        source_workload: workload.unwrap_or_default().to_string(),
        target: Some(target),
    }
}

/// Starts watching the policy of `key`. Without a client, there is no policy.
pub fn watch_policy(
    client: Option<OutboundPoliciesClient<Channel>>,
    key: &str,
    workload: Option<&str>,
    families: RouteFamilies,
) -> (watch::Receiver<PolicyState>, ResolutionTask) {
    let Some(client) = client else {
        let (_tx, rx) = watch::channel(PolicyState::Fallback);
        return (rx, ResolutionTask::none());
    };
    let (tx, rx) = watch::channel(PolicyState::Pending);
    let spec = traffic_spec(key, workload);
    let key = key.to_string();
    (
        rx,
        ResolutionTask::spawn(run(client, spec, key, families, tx)),
    )
}

/// Leaves a still-pending policy as "fall back", so requests stop waiting.
fn settle(tx: &watch::Sender<PolicyState>) {
    tx.send_if_modified(|p| {
        let pending = p.is_pending();
        if pending {
            *p = PolicyState::Fallback;
        }
        pending
    });
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a target the destination did not know is asked about again.
const NOT_FOUND_RETRY: Duration = Duration::from_secs(30);

async fn run(
    mut client: OutboundPoliciesClient<Channel>,
    spec: api::TrafficSpec,
    key: String,
    families: RouteFamilies,
    tx: watch::Sender<PolicyState>,
) {
    let ctx = Ctx {
        key: &key,
        families: &families,
    };
    let mut backoff = MIN_BACKOFF;
    let mut last: Option<api::OutboundPolicy> = None;
    loop {
        let mut wait = backoff;
        let status = match client.watch(spec.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            backoff = MIN_BACKOFF;
                            if last.as_ref() != Some(&msg) {
                                tx.send_replace(convert::policy(&msg, &ctx));
                                last = Some(msg);
                            }
                        }
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
            Err(status) => Some(status),
        };
        match status.as_ref().map(tonic::Status::code) {
            Some(tonic::Code::InvalidArgument | tonic::Code::Unimplemented) => {
                tracing::debug!(target = %key, status = ?status, "no outbound policy for this target");
                tx.send_replace(PolicyState::Fallback);
                // Hold the answer for as long as the target lives.
                tx.closed().await;
                return;
            }
            Some(tonic::Code::NotFound) => {
                tracing::debug!(target = %key, "the destination does not know this target; routing without a policy");
                tx.send_replace(PolicyState::Fallback);
                last = None;
                wait = NOT_FOUND_RETRY;
            }
            _ => {
                tracing::debug!(target = %key, status = ?status, "outbound policy stream ended; reconnecting");
                settle(&tx);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[test]
    fn addresses_and_names_become_traffic_specs() {
        let s = traffic_spec("10.96.0.7:8080", Some(r#"{"ns":"shop","pod":"app-0"}"#));
        assert_eq!(
            s.target,
            Some(traffic_spec::Target::Addr(TcpAddress {
                ip: Some(std::net::IpAddr::from([10, 96, 0, 7]).into()),
                port: 8080,
            }))
        );
        assert_eq!(s.source_workload, r#"{"ns":"shop","pod":"app-0"}"#);
        let s = traffic_spec("web.shop.svc.cluster.local:80", None);
        assert_eq!(
            s.target,
            Some(traffic_spec::Target::Authority(
                "web.shop.svc.cluster.local:80".into()
            ))
        );
    }

    /// A gRPC server answering every call with `code` and counting the calls.
    async fn grpc_status_server(code: u8) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let calls = counted.clone();
                let svc = hyper::service::service_fn(move |_req| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let rsp = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", code.to_string())
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    async move { Ok::<_, std::convert::Infallible>(rsp) }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
                );
            }
        });
        (addr, calls)
    }

    async fn first_answer(code: u8) -> (PolicyState, usize) {
        let (addr, calls) = grpc_status_server(code).await;
        let channel = crate::discovery::channel(&addr.to_string()).unwrap();
        let client = OutboundPoliciesClient::new(channel);
        let (mut rx, _task) = watch_policy(Some(client), "web.shop:80", None, Default::default());
        rx.wait_for(|p| !p.is_pending()).await.unwrap();
        let state = rx.borrow().clone();
        (state, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn unknown_targets_and_servers_without_policies_fall_back() {
        for code in [5, 3, 12] {
            // NotFound, InvalidArgument, Unimplemented.
            let (state, calls) = first_answer(code).await;
            assert!(matches!(state, PolicyState::Fallback), "code {code}");
            assert_eq!(calls, 1);
        }
        // Unavailable: requests stop waiting while the client keeps asking.
        let (state, _) = first_answer(14).await;
        assert!(matches!(state, PolicyState::Fallback));
    }

    #[test]
    fn settling_only_replaces_a_pending_policy() {
        let (tx, rx) = watch::channel(PolicyState::Pending);
        settle(&tx);
        assert!(matches!(*rx.borrow(), PolicyState::Fallback));
    }
}
