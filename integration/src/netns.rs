//! "Pods" as Linux network namespaces, for end-to-end tests of transparent
//! interception with real iptables rules.
//!
//! A [`Lab`] owns a switch namespace holding a bridge; each [`Pod`] is a namespace
//! joined to the bridge by a veth pair, with its own address in a private /24 that
//! exists only inside these namespaces. Nothing is added to the host's own network
//! namespace, and everything is deleted when the lab is dropped.

use std::net::Ipv4Addr;
use std::process::Command;

/// Why a lab could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Network namespaces need root.
    #[error("network-namespace tests need root (CI runs them as root)")]
    NotRoot,
    /// An `ip` command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
}

fn run(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| LabError::Command {
            command: args.join(" "),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A set of pods on one bridge.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    switch: String,
    subnet: u8,
    pods: Vec<String>,
}

/// One pod: a network namespace with an address on the lab's bridge.
#[derive(Clone, Debug)]
pub struct Pod {
    /// The namespace's name, for `ip netns exec`.
    pub netns: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

impl Lab {
    /// Creates the switch namespace and its bridge.
    pub fn new() -> Result<Self, LabError> {
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = (std::process::id() % 1000) * 10 + n % 10;
        let prefix = format!("ll{id}");
        let switch = format!("{prefix}-sw");
        let subnet = (10 + (id % 200)) as u8;
        let lab = Self {
            prefix,
            switch,
            subnet,
            pods: Vec::new(),
        };
        run(&["ip", "netns", "add", &lab.switch])?;
        lab.in_switch(&["ip", "link", "add", "br0", "type", "bridge"])?;
        lab.in_switch(&["ip", "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    fn in_switch(&self, args: &[&str]) -> Result<(), LabError> {
        let mut full = vec!["ip", "netns", "exec", &self.switch];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Adds a pod with the next free address.
    pub fn pod(&mut self, name: &str) -> Result<Pod, LabError> {
        let index = self.pods.len() + 1;
        let netns = format!("{}-{name}", self.prefix);
        let ip = Ipv4Addr::new(10, 213, self.subnet, index as u8 + 1);
        let host_end = format!("{}v{index}", self.prefix);
        let pod_end = format!("{}p{index}", self.prefix);
        run(&["ip", "netns", "add", &netns])?;
        self.pods.push(netns.clone());
        run(&[
            "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &pod_end,
        ])?;
        run(&["ip", "link", "set", &host_end, "netns", &self.switch])?;
        run(&["ip", "link", "set", &pod_end, "netns", &netns])?;
        self.in_switch(&["ip", "link", "set", &host_end, "master", "br0"])?;
        self.in_switch(&["ip", "link", "set", &host_end, "up"])?;
        let pod = Pod { netns, ip };
        pod.run(&["ip", "link", "set", "lo", "up"])?;
        pod.run(&["ip", "link", "set", &pod_end, "name", "eth0"])?;
        pod.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        pod.run(&["ip", "link", "set", "eth0", "up"])?;
        // Cluster IPs (10.96.0.0/12) have no host behind them: a route must exist for
        // connect() to reach the iptables OUTPUT redirect, as in a real cluster.
        pod.run(&["ip", "route", "add", "10.96.0.0/12", "dev", "eth0"])?;
        Ok(pod)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain(std::iter::once(&self.switch)) {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

impl Pod {
    /// Runs a command inside the pod and waits for it.
    pub fn run(&self, args: &[&str]) -> Result<(), LabError> {
        let mut full = vec!["ip", "netns", "exec", &self.netns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// A command that will run inside the pod.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// A command that will run inside the pod as `uid` (the proxy runs as 2102, so
    /// the iptables rules let its own traffic through).
    pub fn command_as(&self, uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(program);
        cmd
    }
}
