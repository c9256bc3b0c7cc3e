//! Mesh-wide names: the annotation domain, the proxy's environment prefix, ports and
//! identity names.
//!
//! Every crate takes these from here so that the injector, the proxy and the control
//! plane cannot drift apart. They follow Linkerd's conventions so that existing habits
//! carry over; only the domain and the environment prefix are our own.

use std::fmt;

/// The domain of every annotation and label the mesh reads or writes,
/// e.g. `mesh.linkerd-lite.io/inject: enabled`.
pub const DOMAIN: &str = "mesh.linkerd-lite.io";

/// The prefix of every environment variable the proxy reads, e.g.
/// `LINKERD_LITE_PROXY_DESTINATION_ADDR`.
pub const PROXY_ENV_PREFIX: &str = "LINKERD_LITE_PROXY_";

/// Annotations and labels, all under [`DOMAIN`].
pub mod annotations {
    /// `enabled` or `disabled`, on a namespace or a workload's pod template.
    pub const INJECT: &str = "mesh.linkerd-lite.io/inject";
    /// The proxy version the injector added.
    pub const PROXY_VERSION: &str = "mesh.linkerd-lite.io/proxy-version";
    /// SHA-256 of the trust-anchor bundle the injector configured.
    pub const TRUST_ANCHOR_DIGEST: &str = "mesh.linkerd-lite.io/trust-anchor-sha256";
    /// Comma-separated inbound ports the proxy does not intercept.
    pub const SKIP_INBOUND_PORTS: &str = "mesh.linkerd-lite.io/skip-inbound-ports";
    /// Comma-separated outbound ports the proxy does not intercept.
    pub const SKIP_OUTBOUND_PORTS: &str = "mesh.linkerd-lite.io/skip-outbound-ports";
    /// Comma-separated ports whose traffic is opaque TCP (no protocol detection).
    pub const OPAQUE_PORTS: &str = "mesh.linkerd-lite.io/opaque-ports";
    /// Request timeout for a Service's routes, as a duration such as `2s`.
    pub const TIMEOUT: &str = "mesh.linkerd-lite.io/timeout";
    /// Whether failed requests to a Service's routes may be retried: `true` or `false`.
    pub const RETRYABLE: &str = "mesh.linkerd-lite.io/retry";
    /// Consecutive failures after which an endpoint is taken out of balancing.
    pub const FAILURE_ACCRUAL: &str = "mesh.linkerd-lite.io/failure-accrual-consecutive";
    /// Label on every control-plane object: the control-plane namespace.
    pub const CONTROL_PLANE_NS: &str = "mesh.linkerd-lite.io/control-plane-ns";
    /// Label on control-plane pods: which component (`destination`, `identity`).
    pub const CONTROL_PLANE_COMPONENT: &str = "mesh.linkerd-lite.io/control-plane-component";
    /// Label on meshed pods: the control-plane namespace they belong to.
    pub const PROXY_CONTROL_PLANE_NS: &str = "mesh.linkerd-lite.io/proxy-control-plane-ns";
}

/// The default control-plane namespace.
pub const DEFAULT_CONTROL_PLANE_NS: &str = "linkerd-lite";
/// The default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The audience of the service-account token a proxy presents to the identity service.
pub const IDENTITY_TOKEN_AUDIENCE: &str = "identity.linkerd-lite.io";
/// The name of the proxy container the injector adds; a pod with it is meshed.
pub const PROXY_CONTAINER_NAME: &str = "linkerd-lite-proxy";
/// The name of the init container that installs the iptables redirect.
pub const INIT_CONTAINER_NAME: &str = "linkerd-lite-init";
/// The proxy's UID; its own traffic is never redirected.
pub const PROXY_UID: u32 = 2102;

/// Well-known ports.
pub mod ports {
    /// The proxy's outbound listener (on 127.0.0.1).
    pub const PROXY_OUTBOUND: u16 = 4140;
    /// The proxy's inbound listener.
    pub const PROXY_INBOUND: u16 = 4143;
    /// The proxy's admin server: metrics, readiness, liveness, shutdown.
    pub const PROXY_ADMIN: u16 = 4191;
    /// The proxy's control (tap) port.
    pub const PROXY_CONTROL: u16 = 4190;
    /// The destination service's gRPC port.
    pub const DESTINATION_GRPC: u16 = 8086;
    /// The identity service's gRPC port.
    pub const IDENTITY_GRPC: u16 = 8080;
    /// Every control-plane component's admin port: `/ready`, `/live`, `/metrics`.
    pub const CONTROL_PLANE_ADMIN: u16 = 9990;
}

/// A workload identity: a service account in a namespace, under a control plane and a
/// trust domain.
///
/// Its DNS form is
/// `{sa}.{ns}.serviceaccount.identity.{control-plane-ns}.{trust-domain}` and its SPIFFE
/// form `spiffe://{trust-domain}/ns/{ns}/sa/{sa}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadIdentity {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub service_account: String,
    /// The control plane's namespace.
    pub control_plane_ns: String,
    /// The trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
}

impl WorkloadIdentity {
    /// An identity under the default control-plane namespace and trust domain.
    pub fn new(namespace: impl Into<String>, service_account: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
            control_plane_ns: DEFAULT_CONTROL_PLANE_NS.to_string(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
        }
    }

    /// The DNS name carried as the certificate's DNS SAN and the TLS server name.
    pub fn dns_name(&self) -> String {
        format!(
            "{}.{}.serviceaccount.identity.{}.{}",
            self.service_account, self.namespace, self.control_plane_ns, self.trust_domain
        )
    }

    /// The SPIFFE ID carried as the certificate's URI SAN.
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// Parses a DNS-form identity, checking it sits under the given control plane and
    /// trust domain.
    pub fn parse_dns(
        name: &str,
        control_plane_ns: &str,
        trust_domain: &str,
    ) -> Result<Self, IdentityNameError> {
        let suffix = format!(".serviceaccount.identity.{control_plane_ns}.{trust_domain}");
        let head = name
            .strip_suffix(&suffix)
            .ok_or_else(|| IdentityNameError::WrongSuffix {
                name: name.to_string(),
                suffix: suffix.clone(),
            })?;
        let (sa, ns) = head
            .split_once('.')
            .ok_or_else(|| IdentityNameError::Malformed(name.to_string()))?;
        if !is_dns_label(sa) || !is_dns_label(ns) {
            return Err(IdentityNameError::Malformed(name.to_string()));
        }
        Ok(Self {
            namespace: ns.to_string(),
            service_account: sa.to_string(),
            control_plane_ns: control_plane_ns.to_string(),
            trust_domain: trust_domain.to_string(),
        })
    }
}

impl fmt::Display for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dns_name())
    }
}

/// Why a string is not a workload identity name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityNameError {
    /// The name does not end with this control plane's identity suffix.
    #[error("identity {name:?} does not end with {suffix:?}")]
    WrongSuffix {
        /// The name given.
        name: String,
        /// The suffix expected.
        suffix: String,
    },
    /// The service account or namespace part is not a DNS label.
    #[error(
        "identity {0:?} is not of the form <serviceaccount>.<namespace>.serviceaccount.identity.<control-plane-ns>.<trust-domain>"
    )]
    Malformed(String),
}

/// Whether `s` is an RFC 1123 DNS label, as Kubernetes namespaces and service
/// accounts are.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_follow_linkerd_conventions() {
        let id = WorkloadIdentity::new("shop", "web");
        assert_eq!(
            id.dns_name(),
            "web.shop.serviceaccount.identity.linkerd-lite.cluster.local"
        );
        assert_eq!(id.spiffe_id(), "spiffe://cluster.local/ns/shop/sa/web");
        let parsed = WorkloadIdentity::parse_dns(&id.dns_name(), "linkerd-lite", "cluster.local");
        assert_eq!(parsed, Ok(id));
    }

    #[test]
    fn identity_parse_rejects_foreign_and_malformed_names() {
        assert!(matches!(
            WorkloadIdentity::parse_dns(
                "web.shop.serviceaccount.identity.linkerd.cluster.local",
                "linkerd-lite",
                "cluster.local"
            ),
            Err(IdentityNameError::WrongSuffix { .. })
        ));
        for bad in ["web", "Web.shop", "a.b.c", ".shop", "web."] {
            let name = format!("{bad}.serviceaccount.identity.linkerd-lite.cluster.local");
            assert!(
                WorkloadIdentity::parse_dns(&name, "linkerd-lite", "cluster.local").is_err(),
                "{name} should be rejected"
            );
        }
    }

    #[test]
    fn annotations_share_the_domain() {
        for a in [
            annotations::INJECT,
            annotations::PROXY_VERSION,
            annotations::TRUST_ANCHOR_DIGEST,
            annotations::SKIP_INBOUND_PORTS,
            annotations::SKIP_OUTBOUND_PORTS,
            annotations::OPAQUE_PORTS,
            annotations::TIMEOUT,
            annotations::RETRYABLE,
            annotations::FAILURE_ACCRUAL,
            annotations::CONTROL_PLANE_NS,
            annotations::CONTROL_PLANE_COMPONENT,
            annotations::PROXY_CONTROL_PLANE_NS,
        ] {
            assert_eq!(a.split_once('/').map(|(d, _)| d), Some(DOMAIN), "{a}");
        }
    }
}
