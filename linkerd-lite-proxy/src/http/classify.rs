//! Recording Linkerd's response metrics, including gRPC responses whose outcome
//! (`grpc-status`) only arrives in the trailers.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use tokio::time::Instant;

use crate::metrics::{HttpLabels, Metrics, RspLabels};

/// Response metrics of one endpoint, with the `200 success` handles looked up once
/// so that the common case records without hashing labels.
#[derive(Debug)]
pub struct Recorder {
    labels: HttpLabels,
    metrics: Metrics,
    ok: (Counter, Histogram),
}

impl Recorder {
    /// A recorder for `labels`.
    pub fn new(metrics: &Metrics, labels: HttpLabels) -> Self {
        let ok_labels = RspLabels {
            base: labels.clone(),
            status_code: 200,
            success: true,
        };
        Self {
            ok: (
                metrics.responses.get_or_create_owned(&ok_labels),
                metrics.latency.get_or_create_owned(&ok_labels),
            ),
            labels,
            metrics: metrics.clone(),
        }
    }

    fn labels(&self, status: u16, success: bool) -> RspLabels {
        RspLabels {
            base: self.labels.clone(),
            status_code: status,
            success,
        }
    }

    /// Records the time to response headers.
    pub fn latency(&self, status: u16, success: bool, start: Instant) {
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if status == 200 && success {
            self.ok.1.observe(ms);
        } else {
            let labels = self.labels(status, success);
            self.metrics.latency.get_or_create(&labels).observe(ms);
        }
    }

    /// Counts a classified response.
    pub fn response(&self, status: u16, success: bool) {
        if status == 200 && success {
            self.ok.0.inc();
        } else {
            let labels = self.labels(status, success);
            self.metrics.responses.get_or_create(&labels).inc();
        }
    }
}

/// Whether `grpc-status` in `headers` says OK; `None` when absent.
pub fn grpc_ok(headers: &HeaderMap) -> Option<bool> {
    headers.get("grpc-status").map(|s| s.as_bytes() == b"0")
}

/// Counts the response once, when its outcome is known.
#[derive(Debug)]
struct Pending(Option<(Arc<Recorder>, u16)>);

impl Pending {
    fn finish(&mut self, success: bool) {
        if let Some((rec, status)) = self.0.take() {
            rec.response(status, success);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Dropped before the trailers: the stream was cancelled or broke.
        self.finish(false);
    }
}

pin_project! {
    /// A gRPC response body that classifies the response by its trailers.
    #[derive(Debug)]
    pub struct ClassifyBody<B = Incoming> {
        #[pin]
        inner: B,
        pending: Pending,
    }
}

impl<B> ClassifyBody<B> {
    /// Wraps `inner`; the response with HTTP `status` is counted when it ends.
    pub fn new(inner: B, recorder: Arc<Recorder>, status: u16) -> Self {
        Self {
            inner,
            pending: Pending(Some((recorder, status))),
        }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for ClassifyBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let res = ready!(this.inner.poll_frame(cx));
        match &res {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.pending.finish(grpc_ok(trailers).unwrap_or(false));
                }
            }
            Some(Err(_)) | None => this.pending.finish(false),
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
