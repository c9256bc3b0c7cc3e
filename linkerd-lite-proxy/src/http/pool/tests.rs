//! The pools against real hyper servers on loopback, counting the connections the
//! server accepts and sees closed.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::server::conn;
use tokio::{net::TcpListener, sync::Barrier};

use super::*;
use crate::http::client::Dest;

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// Keep connections open.
    KeepAlive,
    /// Close each HTTP/2 connection after its first response (GOAWAY).
    CloseAfterOne,
    /// Answer `/stream` with a body that never ends.
    Stream,
    /// Hold each request until three are in flight.
    Together,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

async fn server(h2: bool, mode: Serve) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let barrier = Arc::new(Barrier::new(3));
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let (c, barrier) = (c.clone(), barrier.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let barrier = barrier.clone();
                    async move {
                        if mode == Serve::Together {
                            barrier.wait().await;
                        }
                        let body = if mode == Serve::Stream && req.uri().path() == "/stream" {
                            let never = futures::stream::pending::<
                                Result<http_body::Frame<Bytes>, Infallible>,
                            >();
                            StreamBody::new(never).boxed_unsync()
                        } else {
                            Full::new(Bytes::from_static(b"ok")).boxed_unsync()
                        };
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let io = TokioIo::new(tcp);
                if h2 {
                    let conn =
                        conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc);
                    tokio::pin!(conn);
                    if mode == Serve::CloseAfterOne {
                        conn.as_mut().graceful_shutdown();
                    }
                    let _ = conn.await;
                } else {
                    let _ = conn::http1::Builder::new().serve_connection(io, svc).await;
                }
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

fn connector(addr: SocketAddr) -> Connector {
    Connector::new(Dest::Addr(addr), None, Duration::from_secs(5))
}

fn get(path: &str) -> Request<TestBody> {
    Request::get(format!("http://web.test:80{path}"))
        .body(Empty::new().boxed())
        .unwrap()
}

async fn read(rsp: Response<PooledBody<TestBody>>) -> Bytes {
    rsp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn http1_connections_are_reused_one_request_at_a_time() {
    let (addr, counts) = server(false, Serve::KeepAlive).await;
    let pool = Http1Pool::new(connector(addr));
    for _ in 0..5 {
        let rsp = pool.send(get("/"), &web()).await.unwrap();
        assert_eq!(read(rsp).await, "ok");
    }
    assert_eq!(counts.accepted(), 1);
    assert_eq!(pool.idle(), 1);
}

#[tokio::test]
async fn concurrent_http1_requests_get_their_own_connections_and_keep_them() {
    let (addr, counts) = server(false, Serve::Together).await;
    let pool = Http1Pool::new(connector(addr));
    // The server answers only once all three are in flight.
    let sends = (0..3).map(|_| {
        let pool = pool.clone();
        async move { read(pool.send(get("/"), &web()).await.unwrap()).await }
    });
    for body in futures::future::join_all(sends).await {
        assert_eq!(body, "ok");
    }
    assert_eq!(counts.accepted(), 3);
    assert_eq!(pool.idle(), 3);
}

/// An HTTP/1.1 server that answers one request per connection and then closes it
/// without saying so (no `Connection: close`), as servers with short keep-alive
/// timeouts do.
async fn silent_closer() -> (SocketAddr, Arc<Counts>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "request ended early");
                head.extend_from_slice(&buf[..n]);
            }
            tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            drop(tcp);
            c.closed.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, counts)
}

#[tokio::test]
async fn a_server_closing_idle_connections_never_fails_a_request() {
    // Each response comes on a connection the server then closes silently: the
    // pooled connection is found closed (or refuses the next request unsent), and
    // the request goes on a new connection.
    let (addr, counts) = silent_closer().await;
    let pool = Http1Pool::new(connector(addr));
    for i in 0..20 {
        let rsp = pool.send(get("/"), &web()).await;
        assert_eq!(read(rsp.unwrap()).await, "ok", "request {i}");
        // Let the server's close arrive before the next request.
        wait_for(|| counts.closed() == i + 1).await;
    }
    assert_eq!(counts.accepted(), 20);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_the_connection() {
    let (addr, counts) = server(false, Serve::Stream).await;
    let pool = Http1Pool::new(connector(addr));
    let rsp = pool.send(get("/stream"), &web()).await.unwrap();
    assert_eq!(pool.idle(), 0, "in use until the body ends");
    drop(rsp);
    assert_eq!(pool.idle(), 0, "an unfinished connection is not reused");
    assert_eq!(read(pool.send(get("/"), &web()).await.unwrap()).await, "ok");
    assert_eq!(counts.accepted(), 2);
    wait_for(|| counts.closed() == 1).await;
}

#[tokio::test]
async fn a_connection_still_sending_an_answered_request_is_not_waited_for() {
    // The server answers at once, while the request body is still streaming: the
    // connection is not ready for another request until the upload ends, so the
    // next request must not wait behind it.
    let (addr, counts) = server(false, Serve::KeepAlive).await;
    let pool = Http1Pool::new(connector(addr));
    let never = futures::stream::pending::<Result<http_body::Frame<Bytes>, Infallible>>();
    let upload = Request::post("http://web.test:80/upload")
        .body(StreamBody::new(never).boxed())
        .unwrap();
    assert_eq!(read(pool.send(upload, &web()).await.unwrap()).await, "ok");
    let web = web();
    let next = tokio::time::timeout(Duration::from_secs(5), pool.send(get("/"), &web));
    assert_eq!(read(next.await.expect("waited").unwrap()).await, "ok");
    assert_eq!(counts.accepted(), 2);
}

#[tokio::test]
async fn idle_http1_connections_close_after_the_idle_timeout() {
    let (addr, counts) = server(false, Serve::KeepAlive).await;
    let pool = Http1Pool::new(connector(addr));
    read(pool.send(get("/"), &web()).await.unwrap()).await;
    assert_eq!(pool.idle(), 1);

    // The reaper looks every half timeout, so a connection closes between one and
    // one and a half timeouts after its last use.
    tokio::time::pause();
    tokio::time::advance(IDLE_TIMEOUT / 2 + Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(pool.idle(), 1, "kept while younger than the idle timeout");
    tokio::time::advance(IDLE_TIMEOUT).await;
    settle().await;
    tokio::time::resume();
    assert_eq!(pool.idle(), 0);
    wait_for(|| counts.closed() == 1).await;
}

#[tokio::test]
async fn http2_requests_share_one_connection_and_reconnect_after_it_closes() {
    let (addr, counts) = server(true, Serve::KeepAlive).await;
    let conn = Http2Conn::new(connector(addr));
    let sends = (0..10).map(|_| async { conn.send(get("/")).await.unwrap() });
    for rsp in futures::future::join_all(sends).await {
        assert_eq!(read(rsp).await, "ok");
    }
    assert_eq!(
        counts.accepted(),
        1,
        "concurrent first requests share a connect"
    );

    let (addr, counts) = server(true, Serve::CloseAfterOne).await;
    let conn = Http2Conn::new(connector(addr));
    for i in 0..5 {
        let rsp = conn.send(get("/")).await;
        assert_eq!(read(rsp.unwrap()).await, "ok", "request {i}");
    }
    assert_eq!(counts.accepted(), 5);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pool = Http1Pool::<TestBody>::new(connector(addr));
    assert!(matches!(
        pool.send(get("/"), &web()).await,
        Err(ProxyError::Connect(_))
    ));
    let conn = Http2Conn::<TestBody>::new(connector(addr));
    assert!(matches!(
        conn.send(get("/")).await,
        Err(ProxyError::Connect(_))
    ));
}

/// Lets woken tasks run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Polls `cond` on real time, for what the other side of a socket observes.
async fn wait_for(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn web() -> Authority {
    Authority::from_static("web.test:80")
}

#[test]
fn http1_requests_go_in_origin_form_with_a_host() {
    let fallback = Authority::from_static("fallback:80");
    let mut req = Request::get("http://web.shop:8080/a?b=1").body(()).unwrap();
    origin_form(&mut req, &fallback);
    assert_eq!(req.uri(), "/a?b=1");
    assert_eq!(req.headers()[header::HOST], "web.shop:8080");

    let mut req = Request::get("http://web.shop:8080/")
        .header("host", "web.shop")
        .body(())
        .unwrap();
    origin_form(&mut req, &fallback);
    assert_eq!(
        req.headers()[header::HOST],
        "web.shop",
        "a client's Host stays"
    );

    let mut req = Request::get("/x").body(()).unwrap();
    origin_form(&mut req, &fallback);
    assert_eq!(req.uri(), "/x");
    assert_eq!(req.headers()[header::HOST], "fallback:80");

    let mut req = Request::connect("http://db:5432").body(()).unwrap();
    origin_form(&mut req, &fallback);
    assert_eq!(req.uri(), "db:5432");
    let mut req = Request::connect("db:5432").body(()).unwrap();
    origin_form(&mut req, &fallback);
    assert_eq!(req.uri(), "db:5432");
}
