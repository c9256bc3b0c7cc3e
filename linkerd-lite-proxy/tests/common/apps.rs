//! Scriptable application servers that record what reached them.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A request as the application received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Decides the status of the `n`th request (from 0).
pub type Script = Arc<dyn Fn(usize, &Seen) -> u16 + Send + Sync>;

/// A running scripted application.
#[derive(Clone)]
pub struct App {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The requests that reached it.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An HTTP/1 + HTTP/2 application named `name` answering per `script`, with
/// `x-server: name` and the body `"{name} {path} {body}"`. A request's trailer
/// `x-checksum` is echoed as the response header `x-request-trailer`; gRPC requests
/// get `grpc-status: 0` in the response trailers.
pub async fn scripted(name: &'static str, script: Script) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = App {
        addr,
        seen: seen.clone(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(name, seen.clone(), script.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    app
}

/// A scripted app that always answers `status`.
pub async fn fixed(name: &'static str, status: u16) -> App {
    scripted(name, Arc::new(move |_, _| status)).await
}

type RspBody = BoxBody<Bytes, Infallible>;

async fn handle(
    name: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
    req: Request<Incoming>,
) -> Result<Response<RspBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await;
    let (body, trailers) = match collected {
        Ok(c) => {
            let t = c.trailers().cloned();
            (c.to_bytes(), t)
        }
        Err(_) => (Bytes::new(), None),
    };
    let req = Seen {
        method: parts.method,
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        trailers,
    };
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push(req.clone());
        seen.len() - 1
    };
    let status = StatusCode::from_u16(script(n, &req)).unwrap();
    let text = format!("{name} {} {}", req.path, String::from_utf8_lossy(&req.body));
    let mut b = Response::builder()
        .status(status)
        .header("x-server", name)
        .header("x-hit", n.to_string());
    if let Some(t) = req.trailers.as_ref().and_then(|t| t.get("x-checksum")) {
        b = b.header("x-request-trailer", t.clone());
    }
    let grpc = req
        .headers
        .get("content-type")
        .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from(text))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures::stream::iter(frames));
        return Ok(b
            .header("content-type", "application/grpc")
            .body(BodyExt::boxed(body))
            .unwrap());
    }
    Ok(b.body(BodyExt::boxed(Full::new(Bytes::from(text))))
        .unwrap())
}

/// An application that never answers. Counts requests that arrived and requests
/// whose handling was cancelled (the proxy gave up on them).
pub struct Hanging {
    pub addr: SocketAddr,
    pub started: Arc<AtomicUsize>,
    pub cancelled: Arc<AtomicUsize>,
}

struct CancelGuard(Arc<AtomicUsize>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub async fn hanging() -> Hanging {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let (s, c) = (started.clone(), cancelled.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let (s, c) = (s.clone(), c.clone());
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        let _guard = CancelGuard(c);
                        std::future::pending::<()>().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Hanging {
        addr,
        started,
        cancelled,
    }
}
