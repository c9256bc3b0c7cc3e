//! Parsing what proxies ask for: `svc.ns.svc.cluster.local:port` authorities, bare
//! `ip:port` addresses, and inbound workload names.

use std::net::SocketAddr;

use crate::index::{PodPortKey, ServicePortKey};

/// Why a request names no valid target; answered with `InvalidArgument`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The authority is not a Service name in the cluster domain nor an address.
    #[error(
        "target {target:?} is not <service>.<namespace>.svc.{cluster_domain}[:port] nor ip:port"
    )]
    Authority {
        /// What was asked for.
        target: String,
        /// The cluster domain expected.
        cluster_domain: String,
    },
    /// The port is not a valid TCP port.
    #[error("port {0} of target {1:?} is not a TCP port")]
    Port(u64, String),
    /// The workload is neither `{"ns":..,"pod":..}` nor `ns:pod`.
    #[error(
        "workload {0:?} is neither {{\"ns\":\"<namespace>\",\"pod\":\"<pod>\"}} nor <namespace>:<pod>"
    )]
    Workload(String),
}

/// A parsed authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Service port by name.
    Service(ServicePortKey),
    /// A bare address.
    Addr(SocketAddr),
}

/// Parses `name.ns.svc.{cluster_domain}[:port]` (port 80 when absent, a trailing dot
/// allowed) or `ip:port`.
pub fn parse_authority(target: &str, cluster_domain: &str) -> Result<Target, TargetError> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(Target::Addr(addr));
    }
    let bad = || TargetError::Authority {
        target: target.to_string(),
        cluster_domain: cluster_domain.to_string(),
    };
    let (host, port) = match target.rsplit_once(':') {
        Some((host, port)) => {
            let port: u64 = port.parse().map_err(|_| bad())?;
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| TargetError::Port(port, target.to_string()))?;
            (host, port)
        }
        None => (target, 80),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let rest = host
        .strip_suffix(cluster_domain)
        .and_then(|h| h.strip_suffix('.'))
        .unwrap_or(host);
    let rest = rest.strip_suffix(".svc").ok_or_else(bad)?;
    let (name, namespace) = rest.split_once('.').ok_or_else(bad)?;
    if !smi_crds::mesh::is_dns_label(name) || !smi_crds::mesh::is_dns_label(namespace) {
        return Err(bad());
    }
    Ok(Target::Service(ServicePortKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
        port,
    }))
}

/// Parses an inbound `PortSpec`: `workload` is `{"ns":"shop","pod":"web-1"}` (as current
/// proxies send) or `shop:web-1`.
pub fn parse_workload(workload: &str, port: u32) -> Result<PodPortKey, TargetError> {
    let bad = || TargetError::Workload(workload.to_string());
    let (namespace, pod) = if workload.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(workload).map_err(|_| bad())?;
        let get = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_string);
        (get("ns").ok_or_else(bad)?, get("pod").ok_or_else(bad)?)
    } else {
        let (ns, pod) = workload.split_once(':').ok_or_else(bad)?;
        (ns.to_string(), pod.to_string())
    };
    if namespace.is_empty() || pod.is_empty() {
        return Err(bad());
    }
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| TargetError::Port(u64::from(port), workload.to_string()))?;
    Ok(PodPortKey {
        namespace,
        pod,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, port: u16) -> Target {
        Target::Service(ServicePortKey {
            namespace: ns.into(),
            name: name.into(),
            port,
        })
    }

    #[test]
    fn authorities_parse() {
        let d = "cluster.local";
        assert_eq!(
            parse_authority("web.shop.svc.cluster.local:8080", d),
            Ok(svc("shop", "web", 8080))
        );
        assert_eq!(
            parse_authority("web.shop.svc.cluster.local.", d),
            Ok(svc("shop", "web", 80))
        );
        assert_eq!(
            parse_authority("web.shop.svc:81", d),
            Ok(svc("shop", "web", 81))
        );
        assert_eq!(
            parse_authority("10.96.0.1:443", d),
            Ok(Target::Addr("10.96.0.1:443".parse().unwrap()))
        );
        assert_eq!(
            parse_authority("[fd00::1]:80", d),
            Ok(Target::Addr("[fd00::1]:80".parse().unwrap()))
        );
        for bad in [
            "",
            "example.com:80",
            "web.shop.svc.cluster.local:x",
            "web.svc.cluster.local",
            "Web.shop.svc",
        ] {
            assert!(
                matches!(parse_authority(bad, d), Err(TargetError::Authority { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            parse_authority("web.shop.svc.cluster.local:70000", d),
            Err(TargetError::Port(
                70000,
                "web.shop.svc.cluster.local:70000".into()
            ))
        );
    }

    #[test]
    fn workloads_parse() {
        let want = PodPortKey {
            namespace: "shop".into(),
            pod: "web-1".into(),
            port: 8080,
        };
        assert_eq!(
            parse_workload(r#"{"ns":"shop","pod":"web-1"}"#, 8080),
            Ok(want.clone())
        );
        assert_eq!(parse_workload("shop:web-1", 8080), Ok(want));
        assert!(parse_workload("shop", 80).is_err());
        assert!(parse_workload(r#"{"ns":"shop"}"#, 80).is_err());
        assert!(parse_workload("shop:web", 0).is_err());
        assert!(parse_workload("shop:web", 65536).is_err());
    }
}
