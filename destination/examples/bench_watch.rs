//! Benchmark (not a test): the destination service at scale, in local (files) mode.
//!
//! Starts the real `destination` binary on a generated directory of 1,000 Services with
//! 10,000 meshed endpoints (Service + EndpointSlice + Pods per file, over 10
//! namespaces), opens 1,000 `Destination.Get` streams over loopback (4 per Service on
//! 250 Services, as 4 client proxies would), then edits one Service's file at a time
//! and measures the time from the edit to the update arriving on every affected
//! stream. The same measurement with only 4 streams open, taken first in the same run,
//! is the baseline the ratios are against. Resident memory is the server process's
//! VmRSS / VmHWM.
//!
//! ```text
//! cargo build --release -p destination --bins --examples
//! target/release/examples/bench_watch
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use linkerd2_proxy_api::destination::{GetDestination, destination_client::DestinationClient};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const SERVICES: usize = 1_000;
const ENDPOINTS_PER_SERVICE: usize = 10;
const NAMESPACES: usize = 10;
const WATCHED_SERVICES: usize = 250;
const STREAMS_PER_SERVICE: usize = 4;
const CONNECTIONS: usize = 10;
const BASELINE_ROUNDS: usize = 50;
const ROUNDS: usize = 200;

fn ns(i: usize) -> String {
    format!("ns-{}", i % NAMESPACES)
}

fn manifest(i: usize, generation: usize) -> String {
    let (ns, name) = (ns(i), format!("svc-{i}"));
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: 10.96.{}.{}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
        i / 250,
        i % 250
    );
    let mut eps = String::new();
    for e in 0..ENDPOINTS_PER_SERVICE {
        // Each generation moves one endpoint to a new address: one Remove + one Add.
        let host = if e == 0 { generation % 200 + 20 } else { e };
        let ip = format!("10.{}.{}.{}", i / 250, i % 250, host);
        let pod = format!("{name}-pod-{e}");
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  labels:\n    app: {name}\n    pod-template-hash: abc12\n  ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: {name}-abc12\n    uid: u-{i}\n    controller: true\nspec:\n  serviceAccountName: {name}\n  containers:\n  - name: app\n  - name: linkerd-lite-proxy\nstatus:\n  podIP: {ip}\n"
        );
        let _ = write!(
            eps,
            "- addresses: [\"{ip}\"]\n  conditions:\n    ready: true\n  targetRef:\n    kind: Pod\n    name: {pod}\n"
        );
    }
    let _ = write!(
        out,
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abcde\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  port: 8080\nendpoints:\n{eps}"
    );
    out
}

fn write_atomic(dir: &Path, i: usize, generation: usize) {
    let tmp = dir.join(format!(".svc-{i}.tmp"));
    std::fs::write(&tmp, manifest(i, generation)).unwrap();
    std::fs::rename(&tmp, dir.join(format!("svc-{i}.yaml"))).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/bench_watch -> target/<profile>/destination
    let bin = exe.parent().unwrap().parent().unwrap().join("destination");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p destination --bins --examples`",
        bin.display()
    );
    bin
}

fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
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

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await;
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp).await;
            if resp.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `STREAMS_PER_SERVICE` streams on each of `services`, reporting every message
/// after the first as `(service, arrival)`.
async fn open_streams(
    channels: &[Channel],
    services: std::ops::Range<usize>,
    tx: &mpsc::UnboundedSender<(usize, Instant)>,
) -> Duration {
    let start = Instant::now();
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let mut n = 0;
    for i in services {
        for s in 0..STREAMS_PER_SERVICE {
            let mut client = DestinationClient::new(
                channels[(i * STREAMS_PER_SERVICE + s) % channels.len()].clone(),
            );
            let (tx, first_tx) = (tx.clone(), first_tx.clone());
            n += 1;
            tokio::spawn(async move {
                let req = GetDestination {
                    scheme: "k8s".into(),
                    path: format!("svc-{i}.{}.svc.cluster.local:80", ns(i)),
                    context_token: String::new(),
                };
                let mut stream = client.get(req).await.unwrap().into_inner();
                stream.message().await.unwrap().unwrap();
                let _ = first_tx.send(());
                while let Ok(Some(_)) = stream.message().await {
                    let _ = tx.send((i, Instant::now()));
                }
            });
        }
    }
    for _ in 0..n {
        first_rx.recv().await.unwrap();
    }
    start.elapsed()
}

/// Edits `rounds` files in turn among `services`; returns the latency per edit until
/// every one of the service's streams has seen an update (a move is a Remove and an
/// Add; the Add is the last message).
async fn measure(
    dir: &Path,
    services: usize,
    rounds: usize,
    generation: &mut HashMap<usize, usize>,
    rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(rounds);
    let mut stray = 0;
    for r in 0..rounds {
        let i = (r * 7919) % services;
        let g = generation.entry(i).or_insert(0);
        *g += 1;
        let t0 = Instant::now();
        write_atomic(dir, i, *g);
        // Each stream gets a Remove then an Add for the moved endpoint.
        let mut need = STREAMS_PER_SERVICE * 2;
        let mut last = t0;
        while need > 0 {
            let (svc, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("an update within 10 s")
                .unwrap();
            if svc == i {
                need -= 1;
                last = at;
            } else {
                stray += 1;
            }
        }
        latencies.push(last - t0);
        // Let notifications for this edit settle before the next.
        tokio::time::sleep(Duration::from_millis(30)).await;
        while let Ok((svc, _)) = rx.try_recv() {
            if svc != i {
                stray += 1;
            }
        }
    }
    (latencies, stray)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    for i in 0..SERVICES {
        write_atomic(dir.path(), i, 0);
    }
    println!(
        "generated {SERVICES} services, {} endpoints in {:?}",
        SERVICES * ENDPOINTS_PER_SERVICE,
        t.elapsed()
    );

    let (grpc, admin) = (free_port(), free_port());
    let start = Instant::now();
    let child = Command::new(server_binary())
        .args(["--source", "files", "--dir"])
        .arg(dir.path())
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child };
    let pid = server.child.id();
    wait_ready(admin).await;
    let load = start.elapsed();
    let (rss_loaded, _) = memory_kib(pid);
    println!(
        "server ready after {load:?}; VmRSS {:.1} MiB",
        rss_loaded as f64 / 1024.0
    );

    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(
            Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut generation = HashMap::new();

    // Baseline: one watched Service (4 streams).
    open_streams(&channels, 0..1, &tx).await;
    let (mut base, _) = measure(dir.path(), 1, BASELINE_ROUNDS, &mut generation, &mut rx).await;
    base.sort();

    // At scale: 1,000 streams on 250 Services.
    let opened = open_streams(&channels, 1..WATCHED_SERVICES, &tx).await;
    let (rss_streams, _) = memory_kib(pid);
    println!(
        "{} streams open (first message on all within {opened:?}); VmRSS {:.1} MiB",
        WATCHED_SERVICES * STREAMS_PER_SERVICE,
        rss_streams as f64 / 1024.0
    );
    let (mut lat, stray) = measure(
        dir.path(),
        WATCHED_SERVICES,
        ROUNDS,
        &mut generation,
        &mut rx,
    )
    .await;
    lat.sort();
    let (rss_end, hwm) = memory_kib(pid);

    println!();
    println!("| measure | 4 streams (baseline) | 1,000 streams | ratio |");
    println!("|---|---|---|---|");
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (b, s) = (pct(&base, p), pct(&lat, p));
        println!(
            "| {name} edit → update on all affected streams | {:.1} ms | {:.1} ms | {:.2} |",
            ms(b),
            ms(s),
            ms(s) / ms(b)
        );
    }
    println!(
        "| max | {:.1} ms | {:.1} ms | |",
        ms(*base.last().unwrap()),
        ms(*lat.last().unwrap())
    );
    println!();
    println!(
        "server memory: VmRSS {:.1} MiB loaded, {:.1} MiB with streams, {:.1} MiB at end (VmHWM {:.1} MiB)",
        rss_loaded as f64 / 1024.0,
        rss_streams as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("updates on unaffected streams: {stray} (should be 0)");
    println!("edits: {BASELINE_ROUNDS} baseline + {ROUNDS} at scale; debounce 25 ms included");
    drop(server);
}
