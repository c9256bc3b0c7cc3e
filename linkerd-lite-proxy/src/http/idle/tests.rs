//! HTTP/2 idle connections through `serve` on real loopback sockets: time moves on
//! tokio's paused clock once the connection is up.

use std::{convert::Infallible, net::SocketAddr};

use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Notify, oneshot},
};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    detect::Protocol,
    http::{ServerLimits, boxed, serve},
};

const IDLE: Duration = Duration::from_secs(1);

/// Serves one HTTP/2 connection; `/slow` answers once `release` is notified. The
/// receiver fires when the server has closed the connection.
async fn server(release: Arc<Notify>) -> (SocketAddr, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(move |req| answer(release.clone(), req));
        let limits = ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            http2_idle_timeout: IDLE,
        };
        let _ = serve(tcp, Protocol::Http2, svc, limits, CancellationToken::new()).await;
        let _ = closed_tx.send(());
    });
    (addr, closed)
}

async fn answer(
    release: Arc<Notify>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    match req.uri().path() {
        "/slow" => release.notified().await,
        "/stream" => {
            // One chunk now, the last once released.
            let chunks = futures::stream::unfold(0, move |n| {
                let release = release.clone();
                async move {
                    match n {
                        0 => {}
                        1 => release.notified().await,
                        _ => return None,
                    }
                    let chunk = Bytes::from(if n == 0 { "a" } else { "b" });
                    Some((Ok::<_, Infallible>(Frame::data(chunk)), n + 1))
                }
            });
            return Ok(Response::new(boxed(http_body_util::StreamBody::new(
                chunks,
            ))));
        }
        _ => {}
    }
    Ok(Response::new(boxed(Full::new(Bytes::from_static(b"ok")))))
}

/// Moves the paused clock on by `by` and lets the woken tasks run.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Waits on real time for what the other end of a socket sees.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"))
}

async fn client(addr: SocketAddr) -> http2::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://web.test{path}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn a_connection_without_requests_is_closed_after_the_idle_timeout() {
    let (addr, mut closed) = server(Arc::default()).await;
    let mut tx = client(addr).await;
    let rsp = tx.send_request(get("/")).await.unwrap();
    rsp.into_body().collect().await.unwrap();

    tokio::time::pause();
    advance(IDLE / 2).await;
    assert!(closed.try_recv().is_err(), "closed before the idle timeout");
    advance(IDLE).await;
    tokio::time::resume();
    within("the server closing the connection", &mut closed)
        .await
        .unwrap();
    within("the client seeing the connection close", async {
        while !tx.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_request_in_progress_keeps_its_connection_however_long_it_takes() {
    let release = Arc::new(Notify::new());
    let (addr, mut closed) = server(release.clone()).await;
    let mut tx = client(addr).await;
    let slow = tokio::spawn(async move {
        let rsp = tx.send_request(get("/slow")).await.unwrap();
        rsp.into_body().collect().await.unwrap().to_bytes()
    });
    // Let the request reach the service (it holds a clone of `release`) before
    // time moves.
    within("the request arriving", async {
        while Arc::strong_count(&release) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    tokio::time::pause();
    for _ in 0..5 {
        advance(IDLE).await;
    }
    assert!(
        closed.try_recv().is_err(),
        "closed with a request in progress"
    );
    release.notify_one();
    tokio::time::resume();
    assert_eq!(within("the slow response", slow).await.unwrap(), "ok");

    // Idle from now on: closed one timeout later.
    tokio::time::pause();
    advance(IDLE + Duration::from_millis(10)).await;
    tokio::time::resume();
    within("the server closing the connection", &mut closed)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    // Slowloris over HTTP/2: the preface, SETTINGS, then a HEADERS frame without
    // END_HEADERS whose CONTINUATION never comes.
    let (addr, mut closed) = server(Arc::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    // HEADERS on stream 1 with END_STREAM but not END_HEADERS; the block so far is
    // `:method: GET` (static table index 2).
    hello.extend_from_slice(&[0, 0, 1, 0x1, 0x1, 0, 0, 0, 1, 0x82]);
    tcp.write_all(&hello).await.unwrap();
    // The server's SETTINGS shows it is reading.
    let mut buf = [0u8; 64];
    let n = within("the server's SETTINGS", tcp.read(&mut buf))
        .await
        .unwrap();
    assert!(n > 0);

    // GOAWAY after the idle timeout; the client answers nothing, so the
    // connection is dropped after a second one.
    tokio::time::pause();
    advance(IDLE / 2).await;
    assert!(closed.try_recv().is_err(), "closed before the idle timeout");
    advance(IDLE).await;
    assert!(
        closed.try_recv().is_err(),
        "dropped without a chance to close"
    );
    advance(IDLE).await;
    tokio::time::resume();
    within("the server closing the connection", &mut closed)
        .await
        .unwrap();
    let mut rest = Vec::new();
    within("the client seeing the end", tcp.read_to_end(&mut rest))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_response_still_streaming_keeps_its_connection() {
    let release = Arc::new(Notify::new());
    let (addr, mut closed) = server(release.clone()).await;
    let mut tx = client(addr).await;
    let rsp = tx.send_request(get("/stream")).await.unwrap();
    let mut body = rsp.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "a");

    tokio::time::pause();
    for _ in 0..5 {
        advance(IDLE).await;
    }
    assert!(
        closed.try_recv().is_err(),
        "closed while the response streams"
    );
    release.notify_one();
    tokio::time::resume();
    let rest = within("the rest of the body", body.collect())
        .await
        .unwrap();
    assert_eq!(rest.to_bytes(), "b");
}
