//! Retries: a route's retry policy applied to one request, within the target's
//! retry budget.
//!
//! A try is retried when its response status falls in one of the policy's ranges,
//! when the connection to the endpoint failed (nothing reached the application), or
//! when the per-try timeout passed. Retries wait an exponential backoff with jitter.
//! Only bodies of known, bounded size can be replayed: the body streams to the first
//! try at once while a copy is kept ([`ReplayBody`]); a body that outgrows
//! `max_request_bytes` is simply not retried. When a retry is not allowed (the
//! limit, the budget, the body), the client gets the last try's answer unchanged.
//!
//! # Layout
//! - [`budget`](RetryBudget): the per-target retry budget;
//! - [`ReplayBody`]: the replayable request body.

mod budget;
mod replay;

use std::{future::Future, ops::RangeInclusive, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header, request::Parts};
use http_body::Body as HttpBody;
use prometheus_client::metrics::counter::Counter;

pub use self::budget::{BudgetParams, RetryBudget};
pub use self::replay::{NotReplayable, ReplayBody, ReqBody};
use crate::{
    backoff::ExponentialBackoff,
    http::{Body, BoxError, ProxyError},
};

/// A route rule's retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub max_retries: u32,
    /// Largest request body that is kept for replay.
    pub max_request_bytes: usize,
    /// Response statuses that are retried.
    pub status_ranges: Vec<RangeInclusive<u16>>,
    /// Time limit of each try (until response headers); an expired try is retried.
    pub timeout: Option<Duration>,
    /// The wait between tries.
    pub backoff: ExponentialBackoff,
}

impl RetryPolicy {
    fn retries_status(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        self.status_ranges.iter().any(|r| r.contains(&s))
    }
}

/// Linkerd's retry counters of one route (`outbound_http_route_retry_*_total`).
#[derive(Clone, Debug, Default)]
pub struct RetryMetrics {
    /// Retries sent.
    pub requests: Counter,
    /// Requests that succeeded after at least one retry.
    pub successes: Counter,
    /// Requests not retried because `max_retries` was reached.
    pub limit_exceeded: Counter,
    /// Requests not retried because the budget was spent.
    pub overflow: Counter,
}

/// What one try produced, and whether its per-try timeout expired.
struct Try {
    result: Result<Response<Body>, ProxyError>,
    timed_out: bool,
}

async fn try_once(
    timeout: Option<Duration>,
    fut: impl Future<Output = Result<Response<Body>, ProxyError>>,
) -> Try {
    match timeout {
        None => Try {
            result: fut.await,
            timed_out: false,
        },
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(result) => Try {
                result,
                timed_out: false,
            },
            Err(_) => Try {
                result: Err(ProxyError::Timeout),
                timed_out: true,
            },
        },
    }
}

/// Sends `req` through `attempt` (one try: pick an endpoint and forward), retrying
/// as `policy` allows and `budget` permits.
pub async fn send<B, F, Fut>(
    policy: &RetryPolicy,
    budget: &RetryBudget,
    metrics: &RetryMetrics,
    req: Request<B>,
    mut attempt: F,
) -> Result<Response<Body>, ProxyError>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: FnMut(Request<ReqBody<B>>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ProxyError>>,
{
    budget.deposit();
    if !fits(&req, policy.max_request_bytes) {
        let req = req.map(ReqBody::Plain);
        return try_once(policy.timeout, attempt(req)).await.result;
    }
    let (head, body) = req.into_parts();
    let source = ReplayBody::new(body, policy.max_request_bytes);
    let mut reader = source.try_clone();
    let mut retries = 0;
    loop {
        let Some(body) = reader.take() else {
            // Unreachable: a reader exists until the copy breaks, checked below.
            return Err(ProxyError::Upstream(NotReplayable.into()));
        };
        let req = Request::from_parts(copy_head(&head), ReqBody::Replay(body));
        let done = try_once(policy.timeout, attempt(req)).await;
        let retryable = match &done.result {
            Ok(rsp) => policy.retries_status(rsp.status()),
            Err(ProxyError::Connect(_)) => true,
            Err(_) => done.timed_out,
        };
        if !retryable {
            if retries > 0
                && done
                    .result
                    .as_ref()
                    .is_ok_and(|r| !r.status().is_server_error())
            {
                metrics.successes.inc();
            }
            return done.result;
        }
        if retries >= policy.max_retries {
            metrics.limit_exceeded.inc();
            return done.result;
        }
        reader = source.try_clone();
        if reader.is_none() {
            tracing::debug!("request body outgrew the retry limit; not retrying");
            return done.result;
        }
        if !budget.withdraw() {
            metrics.overflow.inc();
            return done.result;
        }
        metrics.requests.inc();
        drop(done);
        let wait = policy.backoff.wait(retries, &mut rand::rng());
        tokio::time::sleep(wait).await;
        retries += 1;
    }
}

/// Whether a request's declared body size allows replaying it.
fn fits<B>(req: &Request<B>, max: usize) -> bool {
    match req.headers().get(header::CONTENT_LENGTH) {
        None => true,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n <= max as u64),
    }
}

fn copy_head(head: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    *req.extensions_mut() = head.extensions.clone();
    req.into_parts().0
}

#[cfg(test)]
mod tests;
