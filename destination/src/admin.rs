//! The admin server: `/ready` (after the first full sync), `/live` and `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::index::Index;
use crate::metrics::Metrics;

/// What the admin server reads.
#[derive(Debug)]
pub struct Admin {
    index: Arc<Index>,
    metrics: Metrics,
    registry: Registry,
}

impl Admin {
    /// An admin server over `index` exporting `metrics`.
    pub fn new(index: Arc<Index>, metrics: Metrics) -> Self {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        Self {
            index,
            metrics,
            registry,
        }
    }

    /// Serves until `shutdown` completes. A failed connection is logged and dropped.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let admin = Arc::new(self);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::warn!(%error, "admin server failed to accept a connection");
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req)) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(error) = builder.serve_connection(TokioIo::new(stream), svc).await {
                    tracing::debug!(%error, "admin connection ended with an error");
                }
            });
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        }
        match req.uri().path() {
            "/live" => reply(StatusCode::OK, "live\n"),
            "/ready" if self.index.is_synced() => reply(StatusCode::OK, "ready\n"),
            "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "not synced yet\n"),
            "/metrics" => {
                self.metrics.refresh(&self.index);
                let mut body = String::new();
                if let Err(error) =
                    prometheus_client::encoding::text::encode(&mut body, &self.registry)
                {
                    tracing::warn!(%error, "failed to encode metrics");
                    return reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "failed to encode metrics\n",
                    );
                }
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            _ => reply(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}
