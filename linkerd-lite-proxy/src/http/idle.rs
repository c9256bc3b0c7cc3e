//! Closing HTTP/2 server connections that carry no request.
//!
//! HTTP/1 has hyper's header-read deadline: a client must send each request's head in
//! time, and an idle keep-alive connection is closed. HTTP/2 has nothing like it, so a
//! client could hold connections open forever by never completing a request (a
//! HEADERS frame never followed by its END_HEADERS, or no frame at all). [`Activity`]
//! counts the requests in progress on one connection, from the moment the service
//! gets one until its response body ends or is dropped; [`Activity::idle`] finishes
//! once the connection has had none for the idle timeout, and the caller then sends
//! GOAWAY. Requests still streaming keep their connection however long they take.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use super::{Body, BoxError};

/// Requests in progress on one connection, and since when it has had none.
#[derive(Clone, Debug)]
pub struct Activity(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    active: AtomicUsize,
    /// Milliseconds after `epoch` when the last request ended.
    idle_since_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(Inner {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }))
    }
}

impl Activity {
    /// Marks a request as in progress until the guard drops.
    fn start(&self) -> Guard {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        Guard(self.0.clone())
    }

    /// Finishes once the connection has had no request in progress for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        let mut wake = Instant::now() + timeout;
        loop {
            tokio::time::sleep_until(wake).await;
            let now = Instant::now();
            if self.0.active.load(Ordering::Acquire) > 0 {
                wake = now + timeout;
                continue;
            }
            let since =
                self.0.epoch + Duration::from_millis(self.0.idle_since_ms.load(Ordering::Acquire));
            if since + timeout <= now {
                return;
            }
            wake = since + timeout;
        }
    }

    /// Wraps `svc` so that each of its requests counts as activity.
    pub fn track<S>(&self, svc: S) -> Tracked<S> {
        Tracked {
            inner: svc,
            activity: self.clone(),
        }
    }
}

/// A request in progress.
#[derive(Debug)]
struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        // The last request out marks when idleness began.
        let ms = self.0.epoch.elapsed().as_millis() as u64;
        self.0.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service whose requests count as its connection's activity.
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> hyper::service::Service<Request<hyper::body::Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response<Body>>,
{
    type Response = Response<GuardedBody>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        TrackedFuture {
            guard: Some(self.activity.start()),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future holding its request's activity, handed on to the body.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<GuardedBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let rsp = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(rsp.map(|inner| GuardedBody { inner, guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in progress until it ends.
    pub struct GuardedBody {
        #[pin]
        inner: Body,
        guard: Option<Guard>,
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let res = ready!(this.inner.poll_frame(cx));
        if res.is_none() {
            this.guard.take();
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
