//! The init step: the iptables NAT rules that redirect a pod's traffic through the
//! proxy, as Linkerd's proxy-init installs them.
//!
//! Inbound TCP (PREROUTING) goes to the inbound port; outbound TCP (OUTPUT) goes to
//! the outbound port, except the proxy's own traffic (its UID), traffic leaving on
//! loopback, and the configured ignore-ports. The rules live in two chains of our
//! own, flushed and refilled on every run, so running twice changes nothing.

use std::{collections::BTreeSet, process::Command};

use smi_crds::mesh::{PROXY_UID, ports};

use crate::env::parse_ports;

/// The chain PREROUTING jumps to.
pub const INBOUND_CHAIN: &str = "LINKERD_LITE_INBOUND";
/// The chain OUTPUT jumps to.
pub const OUTBOUND_CHAIN: &str = "LINKERD_LITE_OUTPUT";

/// Which iptables backend to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IptablesMode {
    /// `iptables-nft`.
    Nft,
    /// `iptables-legacy`.
    Legacy,
}

impl IptablesMode {
    /// The IPv4 binary to run.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
        }
    }

    /// The IPv6 binary to run.
    pub fn binary_v6(self) -> &'static str {
        match self {
            Self::Nft => "ip6tables-nft",
            Self::Legacy => "ip6tables-legacy",
        }
    }
}

/// Installs the iptables redirect for the proxy.
#[derive(Clone, Debug, clap::Args)]
pub struct InitArgs {
    /// The proxy's inbound port.
    #[arg(long, default_value_t = ports::PROXY_INBOUND)]
    pub inbound_port: u16,
    /// The proxy's outbound port.
    #[arg(long, default_value_t = ports::PROXY_OUTBOUND)]
    pub outbound_port: u16,
    /// The UID the proxy runs as; its traffic is never redirected.
    #[arg(long, default_value_t = PROXY_UID)]
    pub proxy_uid: u32,
    /// Inbound ports not redirected, e.g. `4190,4191,9000-9010`.
    #[arg(long, default_value = "", value_parser = parse_port_set)]
    pub skip_inbound_ports: BTreeSet<u16>,
    /// Outbound ports not redirected.
    #[arg(long, default_value = "", value_parser = parse_port_set)]
    pub skip_outbound_ports: BTreeSet<u16>,
    /// iptables backend.
    #[arg(long, value_enum, default_value_t = IptablesMode::Legacy)]
    pub iptables_mode: IptablesMode,
    /// Install the same rules for IPv6 (ip6tables) too.
    #[arg(long)]
    pub ipv6: bool,
    /// Print the commands without running them.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_port_set(s: &str) -> Result<BTreeSet<u16>, String> {
    parse_ports(s)
}

/// One iptables invocation of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the chain, or flush it if it exists.
    ResetChain(&'static str),
    /// Append a rule to our own (just reset) chain.
    Append(Vec<String>),
    /// Append the jump from a built-in chain unless it is already there.
    Jump {
        /// `PREROUTING` or `OUTPUT`.
        from: &'static str,
        /// Our chain.
        to: &'static str,
    },
}

impl Step {
    /// The iptables arguments (after `-t nat`) this step prints as.
    pub fn display(&self) -> String {
        match self {
            Self::ResetChain(c) => format!("-t nat -N {c} (or -F {c} when it exists)"),
            Self::Append(args) => format!("-t nat {}", args.join(" ")),
            Self::Jump { from, to } => format!("-t nat -A {from} -j {to} (unless present)"),
        }
    }
}

/// The rules for `args`, in the order they are applied.
pub fn plan(args: &InitArgs) -> Vec<Step> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut steps = vec![Step::ResetChain(INBOUND_CHAIN)];
    steps.extend(skip_ports(INBOUND_CHAIN, &args.skip_inbound_ports));
    let inbound = args.inbound_port.to_string();
    steps.push(Step::Append(s(&[
        "-A",
        INBOUND_CHAIN,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-port",
        &inbound,
    ])));
    steps.push(Step::Jump {
        from: "PREROUTING",
        to: INBOUND_CHAIN,
    });

    steps.push(Step::ResetChain(OUTBOUND_CHAIN));
    let uid = args.proxy_uid.to_string();
    steps.push(Step::Append(s(&[
        "-A",
        OUTBOUND_CHAIN,
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "RETURN",
    ])));
    steps.push(Step::Append(s(&[
        "-A",
        OUTBOUND_CHAIN,
        "-o",
        "lo",
        "-j",
        "RETURN",
    ])));
    steps.extend(skip_ports(OUTBOUND_CHAIN, &args.skip_outbound_ports));
    let outbound = args.outbound_port.to_string();
    steps.push(Step::Append(s(&[
        "-A",
        OUTBOUND_CHAIN,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-port",
        &outbound,
    ])));
    steps.push(Step::Jump {
        from: "OUTPUT",
        to: OUTBOUND_CHAIN,
    });
    steps
}

/// `RETURN` rules that leave the given destination ports alone, at most 15 ports a rule.
fn skip_ports(chain: &str, ports: &BTreeSet<u16>) -> Vec<Step> {
    port_chunks(ports)
        .into_iter()
        .map(|chunk| {
            let mut rule: Vec<String> = ["-A", chain, "-p", "tcp", "-m", "multiport", "--dports"]
                .iter()
                .map(|x| x.to_string())
                .collect();
            rule.push(chunk);
            rule.extend(["-j".to_string(), "RETURN".to_string()]);
            Step::Append(rule)
        })
        .collect()
}

/// `multiport` takes at most 15 ports per rule; ranges are written `lo:hi`.
fn port_chunks(ports: &BTreeSet<u16>) -> Vec<String> {
    let mut ranges: Vec<(u16, u16)> = vec![];
    for &p in ports {
        match ranges.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(p) => *hi = p,
            _ => ranges.push((p, p)),
        }
    }
    // A range counts as two ports against the limit.
    let mut chunks = vec![];
    let mut cur: Vec<String> = vec![];
    let mut weight = 0;
    for (lo, hi) in ranges {
        let (item, w) = if lo == hi {
            (lo.to_string(), 1)
        } else {
            (format!("{lo}:{hi}"), 2)
        };
        if weight + w > 15 {
            chunks.push(cur.join(","));
            cur.clear();
            weight = 0;
        }
        cur.push(item);
        weight += w;
    }
    if !cur.is_empty() {
        chunks.push(cur.join(","));
    }
    chunks
}

/// Why the rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The iptables binary could not be run.
    #[error("running {binary}")]
    Spawn {
        /// The binary.
        binary: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An iptables command failed.
    #[error("{binary} -t nat {args} failed: {stderr}")]
    Failed {
        /// The binary.
        binary: &'static str,
        /// The arguments after `-t nat`.
        args: String,
        /// What it printed.
        stderr: String,
    },
}

fn iptables(binary: &'static str, args: &[&str]) -> Result<bool, InitError> {
    let out = Command::new(binary)
        .args(["-w", "-t", "nat"])
        .args(args)
        .output()
        .map_err(|source| InitError::Spawn { binary, source })?;
    Ok(out.status.success())
}

fn must(binary: &'static str, args: &[&str]) -> Result<(), InitError> {
    let out = Command::new(binary)
        .args(["-w", "-t", "nat"])
        .args(args)
        .output()
        .map_err(|source| InitError::Spawn { binary, source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(InitError::Failed {
        binary,
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Applies the plan (for IPv4, and IPv6 when asked), writing each step to `out` as
/// it goes.
pub fn apply(args: &InitArgs, out: &mut dyn std::io::Write) -> Result<(), InitError> {
    let mut binaries = vec![args.iptables_mode.binary()];
    if args.ipv6 {
        binaries.push(args.iptables_mode.binary_v6());
    }
    for bin in binaries {
        apply_with(bin, args, out)?;
    }
    Ok(())
}

fn apply_with(
    bin: &'static str,
    args: &InitArgs,
    out: &mut dyn std::io::Write,
) -> Result<(), InitError> {
    for step in plan(args) {
        let _ = writeln!(out, "{bin} {}", step.display());
        if args.dry_run {
            continue;
        }
        match &step {
            Step::ResetChain(c) => {
                if !iptables(bin, &["-N", c])? {
                    must(bin, &["-F", c])?;
                }
            }
            Step::Append(rule) => {
                let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
                must(bin, &rule)?;
            }
            Step::Jump { from, to } => {
                if !iptables(bin, &["-C", from, "-j", to])? {
                    must(bin, &["-A", from, "-j", to])?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(skip_in: &str, skip_out: &str) -> InitArgs {
        InitArgs {
            inbound_port: 4143,
            outbound_port: 4140,
            proxy_uid: 2102,
            skip_inbound_ports: parse_ports(skip_in).unwrap(),
            skip_outbound_ports: parse_ports(skip_out).unwrap(),
            iptables_mode: IptablesMode::Nft,
            ipv6: false,
            dry_run: true,
        }
    }

    #[test]
    fn the_plan_matches_linkerds_rules() {
        let lines: Vec<String> = plan(&args("4190,4191", "443"))
            .iter()
            .map(Step::display)
            .collect();
        assert_eq!(
            lines,
            vec![
                "-t nat -N LINKERD_LITE_INBOUND (or -F LINKERD_LITE_INBOUND when it exists)",
                "-t nat -A LINKERD_LITE_INBOUND -p tcp -m multiport --dports 4190:4191 -j RETURN",
                "-t nat -A LINKERD_LITE_INBOUND -p tcp -j REDIRECT --to-port 4143",
                "-t nat -A PREROUTING -j LINKERD_LITE_INBOUND (unless present)",
                "-t nat -N LINKERD_LITE_OUTPUT (or -F LINKERD_LITE_OUTPUT when it exists)",
                "-t nat -A LINKERD_LITE_OUTPUT -m owner --uid-owner 2102 -j RETURN",
                "-t nat -A LINKERD_LITE_OUTPUT -o lo -j RETURN",
                "-t nat -A LINKERD_LITE_OUTPUT -p tcp -m multiport --dports 443 -j RETURN",
                "-t nat -A LINKERD_LITE_OUTPUT -p tcp -j REDIRECT --to-port 4140",
                "-t nat -A OUTPUT -j LINKERD_LITE_OUTPUT (unless present)",
            ]
        );
    }

    #[test]
    fn ipv6_repeats_the_rules_with_ip6tables() {
        let mut a = args("", "");
        a.ipv6 = true;
        let mut out = Vec::new();
        apply(&a, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let v4 = text
            .lines()
            .filter(|l| l.starts_with("iptables-nft "))
            .count();
        let v6 = text
            .lines()
            .filter(|l| l.starts_with("ip6tables-nft "))
            .count();
        assert_eq!((v4, v6), (8, 8), "{text}");
    }

    #[test]
    fn many_ports_are_split_into_multiport_chunks() {
        let many = (1..=20)
            .map(|p| (p * 2).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let chunks = port_chunks(&parse_ports(&many).unwrap());
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].split(',').count(), 15);
        let ranges = port_chunks(&parse_ports("10-20,25").unwrap());
        assert_eq!(ranges, vec!["10:20,25"]);
        assert!(
            plan(&args("", ""))
                .iter()
                .all(|s| !s.display().contains("multiport"))
        );
    }
}
