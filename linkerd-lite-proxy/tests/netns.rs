//! Interception as it runs in a pod: a network namespace joined to the host by a veth
//! pair, the real `init` rules, and the proxy running as UID 2102 inside it.
//!
//! Needs root, `ip`, `iptables-legacy` and `setpriv` (CI runs as root and installs
//! them); elsewhere the test reports that it was skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A namespace with a veth pair to the host; removed on drop.
struct Pod {
    ns: String,
    host_if: String,
    pod_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    proxy: Option<Child>,
}

impl Pod {
    fn new() -> Self {
        let id = std::process::id();
        let ns = format!("llp-test-{id}");
        let (a, b) = (
            format!("llpa{}", id % 100_000),
            format!("llpb{}", id % 100_000),
        );
        let net = [10, 211, (id % 250) as u8];
        let pod_ip = Ipv4Addr::new(net[0], net[1], net[2], 1);
        let host_ip = Ipv4Addr::new(net[0], net[1], net[2], 2);
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        run(&["ip", "netns", "add", &ns]);
        let pod = Self {
            ns: ns.clone(),
            host_if: b.clone(),
            pod_ip,
            host_ip,
            proxy: None,
        };
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["ip", "link", "set", &a, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("{host_ip}/24"), "dev", &b]);
        run(&["ip", "link", "set", &b, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &ns];
            all.extend(args);
            run(&all);
        };
        exec(&["ip", "addr", "add", &format!("{pod_ip}/24"), "dev", &a]);
        exec(&["ip", "link", "set", &a, "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        pod
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend(args);
        run(&all)
    }

    /// An HTTP/1 request from inside the pod, with bash's /dev/tcp.
    fn curl(&self, addr: SocketAddr, path: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/{}/{}; printf 'GET {path} HTTP/1.1\\r\\nHost: {addr}\\r\\nConnection: close\\r\\n\\r\\n' >&3; timeout 5 cat <&3",
            addr.ip(),
            addr.port()
        );
        self.exec(&["bash", "-c", &script])
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_redirect_sends_pod_traffic_through_the_proxy() {
    let root = run(&["id", "-u"]).trim() == "0";
    if !root
        || !["ip", "iptables-legacy", "setpriv", "bash"]
            .iter()
            .all(|t| have(t))
    {
        eprintln!("skipped: needs root, ip, iptables-legacy, setpriv and bash");
        return;
    }
    let mut pod = Pod::new();
    let bin = env!("CARGO_BIN_EXE_linkerd-lite-proxy");
    let init = [
        bin,
        "init",
        "--proxy-uid",
        "2102",
        "--skip-inbound-ports",
        "4190,4191",
        "--iptables-mode",
        "legacy",
    ];
    let printed = pod.exec(&init);
    assert!(printed.contains("REDIRECT --to-port 4140"), "{printed}");
    let rules = pod.exec(&["iptables-legacy-save", "-t", "nat"]);
    pod.exec(&init);
    assert_eq!(
        pod.exec(&["iptables-legacy-save", "-t", "nat"])
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count(),
        rules.lines().filter(|l| l.starts_with("-A")).count(),
        "init is idempotent"
    );

    let app = app_server_on(SocketAddr::from((pod.host_ip, 8080)), "web", Duration::ZERO).await;
    // A server-speaks-first service on a port that is not in the opaque list, which
    // discovery marks opaque.
    let smtp = speaks_first_server_on(SocketAddr::from((pod.host_ip, 2525))).await;
    let dst = TestDestination::default();
    let dst_addr = dst.spawn_on(SocketAddr::from((pod.host_ip, 0))).await;
    dst.set(&smtp.to_string(), vec![Ep::opaque(smtp, "mail-0")]);
    pod.proxy = Some(
        Command::new("ip")
            .args([
                "netns", "exec", &pod.ns, "setpriv", "--reuid", "2102", "--regid", "2102",
            ])
            .args(["--clear-groups", bin])
            .env_clear()
            .env("LINKERD_LITE_PROXY_ADMIN_LISTEN_ADDR", "0.0.0.0:9990")
            .env("LINKERD_LITE_PROXY_DESTINATION_ADDR", dst_addr.to_string())
            .env("LINKERD_LITE_PROXY_DETECT_TIMEOUT", "10s")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Host → pod:9990 is redirected to the inbound listener, which forwards to the
    // admin server on 127.0.0.1:9990 by the original destination port.
    let admin = SocketAddr::from((pod.pod_ip, 9990));
    assert_eventually!(
        {
            match tokio::net::TcpStream::connect(admin).await {
                Ok(_) => {
                    H1::connect(admin)
                        .await
                        .get("pod", "/ready", &[])
                        .await
                        .status
                        == http::StatusCode::OK
                }
                Err(_) => false,
            }
        },
        Duration::from_secs(10),
        "proxy never answered through the inbound redirect"
    );

    // Pod → host:8080 is redirected to the outbound listener, which uses
    // SO_ORIGINAL_DST to reach the app.
    let reply = pod.curl(app, "/hello");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("web /hello"), "{reply}");

    // The opaque hint skips detection: the greeting arrives without the 10 s wait.
    let start = std::time::Instant::now();
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; timeout 15 head -c 11 <&3",
        smtp.ip(),
        smtp.port()
    );
    let greeting = pod.exec(&["bash", "-c", &script]);
    assert_eq!(greeting, "220 ready\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    let m = H1::connect(admin)
        .await
        .get("pod", "/metrics", &[])
        .await
        .body;
    assert!(
        m.contains(&format!(
            "request_total{{direction=\"outbound\",authority=\"{app}\",tls=\"no_identity\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains("tcp_open_total{direction=\"inbound\",peer=\"src\""),
        "{m}"
    );
}
