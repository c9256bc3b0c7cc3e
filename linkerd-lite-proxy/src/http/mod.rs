//! HTTP plumbing shared by both directions: the body type, serving a detected
//! connection with hyper, errors rescued into responses, and Linkerd's headers.
//!
//! # Layout
//! - [`client`]: per-endpoint connectors: TCP, optionally mTLS with a transport
//!   header.
//! - [`pool`]: an endpoint's reused HTTP/1 and HTTP/2 connections.
//! - [`idle`]: closing HTTP/2 server connections that carry no request.
//! - [`classify`]: response metrics, classifying gRPC by its trailers.
//! - [`forward`]: sending one request to an endpoint, with upgrades and metrics.

pub mod classify;
pub mod client;
pub mod forward;
pub mod idle;
pub mod pool;

use std::{convert::Infallible, io, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header, uri::Authority};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, server::conn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

use crate::{detect::Protocol, io::Io};

/// A boxed error, as carried across layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body the proxy produces: a forwarded body or a short error text.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The header naming why the proxy answered instead of the application.
pub const PROXY_ERROR_HEADER: &str = "l5d-proxy-error";
/// The header marking an HTTP/1 request carried over HTTP/2 between proxies.
pub const ORIG_PROTO_HEADER: HeaderName = HeaderName::from_static("l5d-orig-proto");

/// Boxes any body.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Why the proxy answers a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Discovery found no endpoint within the fail-fast timeout.
    #[error("no endpoints available")]
    Unavailable,
    /// Too many requests are waiting for an endpoint.
    #[error("too many requests waiting for an endpoint")]
    QueueFull,
    /// The endpoint could not be reached.
    #[error("connection to endpoint failed")]
    Connect(#[source] BoxError),
    /// The endpoint failed while handling the request.
    #[error("endpoint failed")]
    Upstream(#[source] BoxError),
    /// The response headers did not arrive in time.
    #[error("response timed out")]
    Timeout,
    /// The request names no authority to route by.
    #[error("request has no authority")]
    NoAuthority,
    /// Policy forbids the client.
    #[error("client is not authorized")]
    Forbidden,
    /// No route of the policy (inbound or outbound) matches the request.
    #[error("no route found for request")]
    NoRoute,
    /// The route's request timeout passed.
    #[error("request timed out")]
    RequestTimeout,
    /// The matched route cannot be applied.
    #[error("{0}")]
    InvalidRoute(&'static str),
    /// A route's failure injector chose this request.
    #[error("{message}")]
    Injected {
        /// The status to answer with.
        status: StatusCode,
        /// The reason.
        message: std::sync::Arc<str>,
    },
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unavailable | Self::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect(_) | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout | Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NoAuthority => StatusCode::BAD_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::InvalidRoute(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Injected { status, .. } => *status,
        }
    }

    /// The response: the status with a reason header, or for gRPC clients a
    /// trailers-only response with the matching `grpc-status`.
    pub fn into_response(self, grpc: bool) -> Response<Body> {
        let status = self.status();
        let reason = self.to_string();
        if let Some(src) = std::error::Error::source(&self) {
            tracing::debug!(error = %reason, cause = %src, "proxy answered with an error");
        }
        let mut rsp = Response::new(boxed(Full::new(Bytes::from(reason.clone()))));
        let reason = HeaderValue::from_str(&reason).unwrap_or(HeaderValue::from_static("error"));
        if grpc {
            let code = match status {
                StatusCode::GATEWAY_TIMEOUT => "4",
                StatusCode::FORBIDDEN => "7",
                StatusCode::NOT_FOUND => "5",
                _ => "14",
            };
            let h = rsp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from_static(code));
            h.insert("grpc-message", reason.clone());
        } else {
            *rsp.status_mut() = status;
            rsp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        rsp.headers_mut().insert(PROXY_ERROR_HEADER, reason);
        rsp
    }
}

/// Whether a request is gRPC.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The request's authority with an explicit port (80 when absent).
pub fn authority_of<B>(req: &Request<B>) -> Option<Authority> {
    let a = match req.uri().authority() {
        Some(a) => a.clone(),
        None => req
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<Authority>()
            .ok()?,
    };
    if a.port_u16().is_some() {
        return Some(a);
    }
    format!("{}:80", a.host()).parse().ok()
}

/// Limits applied to every accepted HTTP connection.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Deadline for a request's headers.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// How long an HTTP/2 connection may carry no request before GOAWAY.
    pub http2_idle_timeout: Duration,
}

/// Serves one accepted connection until it ends; on `shutdown`, stops taking new
/// requests and lets in-flight ones finish.
pub async fn serve<I, S>(
    io: I,
    protocol: Protocol,
    svc: S,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error>
where
    I: Io,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    if protocol == Protocol::Http2 {
        let activity = idle::Activity::default();
        let conn = conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .serve_connection(io, activity.track(svc));
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = activity.idle(limits.http2_idle_timeout) => {
                tracing::debug!("closing an HTTP/2 connection that carried no request");
                conn.as_mut().graceful_shutdown();
                // A peer that never answers the GOAWAY's PING (or never finishes
                // its headers) would hold the graceful close open: after another
                // idle period with no request, the connection is dropped.
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = activity.idle(limits.http2_idle_timeout) => Ok(()),
                }
            }
        }
    } else {
        let conn = conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .serve_connection(io, svc)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }
}

/// Logs a finished connection's error at a level matching how interesting it is.
pub fn log_conn_result(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        let io_kind = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        tracing::debug!(error = %e, ?io_kind, "http connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_comes_from_the_uri_or_host_with_a_port() {
        let req = Request::get("http://web.shop:8080/x").body(()).unwrap();
        assert_eq!(authority_of(&req).unwrap().as_str(), "web.shop:8080");
        let req = Request::get("/x")
            .header("host", "web.shop")
            .body(())
            .unwrap();
        assert_eq!(authority_of(&req).unwrap().as_str(), "web.shop:80");
        let req = Request::get("/x").body(()).unwrap();
        assert!(authority_of(&req).is_none());
    }

    #[test]
    fn errors_become_statuses_with_a_reason() {
        let rsp = ProxyError::Unavailable.into_response(false);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "no endpoints available");
        let rsp = ProxyError::Timeout.into_response(true);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "4");
        let rsp = ProxyError::NoRoute.into_response(false);
        assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            rsp.headers()[PROXY_ERROR_HEADER],
            "no route found for request"
        );
        let rsp = ProxyError::NoRoute.into_response(true);
        assert_eq!(rsp.headers()["grpc-status"], "5");
        let rsp = ProxyError::Forbidden.into_response(true);
        assert_eq!(rsp.headers()["grpc-status"], "7");
    }
}
