//! Requests routed by an outbound policy: choose the rule, apply its filters, draw
//! a backend by weight, then send within the rule's timeouts and retry policy.
//!
//! The common case (one catch-all rule, one backend that is the target itself, no
//! retries, no timeouts) costs a rule lookup, one atomic load to see that the
//! backend's balancer settings are current, and nothing else beyond the direct path.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, Version, uri::Authority};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{Outbound, Target};
use crate::{
    http::{Body, BoxError, ProxyError, boxed, forward::is_upgrade},
    policy::{BackendTarget, OutboundPolicy, filter, matching, pick_weighted},
    retry::{self, ReqBody},
};

/// Sends `req`, addressed to `root`, as `policy` says.
pub(super) async fn send(
    outbound: &Outbound,
    root: &Arc<Target>,
    policy: &OutboundPolicy,
    mut req: Request<Incoming>,
    authority: &Authority,
) -> Result<Response<Body>, ProxyError> {
    let routes = if req.version() == Version::HTTP_2 {
        &policy.http2
    } else {
        &policy.http1
    };
    let (_, rule) = matching::select(routes, &req).ok_or(ProxyError::NoRoute)?;
    let prefixes = &rule.matches.prefixes;
    if let Some(rsp) = filter::on_request(&rule.filters, &mut req, authority, prefixes)? {
        return Ok(rsp);
    }
    if rule.backends.is_empty() {
        return Err(ProxyError::InvalidRoute("route has no backends"));
    }
    // Every weight zero: the target itself takes the traffic.
    let backend = pick_weighted(&rule.backends, |b| b.weight, &mut rand::rng());
    let (target, queue, backend_filters) = match backend {
        None => (root.clone(), None, &[][..]),
        Some(b) => {
            if let Some(rsp) = filter::on_request(&b.filters, &mut req, authority, prefixes)? {
                return Ok(rsp);
            }
            let target = match &b.target {
                BackendTarget::Parent => root.clone(),
                BackendTarget::Authority(a) => outbound.target_by_name(a),
                BackendTarget::Addr(a) => outbound.target_by_name(&Arc::from(a.to_string())),
            };
            (target, b.queue, &b.filters[..])
        }
    };
    target.balancer.configure(policy.id, policy.accrual, queue);

    let response_timeout = rule.timeouts.response.or(outbound.config.response_timeout);
    let upgrade = is_upgrade(&req);
    let sending = async {
        match &rule.retry {
            Some(policy) if !upgrade => {
                let budget = outbound.budget(root);
                retry::send(policy, budget, &rule.retry_metrics, req, |r| {
                    target.send(r, authority, response_timeout)
                })
                .await
            }
            _ => {
                target
                    .send(req.map(ReqBody::from), authority, response_timeout)
                    .await
            }
        }
    };
    let mut rsp = match rule.timeouts.request {
        None => sending.await?,
        Some(t) => {
            let deadline = Instant::now() + t;
            let rsp = tokio::time::timeout_at(deadline, sending)
                .await
                .map_err(|_| ProxyError::RequestTimeout)??;
            rsp.map(|body| boxed(Deadline::new(body, deadline)))
        }
    };
    filter::on_response(backend_filters, &mut rsp);
    filter::on_response(&rule.filters, &mut rsp);
    Ok(rsp)
}

/// The response body outlived the route's request timeout.
#[derive(Debug, thiserror::Error)]
#[error("request timed out while streaming the response")]
pub struct DeadlinePassed;

pin_project! {
    /// A response body cut off at the route's request deadline.
    struct Deadline {
        #[pin]
        inner: Body,
        #[pin]
        sleep: Sleep,
    }
}

impl Deadline {
    fn new(inner: Body, deadline: Instant) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep_until(deadline),
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(DeadlinePassed.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
