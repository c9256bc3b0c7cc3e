//! The demo application: `serve` answers every request with its version and the
//! client identity the proxy vouched for; `get` sends requests and prints what came
//! back, one JSON line per request.
//!
//! ```text
//! demo-app serve --addr 0.0.0.0:8080 --version v1
//! demo-app get http://10.96.0.10/ --count 100
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("serve") => {
            let addr: SocketAddr = flag("--addr")
                .unwrap_or_else(|| "0.0.0.0:8080".into())
                .parse()
                .context("--addr")?;
            let version = flag("--version").unwrap_or_else(|| "v1".into());
            serve(addr, version).await
        }
        Some("get") => {
            let url = args.get(1).context("get needs a URL")?;
            let count: usize = flag("--count").unwrap_or_else(|| "1".into()).parse()?;
            get(url, count).await
        }
        _ => bail!("usage: demo-app serve [--addr A] [--version V] | get URL [--count N]"),
    }
}

async fn serve(addr: SocketAddr, version: String) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    loop {
        let (io, _) = listener.accept().await?;
        let version = version.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let client = req
                    .headers()
                    .get("l5d-client-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = serde_json::json!({"version": version, "client_id": client}).to_string();
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}

// Printing results is this command's job.
#[allow(clippy::print_stdout)]
async fn get(url: &str, count: usize) -> anyhow::Result<()> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for _ in 0..count {
        let req = Request::get(url).body(Full::new(Bytes::new()))?;
        match client.request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                let body: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                println!("{}", serde_json::json!({"status": status, "body": body}));
            }
            Err(e) => println!("{}", serde_json::json!({"error": e.to_string()})),
        }
    }
    Ok(())
}
