//! A `linkerd-lite-proxy` binary run as a real process on loopback ports, shared by
//! the process tests and the benchmark.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
};

use http::StatusCode;

use crate::common::H1;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command running `program` under `wrapper` (a program and its arguments, such as
/// a profiler), or directly when `wrapper` is empty.
pub fn command_under(wrapper: &[String], program: &Path) -> Command {
    match wrapper.split_first() {
        Some((w, args)) => {
            let mut cmd = Command::new(w);
            cmd.args(args).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A running proxy process; killed when dropped.
pub struct ProxyProcess {
    pub child: Child,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

impl ProxyProcess {
    /// Starts `bin` on fresh loopback ports, with `vars` named without the
    /// `LINKERD_LITE_PROXY_` prefix.
    pub fn spawn(bin: &Path, vars: &[(&str, String)]) -> Self {
        Self::spawn_under(&[], bin, vars)
    }

    /// Like [`Self::spawn`], run under `wrapper` (a program and its arguments, such
    /// as a profiler), when not empty.
    pub fn spawn_under(wrapper: &[String], bin: &Path, vars: &[(&str, String)]) -> Self {
        let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let (outbound, inbound, admin) = (addr(free_port()), addr(free_port()), addr(free_port()));
        let mut cmd = command_under(wrapper, bin);
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
            .env("LINKERD_LITE_PROXY_SHUTDOWN_GRACE_PERIOD", "2s")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
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

    /// Whether the admin server answers `/ready` with 200.
    pub async fn ready(&self) -> bool {
        let Ok(tcp) = tokio::net::TcpStream::connect(self.admin).await else {
            return false;
        };
        drop(tcp);
        let mut c = H1::connect(self.admin).await;
        c.get("localhost", "/ready", &[]).await.status == StatusCode::OK
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub async fn exit(mut self) -> bool {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap().success())
            .await
            .unwrap()
    }

    /// Sends `sig` (e.g. `-TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in KiB.
    pub fn rss_kb(&self) -> (u64, u64) {
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
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
