//! Benchmark: client → server directly, through two bare TCP relay processes (the
//! floor for any two extra processes on this machine), and through two proxy processes
//! over mTLS (client → outbound proxy → inbound proxy → server), in one run.
//!
//! ```text
//! cargo build --release -p linkerd-lite-proxy --bins --examples
//! target/release/examples/bench [seconds-per-step]
//! BENCH_STEPS=H1:2000,H2:5000 BENCH_MAX=0 target/release/examples/bench 10
//! ```
//!
//! A constant-rate (open-loop) generator sends HTTP/1.1 keep-alive and HTTP/2
//! requests at fixed rates, paced on its own thread (the schedule never waits for
//! responses, so a stall shows up as queued requests rather than a slower generator);
//! latency is timed from each request's send. Each proxy's CPU time and context
//! switches per request are read from /proc. Then a closed loop with 64 requests in
//! flight measures maximum throughput. The proxies' resident memory is read from
//! /proc idle and at the end of the 5,000 rps steps.
//!
//! `BENCH_CALLGRIND=2000` instead runs the proxies and the relays under valgrind's
//! callgrind and counts the user-space instructions each executes per request over
//! 2,000 sequential requests: a figure that does not depend on how busy the machine
//! is (needs `valgrind`). `BENCH_CALLGRIND_DIR=<dir>` keeps the dumps there for
//! `callgrind_annotate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/identity_common/mod.rs"]
mod identity_common;
#[path = "../tests/proxy_process/mod.rs"]
mod proxy_process;

use std::{
    net::SocketAddr,
    process::{Child, Command},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use proxy_process::{ProxyProcess, command_under, free_port};
use tokio::{sync::Mutex, time::Instant};

const AUTHORITY: &str = "web.bench:80";

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

/// Sends at a constant rate. The schedule runs on its own OS thread with a 1 µs timer
/// slack, because tokio's timer wheel has a 1 ms resolution and would send requests
/// in bursts (at 5,000 rps, five at a time each millisecond), which queues them
/// behind each other in a single-threaded proxy and is not what a constant-rate
/// generator does. Each request is timed from its actual send.
async fn constant_rate(conns: &Conns, rps: u32, secs: u64) -> Stats {
    let total = rps as u64 * secs;
    let period = Duration::from_secs(1) / rps;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let pacer = std::thread::spawn(move || {
        // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64)
        };
        let start = std::time::Instant::now() + Duration::from_millis(20);
        for i in 0..total {
            let at = start + period * i as u32;
            let now = std::time::Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    while rx.recv().await.is_some() {
        let c = conns.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = c.send().await;
            (sent.elapsed(), ok)
        }));
    }
    pacer.join().unwrap();
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
    let elapsed = started.elapsed().as_secs_f64();
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

/// A process's CPU time and context switches (all threads) so far.
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu_us: f64,
    switches: u64,
}

impl Usage {
    fn of(pid: u32) -> Self {
        let read =
            |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let field = |text: &str, name: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = read("stat");
        // Fields after the command name: utime and stime are the 12th and 13th.
        let ticks: u64 = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        #[allow(unsafe_code)]
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // Context switches are counted per thread.
        let switches = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|t| {
                let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                field(&status, "voluntary_ctxt_switches:")
                    + field(&status, "nonvoluntary_ctxt_switches:")
            })
            .sum();
        Self {
            cpu_us: ticks as f64 / hz * 1e6,
            switches,
        }
    }

    /// Per-request cost between two readings.
    fn per_request(self, later: Self, requests: f64) -> (f64, f64) {
        (
            (later.cpu_us - self.cpu_us) / requests,
            (later.switches - self.switches) as f64 / requests,
        )
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

/// `bench relay <listen> <target>`: a bare TCP relay (one thread, no TLS, no HTTP),
/// the floor for what any extra process in the request path costs on this machine.
fn relay(listen: &str, target: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target: SocketAddr = target.parse().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                inbound.set_nodelay(true).unwrap();
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                outbound.set_nodelay(true).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
}

/// Two relays in a chain in front of `target`, run under `wrapper` when it is not
/// empty; returns the first one's address.
fn relays(target: SocketAddr, wrapper: &[String]) -> (SocketAddr, [Child; 2]) {
    let exe = std::env::current_exe().unwrap();
    let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let (second, first) = (addr(free_port()), addr(free_port()));
    let spawn = |listen: SocketAddr, to: SocketAddr| {
        command_under(wrapper, &exe)
            .args(["relay", &listen.to_string(), &to.to_string()])
            .spawn()
            .unwrap()
    };
    let children = [spawn(second, target), spawn(first, second)];
    for a in [second, first] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(a).is_err() {
            assert!(std::time::Instant::now() < deadline, "relay never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (first, children)
}

/// Counting instructions with valgrind's callgrind (`BENCH_CALLGRIND=<requests>`).
struct Callgrind {
    requests: usize,
    dir: tempfile::TempDir,
}

impl Callgrind {
    fn from_env() -> Option<Self> {
        let requests = std::env::var("BENCH_CALLGRIND").ok()?.parse().ok()?;
        let mut dir = tempfile::Builder::new().prefix("bench-callgrind").tempdir();
        if let Ok(keep) = std::env::var("BENCH_CALLGRIND_DIR") {
            std::fs::create_dir_all(&keep).unwrap();
            dir = tempfile::Builder::new()
                .prefix("bench-callgrind")
                .disable_cleanup(true)
                .tempdir_in(keep);
        }
        Some(Self {
            requests,
            dir: dir.unwrap(),
        })
    }

    /// The command that runs a program under callgrind.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!(
                "--callgrind-out-file={}/cg.%p",
                self.dir.path().to_str().unwrap()
            ),
        ]
    }

    fn control(&self, flag: &str, pid: u32) {
        let ok = Command::new("callgrind_control")
            .args([flag, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "callgrind_control {flag} {pid} failed");
    }

    /// The instruction total of `pid`'s latest dump.
    fn totals(&self, pid: u32) -> u64 {
        let prefix = format!("cg.{pid}.");
        let latest = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, e.path()))
            })
            .max()
            .expect("no callgrind dump")
            .1;
        std::fs::read_to_string(latest)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.trim().parse().ok())
            .expect("a totals line")
    }

    /// Instructions per request in each of `pids` while `conns` sends the requests.
    async fn per_request(&self, pids: &[u32], conns: &Conns) -> Vec<f64> {
        // The connection is opened before counting.
        assert!(conns.send().await, "request failed");
        for &pid in pids {
            self.control("-z", pid);
        }
        for _ in 0..self.requests {
            assert!(conns.send().await, "request failed");
        }
        pids.iter()
            .map(|&pid| {
                self.control("-d", pid);
                self.totals(pid) as f64 / self.requests as f64
            })
            .collect()
    }

    /// Counts one relay's instructions on the relayed path, and each proxy's on
    /// the proxied path, for both protocols.
    async fn report(&self, pids: &[u32; 3], relayed: SocketAddr, proxied: SocketAddr) {
        println!(
            "## user-space instructions per request (callgrind, {} sequential requests)\n",
            self.requests
        );
        println!("| proto | one bare relay | outbound proxy | inbound proxy | proxy / relay |");
        println!("|---|---|---|---|---|");
        for proto in [Proto::H1, Proto::H2] {
            let relay = self
                .per_request(&pids[..1], &Conns::new(proto, relayed).await)
                .await[0];
            let proxies = self
                .per_request(&pids[1..], &Conns::new(proto, proxied).await)
                .await;
            println!(
                "| {proto:?} | {:.0} | {:.0} | {:.0} | {:.1} |",
                relay,
                proxies[0],
                proxies[1],
                (proxies[0] + proxies[1]) / 2.0 / relay
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("relay") {
        return relay(&args[2], &args[3]);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
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
        let mut vars = identity_common::proxy_vars(&ca, identity_addr, sa);
        vars.push(("LOG", "error".to_string()));
        vars.push((
            "CORES",
            std::env::var("PROXY_CORES").unwrap_or_else(|_| "1".into()),
        ));
        vars
    };
    let callgrind = Callgrind::from_env();
    let wrapper = callgrind
        .as_ref()
        .map(Callgrind::wrapper)
        .unwrap_or_default();
    let server = ProxyProcess::spawn_under(&wrapper, &bin, &id_vars("web"));
    let mut cvars = id_vars("api");
    cvars.push(("DESTINATION_ADDR", dst_addr.to_string()));
    let client = ProxyProcess::spawn_under(&wrapper, &bin, &cvars);
    let deadline = Instant::now() + Duration::from_secs(if wrapper.is_empty() { 20 } else { 120 });
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
    if let Some(cg) = callgrind {
        let (relayed, mut relay_procs) = relays(app, &wrapper);
        let pids = [relay_procs[0].id(), client.child.id(), server.child.id()];
        cg.report(&pids, relayed, client.outbound).await;
        for c in &mut relay_procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        return;
    }
    let idle = (client.rss_kb().0, server.rss_kb().0);

    // `BENCH_STEPS=H1:2000,H2:5000` runs only those steps; `BENCH_MAX=0` skips the
    // maximum-throughput runs.
    let steps = std::env::var("BENCH_STEPS").ok();
    let wanted = |proto: Proto, rps: u32| {
        steps
            .as_deref()
            .is_none_or(|s| s.split(',').any(|x| x.trim() == format!("{proto:?}:{rps}")))
    };
    println!(
        "## proxy benchmark ({secs}s per step, 2 cores shared by generator, app and both proxies)\n"
    );
    let (relayed, mut relay_procs) = relays(app, &[]);
    println!(
        "Latency added to the direct path by two bare TCP relays (the floor for two extra\n\
         processes on this machine) and by the two proxies (mTLS, HTTP routing, metrics):\n"
    );
    println!(
        "| proto | rps | direct p50 µs | + relays p50 µs | + proxies p50 µs | direct p99 µs | + relays p99 µs | + proxies p99 µs | proxied p99.9 µs | achieved rps | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut loaded = (0, 0);
    let mut costs = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        for rps in [1000, 2000, 5000] {
            if !wanted(proto, rps) {
                continue;
            }
            let direct = Conns::new(proto, app).await;
            let d = constant_rate(&direct, rps, secs).await;
            let relay_pid = relay_procs[0].id();
            let relay_before = Usage::of(relay_pid);
            let r = constant_rate(&Conns::new(proto, relayed).await, rps, secs).await;
            let relay_after = Usage::of(relay_pid);
            let proxied = Conns::new(proto, client.outbound).await;
            let before = (Usage::of(client.child.id()), Usage::of(server.child.id()));
            let p = constant_rate(&proxied, rps, secs).await;
            let after = (Usage::of(client.child.id()), Usage::of(server.child.id()));
            let n = (rps as u64 * secs) as f64;
            costs.push((
                proto,
                rps,
                relay_before.per_request(relay_after, n),
                before.0.per_request(after.0, n),
                before.1.per_request(after.1, n),
            ));
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
                added(r.p50, d.p50),
                added(p.p50, d.p50),
                us(d.p99),
                added(r.p99, d.p99),
                added(p.p99, d.p99),
                us(p.p999),
                p.achieved,
                d.errors + r.errors + p.errors
            );
        }
    }
    println!(
        "\nPer request, in one bare relay and in each proxy (CPU time of all threads, context switches):\n"
    );
    println!(
        "| proto | rps | relay CPU µs | relay switches | outbound CPU µs | outbound switches | inbound CPU µs | inbound switches | proxy/relay CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (proto, rps, r, c, s) in costs {
        println!(
            "| {proto:?} | {rps} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} |",
            r.0,
            r.1,
            c.0,
            c.1,
            s.0,
            s.1,
            (c.0 + s.0) / 2.0 / r.0.max(0.1)
        );
    }
    if std::env::var("BENCH_MAX").as_deref() != Ok("0") {
        println!("\n| proto | direct max rps | proxied max rps | ratio |");
        println!("|---|---|---|---|");
        for proto in [Proto::H1, Proto::H2] {
            let d = max_throughput(&Conns::new(proto, app).await, secs).await;
            let p = max_throughput(&Conns::new(proto, client.outbound).await, secs).await;
            println!("| {proto:?} | {d:.0} | {p:.0} | {:.2} |", p / d);
        }
    }
    for c in &mut relay_procs {
        let _ = c.kill();
        let _ = c.wait();
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
