//! Benchmark: client → server directly, and through two proxy processes over mTLS
//! (client → outbound proxy → inbound proxy → server), in one run.
//!
//! ```text
//! cargo build --release -p linkerd-lite-proxy --bins --examples
//! target/release/examples/bench [seconds-per-step]
//! ```
//!
//! A constant-rate (open-loop) generator sends HTTP/1.1 keep-alive and HTTP/2
//! requests at fixed rates (the schedule never waits for responses, so a stall shows
//! up as queued requests rather than a slower generator); latency is timed from each
//! request's send. Then a closed loop
//! with 64 requests in flight measures maximum throughput. The proxies' resident
//! memory is read from /proc idle and at the end of the 5,000 rps step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/identity_common/mod.rs"]
mod identity_common;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::{sync::Mutex, time::Instant};

const AUTHORITY: &str = "web.bench:80";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
    outbound: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
}

impl Proc {
    fn spawn(bin: &std::path::Path, vars: &[(&str, String)]) -> Self {
        let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let (outbound, inbound, admin) = (addr(free_port()), addr(free_port()), addr(free_port()));
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env(
                "LINKERD_LITE_PROXY_OUTBOUND_LISTEN_ADDR",
                outbound.to_string(),
            )
            .env(
                "LINKERD_LITE_PROXY_INBOUND_LISTEN_ADDR",
                inbound.to_string(),
            )
            .env("LINKERD_LITE_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
            .stdout(Stdio::null());
        for (k, v) in vars {
            cmd.env(format!("LINKERD_LITE_PROXY_{k}"), v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            outbound,
            inbound,
            admin,
        }
    }

    fn rss_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn ready(&self) -> bool {
        if tokio::net::TcpStream::connect(self.admin).await.is_err() {
            return false;
        }
        H1::connect(self.admin)
            .await
            .get("localhost", "/ready", &[])
            .await
            .status
            == 200
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H1,
    H2,
}

/// Connections the generator sends on.
#[derive(Clone)]
enum Conns {
    H1(
        Arc<Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>>,
        SocketAddr,
    ),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conns {
    async fn new(proto: Proto, addr: SocketAddr) -> Self {
        match proto {
            Proto::H1 => Self::H1(Arc::default(), addr),
            Proto::H2 => Self::H2(h2(addr).await),
        }
    }

    async fn send(&self) -> bool {
        let req = || {
            Request::get(format!("http://{AUTHORITY}/"))
                .header("host", AUTHORITY)
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        match self {
            Self::H2(s) => {
                let mut s = s.clone();
                let mut req = req();
                req.headers_mut().remove("host");
                match s.send_request(req).await {
                    Ok(r) => r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
            Self::H1(pool, addr) => {
                let idle = pool.lock().await.pop();
                let mut s = match idle {
                    Some(s) => s,
                    None => {
                        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                        tcp.set_nodelay(true).unwrap();
                        let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                            .await
                            .unwrap();
                        tokio::spawn(c);
                        s
                    }
                };
                let mut req = req();
                *req.uri_mut() = "/".parse().unwrap();
                if s.ready().await.is_err() {
                    return false;
                }
                let ok = match s.send_request(req).await {
                    Ok(r) => r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    pool.lock().await.push(s);
                }
                ok
            }
        }
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    achieved: f64,
    errors: usize,
}

async fn constant_rate(conns: &Conns, rps: u32, secs: u64) -> Stats {
    let total = rps as u64 * secs;
    let start = Instant::now() + Duration::from_millis(20);
    let period = Duration::from_secs(1) / rps;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + period * i as u32;
        tokio::time::sleep_until(at).await;
        let c = conns.clone();
        tasks.push(tokio::spawn(async move {
            // Timed from the actual send: tokio's 1 ms timer makes sends up to 1 ms
            // late, equally for both paths, and that noise would swamp the difference.
            let sent = Instant::now();
            let ok = c.send().await;
            let _ = at;
            (sent.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        if ok {
            lat.push(d);
        } else {
            errors += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Stats {
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        achieved: lat.len() as f64 / elapsed,
        errors,
    }
}

async fn max_throughput(conns: &Conns, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let c = conns.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if c.send().await {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for w in workers {
        n += w.await.unwrap();
    }
    n as f64 / secs as f64
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("linkerd-lite-proxy");
    assert!(
        bin.exists(),
        "build the proxy first: cargo build --release -p linkerd-lite-proxy --bins --examples"
    );

    let ca = identity_common::ca();
    let (identity_addr, _stop) =
        identity_common::serve(ca.dir.path(), Duration::from_secs(24 * 3600)).await;
    let dst = TestDestination::default();
    let dst_addr = dst.spawn().await;
    let app = app_server("web", Duration::ZERO).await;
    let id_vars = |sa: &str| {
        vec![
            ("IDENTITY_ADDR", identity_addr.to_string()),
            ("IDENTITY_NAME", identity_common::dns(sa)),
            (
                "IDENTITY_TOKEN_FILE",
                ca.dir
                    .path()
                    .join(format!("{sa}.token"))
                    .display()
                    .to_string(),
            ),
            ("IDENTITY_TRUST_ANCHORS", ca.pki.trust_anchor_pem.clone()),
            ("LOG", "error".to_string()),
            (
                "CORES",
                std::env::var("PROXY_CORES").unwrap_or_else(|_| "1".into()),
            ),
        ]
    };
    let server = Proc::spawn(&bin, &id_vars("web"));
    let mut cvars = id_vars("api");
    cvars.push(("DESTINATION_ADDR", dst_addr.to_string()));
    let client = Proc::spawn(&bin, &cvars);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(server.ready().await && client.ready().await) {
        assert!(Instant::now() < deadline, "proxies never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dst.set(
        AUTHORITY,
        vec![Ep::meshed(
            app,
            &identity_common::dns("web"),
            server.inbound.port(),
            "web-0",
        )],
    );
    // Warm up: discovery, TLS, pools.
    for proto in [Proto::H1, Proto::H2] {
        let c = Conns::new(proto, client.outbound).await;
        for _ in 0..200 {
            assert!(c.send().await, "warm-up request failed");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = (client.rss_kb().0, server.rss_kb().0);

    println!(
        "## proxy benchmark ({secs}s per step, 2 cores shared by generator, app and both proxies)\n"
    );
    println!(
        "| proto | rps | direct p50 µs | proxied p50 µs | added p50 µs | direct p99 µs | proxied p99 µs | added p99 µs | proxied p99.9 µs | achieved rps | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut loaded = (0, 0);
    for proto in [Proto::H1, Proto::H2] {
        for rps in [1000, 2000, 5000] {
            let direct = Conns::new(proto, app).await;
            let d = constant_rate(&direct, rps, secs).await;
            let proxied = Conns::new(proto, client.outbound).await;
            let p = constant_rate(&proxied, rps, secs).await;
            if rps == 5000 {
                let (c, s) = (client.rss_kb().0, server.rss_kb().0);
                loaded = (loaded.0.max(c), loaded.1.max(s));
            }
            let added = |a: Duration, b: Duration| {
                format!("{:.0}", (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
            };
            println!(
                "| {proto:?} | {rps} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
                us(d.p50),
                us(p.p50),
                added(p.p50, d.p50),
                us(d.p99),
                us(p.p99),
                added(p.p99, d.p99),
                us(p.p999),
                p.achieved,
                d.errors + p.errors
            );
        }
    }
    println!("\n| proto | direct max rps | proxied max rps | ratio |");
    println!("|---|---|---|---|");
    for proto in [Proto::H1, Proto::H2] {
        let d = max_throughput(&Conns::new(proto, app).await, secs).await;
        let p = max_throughput(&Conns::new(proto, client.outbound).await, secs).await;
        println!("| {proto:?} | {d:.0} | {p:.0} | {:.2} |", p / d);
    }
    let hwm = (client.rss_kb().1, server.rss_kb().1);
    println!("\n| proxy | RSS idle MB | RSS after 5,000 rps MB | peak RSS (VmHWM) MB |");
    println!("|---|---|---|---|");
    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    println!(
        "| client-side (outbound) | {} | {} | {} |",
        mb(idle.0),
        mb(loaded.0),
        mb(hwm.0)
    );
    println!(
        "| server-side (inbound) | {} | {} | {} |",
        mb(idle.1),
        mb(loaded.1),
        mb(hwm.1)
    );
}
