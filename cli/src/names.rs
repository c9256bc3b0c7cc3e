//! Names of the control-plane objects, shared by `install`, `inject` and `check` so the
//! three cannot disagree. Mesh-wide names (ports, annotations, the namespace) come from
//! [`smi_crds::mesh`].

/// The destination service's Deployment, Service and ServiceAccount suffix.
pub const DESTINATION: &str = "destination";
/// The identity service's Deployment, Service and ServiceAccount suffix.
pub const IDENTITY: &str = "identity";
/// The ConfigMap holding the trust-anchor bundle, under key [`TRUST_ROOTS_KEY`].
pub const TRUST_ROOTS_CONFIGMAP: &str = "linkerd-lite-identity-trust-roots";
/// The key of the PEM bundle in [`TRUST_ROOTS_CONFIGMAP`].
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// The `kubernetes.io/tls` Secret holding the issuer certificate and key.
pub const ISSUER_SECRET: &str = "linkerd-lite-identity-issuer";
/// The ConfigMap holding the install's values.
pub const CONFIG_CONFIGMAP: &str = "linkerd-lite-config";
/// The name of the admin port on control-plane Services, used for `/ready` through the
/// API server's service proxy.
pub const ADMIN_PORT_NAME: &str = "admin";
/// The name of the gRPC port on control-plane Services.
pub const GRPC_PORT_NAME: &str = "grpc";
/// The default image registry.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/linkerd-lite";
/// The version of this CLI, which is also the default image tag and proxy version.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The name of a control-plane component's objects, e.g. `linkerd-lite-destination`.
pub fn component(name: &str) -> String {
    format!("linkerd-lite-{name}")
}

/// The in-cluster address of a component's gRPC port.
pub fn component_addr(name: &str, namespace: &str, cluster_domain: &str, port: u16) -> String {
    format!(
        "{}.{namespace}.svc.{cluster_domain}:{port}",
        component(name)
    )
}
