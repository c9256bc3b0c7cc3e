//! Reused connections to one endpoint, built straight on hyper's connection API.
//!
//! - [`Http2Conn`]: one multiplexed HTTP/2 connection, opened on first use and
//!   reopened when it closes. Concurrent first requests share one connect.
//! - [`Http1Pool`]: idle HTTP/1.1 connections, most recently used first. A
//!   connection returns to the pool when its response body ends, and is closed after
//!   [`IDLE_TIMEOUT`] unused.
//!
//! A request that a closed connection refused before sending any of it is sent once
//! more on a fresh connection, so a peer closing an idle connection never fails a
//! request.
//!
//! Why not hyper-util's pooled `Client`: it keys one pool by scheme and authority
//! behind a lock and a hash map, boxes each request, clones its connector per
//! request and spawns a task per HTTP/1 response to return the connection. Here each
//! endpoint owns its connections; `BENCH_CALLGRIND` in `examples/bench.rs` counts
//! what that saves per request (5–14 % of the proxy's instructions).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{
    HeaderValue, Method, Request, Response, Uri, header,
    uri::{Authority, PathAndQuery},
};
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::{BoxError, ProxyError, client::Connector};
use crate::retry::ReqBody;

/// What a request body must be to go on a pooled connection.
pub trait SendBody:
    http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> SendBody for B where
    B: http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// How long an unused HTTP/1 connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle HTTP/1 connections kept per endpoint; more are closed.
pub const MAX_IDLE: usize = 256;

fn connect_error(e: impl Into<BoxError>) -> ProxyError {
    ProxyError::Connect(e.into())
}

/// What to do with a refused send: the request back to send again, when none of it
/// was sent; otherwise the error.
fn unsent<B>(e: TrySendError<Request<B>>) -> Result<Request<B>, ProxyError> {
    let mut e = e;
    match e.take_message() {
        Some(req) => Ok(req),
        None => Err(ProxyError::Upstream(e.into_error().into())),
    }
}

/// One HTTP/2 connection to an endpoint.
#[derive(Debug)]
pub struct Http2Conn<B = ReqBody> {
    connector: Connector,
    /// The open connection's sender, and how many connections were opened before.
    tx: Mutex<Option<(u64, http2::SendRequest<B>)>>,
    connecting: tokio::sync::Mutex<u64>,
}

impl<B: SendBody> Http2Conn<B> {
    /// Connections opened by `connector`.
    pub fn new(connector: Connector) -> Self {
        Self {
            connector,
            tx: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    fn open_sender(&self) -> Option<(u64, http2::SendRequest<B>)> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.as_ref().filter(|(_, t)| !t.is_closed()).cloned()
    }

    async fn sender(&self) -> Result<(u64, http2::SendRequest<B>), ProxyError> {
        if let Some(tx) = self.open_sender() {
            return Ok(tx);
        }
        let mut opened = self.connecting.lock().await;
        if let Some(tx) = self.open_sender() {
            return Ok(tx);
        }
        let io = self.connector.connect().await.map_err(connect_error)?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(io))
            .await
            .map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http/2 client connection ended with an error");
            }
        });
        *opened += 1;
        let generation = *opened;
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, tx.clone()));
        Ok((generation, tx))
    }

    /// Sends `req`, whose URI must be absolute.
    pub async fn send(&self, req: Request<B>) -> Result<Response<PooledBody<B>>, ProxyError> {
        let mut req = req;
        // The second try always gets a connection opened after the first failed.
        for _ in 0..2 {
            let (generation, mut tx) = self.sender().await?;
            match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp.map(PooledBody::unpooled)),
                Err(e) => {
                    req = unsent(e)?;
                    self.forget(generation);
                }
            }
        }
        Err(ProxyError::Connect(
            "connection closed before the request was sent".into(),
        ))
    }

    /// Drops the shared sender if it is still the one of connection `generation`,
    /// which refused a request, so the next request reconnects.
    fn forget(&self, generation: u64) {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.as_ref().is_some_and(|(g, _)| *g == generation) {
            *tx = None;
        }
    }
}

/// An idle HTTP/1 connection.
#[derive(Debug)]
struct Idle<B> {
    tx: http1::SendRequest<B>,
    since: Instant,
}

/// Idle HTTP/1 connections to an endpoint.
#[derive(Debug)]
pub struct Http1Pool<B = ReqBody> {
    connector: Connector,
    idle: Mutex<VecDeque<Idle<B>>>,
    reaping: AtomicBool,
}

impl<B: SendBody> Http1Pool<B> {
    /// Connections opened by `connector`.
    pub fn new(connector: Connector) -> Arc<Self> {
        Arc::new(Self {
            connector,
            idle: Mutex::new(VecDeque::new()),
            reaping: AtomicBool::new(false),
        })
    }

    /// How many idle connections are kept now.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// The most recently used idle connection ready for a request. Closed ones are
    /// dropped, and so are any not ready: this request never waits behind another
    /// exchange. Dropped, they close once their exchange ends.
    fn checkout_idle(&self) -> Option<http1::SendRequest<B>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = idle.pop_back() {
            if i.tx.is_ready() {
                return Some(i.tx);
            }
        }
        None
    }

    async fn open(&self) -> Result<http1::SendRequest<B>, ProxyError> {
        let io = self.connector.connect().await.map_err(connect_error)?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "http/1 client connection ended with an error");
            }
        });
        Ok(tx)
    }

    /// Keeps `tx` for the next request.
    fn put(self: &Arc<Self>, tx: http1::SendRequest<B>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            while idle
                .front()
                .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
            {
                idle.pop_front();
            }
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push_back(Idle { tx, since: now });
        }
        if !self.reaping.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Sends `req` on an idle connection or a new one, in origin form with a `Host`
    /// header (`authority` when it has none). Upgrades (101, or 2xx to `CONNECT`) keep
    /// their connection; other connections return to the pool when the response body
    /// ends.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<B>,
        authority: &Authority,
    ) -> Result<Response<PooledBody<B>>, ProxyError> {
        let mut req = req;
        origin_form(&mut req, authority);
        let connect = req.method() == Method::CONNECT;
        // Idle connections first; a request one of them refused unsent moves on to
        // the next, and finally to a new connection.
        loop {
            let (mut tx, fresh) = match self.checkout_idle() {
                Some(tx) => (tx, false),
                None => (self.open().await?, true),
            };
            if tx.ready().await.is_err() {
                if fresh {
                    return Err(ProxyError::Connect("connection closed at once".into()));
                }
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(rsp) => {
                    let upgraded = rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                        || (connect && rsp.status().is_success());
                    let keep = (!upgraded).then_some(tx);
                    return Ok(self.pooled(rsp, keep));
                }
                Err(e) => {
                    req = unsent(e)?;
                    if fresh {
                        return Err(ProxyError::Connect(
                            "connection closed before the request was sent".into(),
                        ));
                    }
                }
            }
        }
    }

    fn pooled(
        self: &Arc<Self>,
        rsp: Response<Incoming>,
        tx: Option<http1::SendRequest<B>>,
    ) -> Response<PooledBody<B>> {
        let mut slot = tx.map(|tx| (tx, self.clone()));
        if http_body::Body::is_end_stream(rsp.body())
            && let Some((tx, pool)) = slot.take()
        {
            pool.put(tx);
        }
        rsp.map(|inner| PooledBody { inner, slot })
    }
}

/// Closes connections left idle for [`IDLE_TIMEOUT`], while the pool exists and
/// keeps any.
async fn reap<B: SendBody>(pool: Weak<Http1Pool<B>>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT && !i.tx.is_closed());
        if idle.is_empty() {
            pool.reaping.store(false, Ordering::Release);
            return;
        }
    }
}

/// Puts a request in the form an HTTP/1 server expects: origin form (authority form
/// for `CONNECT`), with a `Host` header (the URI's authority, else `authority`).
/// A request already in that form is left as it is.
fn origin_form<B>(req: &mut Request<B>, authority: &Authority) {
    let uri_authority = req.uri().authority().cloned();
    if !req.headers().contains_key(header::HOST) {
        let host = uri_authority.as_ref().unwrap_or(authority);
        if let Ok(host) = HeaderValue::from_str(host.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    if req.method() == Method::CONNECT {
        if req.uri().scheme().is_some() || uri_authority.is_none() {
            *req.uri_mut() = Uri::from(uri_authority.unwrap_or_else(|| authority.clone()));
        }
    } else if uri_authority.is_some() || req.uri().scheme().is_some() {
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from(pq.unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
}

pin_project_lite::pin_project! {
    /// A response body that returns its HTTP/1 connection to the pool when it ends.
    /// Dropped early, it closes the connection instead. HTTP/2 responses carry no
    /// connection.
    pub struct PooledBody<B = ReqBody> {
        #[pin]
        inner: Incoming,
        slot: Option<(http1::SendRequest<B>, Arc<Http1Pool<B>>)>,
    }
}

impl<B> PooledBody<B> {
    fn unpooled(inner: Incoming) -> Self {
        Self { inner, slot: None }
    }
}

impl<B: SendBody> http_body::Body for PooledBody<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        let ended = match &res {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                this.slot.take();
                false
            }
            Poll::Pending => false,
        };
        if ended && let Some((tx, pool)) = this.slot.take() {
            pool.put(tx);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
