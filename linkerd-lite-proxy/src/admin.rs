//! The admin server: `/metrics`, `/ready`, `/live`, `/shutdown` (POST, loopback
//! clients only), `/env.json` (every `LINKERD_LITE_PROXY_` variable) and `/config`
//! (the parsed configuration).

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the admin server reports on.
pub struct Admin {
    /// Metrics to export.
    pub metrics: Metrics,
    /// Whether the proxy is ready (e.g. has its certificate).
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
    /// Cancelled by `POST /shutdown`.
    pub shutdown: CancellationToken,
    /// The `/config` page.
    pub config_dump: String,
    /// The `/env.json` page.
    pub env_json: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Serves the admin endpoints until `stop`.
pub async fn serve(admin: Arc<Admin>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (tcp, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, peer, &req)) }
            });
            let res = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            if let Err(e) = res {
                tracing::debug!(error = %e, "admin connection failed");
            }
        });
    }
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

fn route(admin: &Admin, peer: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            admin.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (&Method::GET, "/ready") if (admin.ready)() => text(StatusCode::OK, "ready\n", PLAIN),
        (&Method::GET, "/ready") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", PLAIN),
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n", PLAIN),
        (&Method::POST, "/shutdown") if peer.ip().is_loopback() => {
            admin.shutdown.cancel();
            text(StatusCode::ACCEPTED, "shutting down\n", PLAIN)
        }
        (&Method::POST, "/shutdown") => text(
            StatusCode::FORBIDDEN,
            "shutdown is only allowed from localhost\n",
            PLAIN,
        ),
        (&Method::GET, "/env.json") => {
            text(StatusCode::OK, admin.env_json.clone(), "application/json")
        }
        (&Method::GET, "/config") => text(StatusCode::OK, admin.config_dump.clone(), PLAIN),
        (_, "/metrics" | "/ready" | "/live" | "/shutdown" | "/env.json" | "/config") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            PLAIN,
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", PLAIN),
    }
}
