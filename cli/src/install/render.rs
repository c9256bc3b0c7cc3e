//! The control-plane objects, built as JSON in a fixed order so the output is
//! deterministic. The Helm chart's templates render the same objects.

use base64::Engine as _;
use serde_json::{Value, json};
use smi_crds::mesh::{self, annotations, ports};

use super::{IdentityMaterial, Values};
use crate::names;

/// The UID the control-plane containers run as (the proxy has 2102).
pub const CONTROLLER_UID: u32 = 2103;

const TRUST_ROOTS_DIR: &str = "/var/run/linkerd-lite/identity/trust-roots";
const ISSUER_DIR: &str = "/var/run/linkerd-lite/identity/issuer";

/// Every control-plane object, in apply order.
pub fn objects(ns: &str, v: &Values, id: &IdentityMaterial) -> Vec<Value> {
    let mut out = vec![namespace(ns)];
    for c in [names::DESTINATION, names::IDENTITY] {
        out.push(service_account(ns, c, v));
    }
    out.push(cluster_role(ns, names::DESTINATION, v, destination_rules()));
    out.push(cluster_role(ns, names::IDENTITY, v, identity_rules()));
    for c in [names::DESTINATION, names::IDENTITY] {
        out.push(cluster_role_binding(ns, c, v));
    }
    out.push(config(ns, v));
    out.push(trust_roots(ns, v, id));
    out.push(issuer(ns, v, id));
    out.push(service(ns, names::DESTINATION, ports::DESTINATION_GRPC, v));
    out.push(service(ns, names::IDENTITY, ports::IDENTITY_GRPC, v));
    out.push(destination_deployment(ns, v));
    out.push(identity_deployment(ns, v));
    out
}

fn labels(ns: &str, component: Option<&str>, v: &Values) -> Value {
    let mut l = json!({
        "app.kubernetes.io/part-of": "linkerd-lite",
        "app.kubernetes.io/version": v.image.tag,
        annotations::CONTROL_PLANE_NS: ns,
    });
    if let (Some(c), Some(m)) = (component, l.as_object_mut()) {
        m.insert("app.kubernetes.io/name".into(), c.into());
        m.insert(annotations::CONTROL_PLANE_COMPONENT.into(), c.into());
    }
    l
}

fn namespace(ns: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": { annotations::CONTROL_PLANE_NS: ns },
            // The control plane bootstraps identity, so it cannot depend on it.
            "annotations": { annotations::INJECT: "disabled" },
        },
    })
}

fn service_account(ns: &str, c: &str, v: &Values) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": names::component(c),
            "namespace": ns,
            "labels": labels(ns, Some(c), v),
        },
    })
}

/// Exactly what the destination service watches: discovery, the SMI resources and
/// Gateway API routes. Read-only.
fn destination_rules() -> Value {
    let read = json!(["get", "list", "watch"]);
    json!([
        { "apiGroups": [""], "resources": ["services", "pods"], "verbs": read },
        { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read },
        { "apiGroups": ["split.smi-spec.io"], "resources": ["trafficsplits"], "verbs": read },
        { "apiGroups": ["access.smi-spec.io"], "resources": ["traffictargets"], "verbs": read },
        {
            "apiGroups": ["specs.smi-spec.io"],
            "resources": ["httproutegroups", "tcproutes", "udproutes"],
            "verbs": read,
        },
        { "apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": read },
    ])
}

/// The identity service only validates tokens.
fn identity_rules() -> Value {
    json!([
        { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
    ])
}

fn cluster_role_name(ns: &str, c: &str) -> String {
    format!("{ns}-{c}")
}

fn cluster_role(ns: &str, c: &str, v: &Values, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": cluster_role_name(ns, c), "labels": labels(ns, Some(c), v) },
        "rules": rules,
    })
}

fn cluster_role_binding(ns: &str, c: &str, v: &Values) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": cluster_role_name(ns, c), "labels": labels(ns, Some(c), v) },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role_name(ns, c),
        },
        "subjects": [{ "kind": "ServiceAccount", "name": names::component(c), "namespace": ns }],
    })
}

fn config(ns: &str, v: &Values) -> Value {
    let p = &v.proxy;
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": names::CONFIG_CONFIGMAP, "namespace": ns, "labels": labels(ns, None, v) },
        "data": {
            "controlPlaneNamespace": ns,
            "clusterDomain": v.cluster_domain,
            "identityTrustDomain": v.identity_trust_domain,
            "defaultInboundPolicy": v.default_inbound_policy,
            "proxyImage": format!("{}/proxy", v.image.registry),
            "proxyVersion": v.image.tag,
            "proxyLogLevel": p.log_level,
            "proxyCpuRequest": p.resources.cpu_request,
            "proxyMemoryRequest": p.resources.memory_request,
            "proxyMemoryLimit": p.resources.memory_limit,
            "proxySkipInboundPorts": p.skip_inbound_ports,
            "proxySkipOutboundPorts": p.skip_outbound_ports,
            "proxyOpaquePorts": p.opaque_ports,
        },
    })
}

fn trust_roots(ns: &str, v: &Values, id: &IdentityMaterial) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names::TRUST_ROOTS_CONFIGMAP,
            "namespace": ns,
            "labels": labels(ns, Some(names::IDENTITY), v),
        },
        "data": { names::TRUST_ROOTS_KEY: format!("{}\n", id.trust_anchors_pem.trim()) },
    })
}

fn issuer(ns: &str, v: &Values, id: &IdentityMaterial) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": names::ISSUER_SECRET,
            "namespace": ns,
            "labels": labels(ns, Some(names::IDENTITY), v),
        },
        "data": {
            "tls.crt": b64(&id.issuer_cert_pem),
            "tls.key": b64(&id.issuer_key_pem),
        },
    })
}

fn selector(ns: &str, c: &str) -> Value {
    json!({ annotations::CONTROL_PLANE_NS: ns, annotations::CONTROL_PLANE_COMPONENT: c })
}

fn service(ns: &str, c: &str, grpc: u16, v: &Values) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": names::component(c), "namespace": ns, "labels": labels(ns, Some(c), v) },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ns, c),
            "ports": [
                { "name": names::GRPC_PORT_NAME, "port": grpc, "targetPort": grpc, "appProtocol": "grpc" },
                {
                    "name": names::ADMIN_PORT_NAME,
                    "port": ports::CONTROL_PLANE_ADMIN,
                    "targetPort": ports::CONTROL_PLANE_ADMIN,
                },
            ],
        },
    })
}

fn destination_deployment(ns: &str, v: &Values) -> Value {
    let args = vec![
        "--source=kubernetes".to_string(),
        format!("--default-policy={}", v.default_inbound_policy),
        format!("--control-plane-namespace={ns}"),
        format!("--trust-domain={}", v.identity_trust_domain),
        format!("--cluster-domain={}", v.cluster_domain),
        format!("--grpc-addr=0.0.0.0:{}", ports::DESTINATION_GRPC),
        format!("--admin-addr=0.0.0.0:{}", ports::CONTROL_PLANE_ADMIN),
    ];
    deployment(
        ns,
        names::DESTINATION,
        ports::DESTINATION_GRPC,
        args,
        json!([]),
        json!([]),
        v,
    )
}

fn identity_deployment(ns: &str, v: &Values) -> Value {
    let args = vec![
        format!(
            "--trust-anchors={TRUST_ROOTS_DIR}/{}",
            names::TRUST_ROOTS_KEY
        ),
        format!("--issuer-cert={ISSUER_DIR}/tls.crt"),
        format!("--issuer-key={ISSUER_DIR}/tls.key"),
        "--token-validation=kubernetes".to_string(),
        format!("--audience={}", mesh::IDENTITY_TOKEN_AUDIENCE),
        format!("--trust-domain={}", v.identity_trust_domain),
        format!("--control-plane-namespace={ns}"),
        // The name injected proxies expect (`IDENTITY_SVC_NAME`) is built from this
        // service account; TLS is required since Certify carries tokens.
        format!("--service-account={}", names::component(names::IDENTITY)),
        "--require-tls".to_string(),
        format!("--grpc-addr=0.0.0.0:{}", ports::IDENTITY_GRPC),
        format!("--admin-addr=0.0.0.0:{}", ports::CONTROL_PLANE_ADMIN),
    ];
    let mounts = json!([
        { "name": "trust-roots", "mountPath": TRUST_ROOTS_DIR, "readOnly": true },
        { "name": "issuer", "mountPath": ISSUER_DIR, "readOnly": true },
    ]);
    let volumes = json!([
        { "name": "trust-roots", "configMap": { "name": names::TRUST_ROOTS_CONFIGMAP } },
        { "name": "issuer", "secret": { "secretName": names::ISSUER_SECRET } },
    ]);
    deployment(
        ns,
        names::IDENTITY,
        ports::IDENTITY_GRPC,
        args,
        mounts,
        volumes,
        v,
    )
}

fn deployment(
    ns: &str,
    c: &str,
    grpc: u16,
    args: Vec<String>,
    mounts: Value,
    volumes: Value,
    v: &Values,
) -> Value {
    let settings = if c == names::DESTINATION {
        &v.destination
    } else {
        &v.identity
    };
    let r = &settings.resources;
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": ports::CONTROL_PLANE_ADMIN }, "periodSeconds": 10 });
    let mut container = json!({
        "name": c,
        "image": format!("{}/{c}:{}", v.image.registry, v.image.tag),
        "imagePullPolicy": v.image.pull_policy,
        "args": args,
        "env": [{ "name": "RUST_LOG", "value": v.log_level }],
        "ports": [
            { "name": names::GRPC_PORT_NAME, "containerPort": grpc },
            { "name": names::ADMIN_PORT_NAME, "containerPort": ports::CONTROL_PLANE_ADMIN },
        ],
        "livenessProbe": probe("/live"),
        "readinessProbe": probe("/ready"),
        "resources": {
            "requests": { "cpu": r.cpu_request, "memory": r.memory_request },
            "limits": { "memory": r.memory_limit },
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": CONTROLLER_UID,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    });
    let mut pod_spec = json!({
        "serviceAccountName": names::component(c),
        "nodeSelector": { "kubernetes.io/os": "linux" },
        "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
    });
    if mounts.as_array().is_some_and(|m| !m.is_empty()) {
        container["volumeMounts"] = mounts;
        pod_spec["volumes"] = volumes;
    }
    pod_spec["containers"] = json!([container]);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": names::component(c), "namespace": ns, "labels": labels(ns, Some(c), v) },
        "spec": {
            "replicas": settings.replicas,
            "selector": { "matchLabels": selector(ns, c) },
            "template": {
                "metadata": {
                    "labels": labels(ns, Some(c), v),
                    "annotations": { annotations::INJECT: "disabled" },
                },
                "spec": pod_spec,
            },
        },
    })
}
