//! The containers, volumes and annotations injection adds to a pod template.

use serde_json::{Value, json};
use smi_crds::mesh::{self, annotations, ports};

use super::{PatchError, PortList, child_map, child_map_in, shape};
use crate::names;

/// The in-memory volume the proxy keeps its private key and certificate in.
const IDENTITY_VOLUME: &str = "linkerd-lite-identity-end-entity";
/// The projected service-account token the proxy presents to the identity service.
const TOKEN_VOLUME: &str = "linkerd-lite-identity-token";
/// A scratch volume for the iptables lock, since the init container's root is read-only.
const XTABLES_VOLUME: &str = "linkerd-lite-init-xtables-lock";

/// Every volume injection adds, for removal.
pub(super) const VOLUME_NAMES: &[&str] = &[IDENTITY_VOLUME, TOKEN_VOLUME, XTABLES_VOLUME];

const IDENTITY_DIR: &str = "/var/run/linkerd-lite/identity/end-entity";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const TOKEN_FILE: &str = "linkerd-lite-identity-token";

/// The proxy's resource requests and limits, as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyResources {
    /// CPU request, e.g. `100m`.
    pub cpu_request: String,
    /// Memory request, e.g. `20Mi`.
    pub memory_request: String,
    /// CPU limit; none by default, since CPU limits throttle latency-sensitive proxies.
    pub cpu_limit: Option<String>,
    /// Memory limit, e.g. `250Mi`.
    pub memory_limit: Option<String>,
}

impl Default for ProxyResources {
    fn default() -> Self {
        Self {
            cpu_request: "100m".into(),
            memory_request: "20Mi".into(),
            cpu_limit: None,
            memory_limit: Some("250Mi".into()),
        }
    }
}

impl ProxyResources {
    fn to_json(&self) -> Value {
        let mut limits = serde_json::Map::new();
        if let Some(cpu) = &self.cpu_limit {
            limits.insert("cpu".into(), cpu.clone().into());
        }
        if let Some(mem) = &self.memory_limit {
            limits.insert("memory".into(), mem.clone().into());
        }
        let mut out = json!({
            "requests": { "cpu": self.cpu_request, "memory": self.memory_request },
        });
        if !limits.is_empty() {
            out["limits"] = Value::Object(limits);
        }
        out
    }
}

/// Everything injection needs to know; built from flags by `mesh inject`.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// The proxy image without tag, e.g. `ghcr.io/linkerd-lite/proxy`.
    pub proxy_image: String,
    /// The proxy version: the image tag and the recorded annotation.
    pub proxy_version: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// The control plane's namespace.
    pub control_plane_ns: String,
    /// The trust domain of workload identities.
    pub trust_domain: String,
    /// The cluster's DNS domain, for control-plane addresses.
    pub cluster_domain: String,
    /// The trust-anchor bundle (PEM) the proxy verifies peers and the control plane with.
    pub trust_anchors_pem: String,
    /// The hex SHA-256 of that bundle, recorded as an annotation.
    pub trust_anchors_digest: String,
    /// Inbound ports the proxy does not intercept.
    pub skip_inbound_ports: PortList,
    /// Outbound ports the proxy does not intercept.
    pub skip_outbound_ports: PortList,
    /// Inbound ports carrying opaque TCP.
    pub opaque_ports: PortList,
    /// The proxy's log filter, e.g. `info` or `warn,linkerd_lite_proxy=debug`.
    pub log_level: String,
    /// The proxy's requests and limits.
    pub resources: ProxyResources,
    /// Add the proxy as a native sidecar (an init container with `restartPolicy: Always`);
    /// otherwise as the first regular container with a start-up guard.
    pub native_sidecar: bool,
}

impl InjectConfig {
    /// This config with the workload's own port annotations merged in.
    pub(super) fn for_workload(&self, template: &Value, object: &str) -> Result<Self, PatchError> {
        let mut cfg = self.clone();
        for (key, list) in [
            (annotations::SKIP_INBOUND_PORTS, &mut cfg.skip_inbound_ports),
            (
                annotations::SKIP_OUTBOUND_PORTS,
                &mut cfg.skip_outbound_ports,
            ),
            (annotations::OPAQUE_PORTS, &mut cfg.opaque_ports),
        ] {
            if let Some(v) = super::annotation(template, key) {
                let extra: PortList = v.parse().map_err(|source| PatchError::PortAnnotation {
                    object: object.to_string(),
                    annotation: key,
                    source,
                })?;
                *list = list.merged(&extra);
            }
        }
        Ok(cfg)
    }

    fn image(&self) -> String {
        format!("{}:{}", self.proxy_image, self.proxy_version)
    }
}

/// Adds the init step, the proxy, its volumes and the annotations to a pod template.
pub(super) fn add(
    template: &mut Value,
    cfg: &InjectConfig,
    object: &str,
    spec_field: &str,
) -> Result<(), PatchError> {
    let meta = child_map(template, "metadata", object, "metadata")?;
    let ann = child_map_in(meta, "annotations", object, "metadata.annotations")?;
    ann.insert(
        annotations::PROXY_VERSION.into(),
        cfg.proxy_version.clone().into(),
    );
    ann.insert(
        annotations::TRUST_ANCHOR_DIGEST.into(),
        cfg.trust_anchors_digest.clone().into(),
    );
    let labels = child_map_in(meta, "labels", object, "metadata.labels")?;
    labels.insert(
        annotations::PROXY_CONTROL_PLANE_NS.into(),
        cfg.control_plane_ns.clone().into(),
    );

    let spec = template
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| shape(object, spec_field, "a mapping"))?;
    let list = |spec: &mut serde_json::Map<String, Value>, key: &str| {
        let field = format!("{spec_field}.{key}");
        let entry = spec.entry(key.to_string()).or_insert_with(|| json!([]));
        if entry.is_null() {
            *entry = json!([]);
        }
        entry
            .as_array_mut()
            .map(std::mem::take)
            .ok_or_else(|| shape(object, &field, "a sequence"))
    };

    let mut inits = list(spec, "initContainers")?;
    inits.insert(0, init_container(cfg));
    if cfg.native_sidecar {
        inits.insert(1, proxy_container(cfg));
    }
    spec.insert("initContainers".into(), Value::Array(inits));
    if !cfg.native_sidecar {
        let mut containers = list(spec, "containers")?;
        containers.insert(0, proxy_container(cfg));
        spec.insert("containers".into(), Value::Array(containers));
    }
    let mut volumes = list(spec, "volumes")?;
    volumes.extend(volumes_json());
    spec.insert("volumes".into(), Value::Array(volumes));
    Ok(())
}

fn init_container(cfg: &InjectConfig) -> Value {
    let always_skipped: PortList = format!("{},{}", ports::PROXY_CONTROL, ports::PROXY_ADMIN)
        .parse()
        .unwrap_or_default();
    let skip_in = always_skipped.merged(&cfg.skip_inbound_ports);
    let mut args = vec![
        "init".to_string(),
        "--inbound-port".into(),
        ports::PROXY_INBOUND.to_string(),
        "--outbound-port".into(),
        ports::PROXY_OUTBOUND.to_string(),
        "--proxy-uid".into(),
        mesh::PROXY_UID.to_string(),
        "--skip-inbound-ports".into(),
        skip_in.to_string(),
    ];
    if !cfg.skip_outbound_ports.is_empty() {
        args.push("--skip-outbound-ports".into());
        args.push(cfg.skip_outbound_ports.to_string());
    }
    json!({
        "name": mesh::INIT_CONTAINER_NAME,
        "image": cfg.image(),
        "imagePullPolicy": cfg.image_pull_policy,
        "args": args,
        "resources": {
            "requests": { "cpu": "10m", "memory": "10Mi" },
            "limits": { "cpu": "100m", "memory": "50Mi" },
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": false,
            "runAsUser": 0,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": [{ "name": XTABLES_VOLUME, "mountPath": "/run" }],
    })
}

fn env(name: &str, value: impl Into<Value>) -> Value {
    json!({ "name": format!("{}{name}", mesh::PROXY_ENV_PREFIX), "value": value.into() })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// The name the identity service presents, computed as the service computes it, for
/// the service account `mesh install` runs it as.
fn identity_service_name(cfg: &InjectConfig) -> String {
    let names = identity::service::Names {
        trust_domain: cfg.trust_domain.clone(),
        control_plane_ns: cfg.control_plane_ns.clone(),
    };
    identity::tls::service_identity(&names::component(names::IDENTITY), &names).dns_name()
}

fn proxy_container(cfg: &InjectConfig) -> Value {
    let ns = &cfg.control_plane_ns;
    let mut envs = vec![
        field_env("_pod_name", "metadata.name"),
        field_env("_pod_ns", "metadata.namespace"),
        field_env("_pod_sa", "spec.serviceAccountName"),
        env("LOG", cfg.log_level.clone()),
        env(
            "DESTINATION_ADDR",
            names::component_addr(
                names::DESTINATION,
                ns,
                &cfg.cluster_domain,
                ports::DESTINATION_GRPC,
            ),
        ),
        env(
            "IDENTITY_ADDR",
            names::component_addr(
                names::IDENTITY,
                ns,
                &cfg.cluster_domain,
                ports::IDENTITY_GRPC,
            ),
        ),
        // The identity service's own identity: the certify channel (which carries
        // the pod's service-account token) is TLS, verified for this name.
        env("IDENTITY_SVC_NAME", identity_service_name(cfg)),
        env(
            "IDENTITY_NAME",
            format!(
                "$(_pod_sa).$(_pod_ns).serviceaccount.identity.{ns}.{}",
                cfg.trust_domain
            ),
        ),
        env("IDENTITY_TOKEN_FILE", format!("{TOKEN_DIR}/{TOKEN_FILE}")),
        env("IDENTITY_TRUST_ANCHORS", cfg.trust_anchors_pem.clone()),
        env("IDENTITY_DIR", IDENTITY_DIR),
        // The pod, so the proxy can watch its inbound policy (TrafficTargets).
        env(
            "INBOUND_WORKLOAD",
            r#"{"ns":"$(_pod_ns)","pod":"$(_pod_name)"}"#,
        ),
        env(
            "INBOUND_LISTEN_ADDR",
            format!("0.0.0.0:{}", ports::PROXY_INBOUND),
        ),
        env(
            "OUTBOUND_LISTEN_ADDR",
            format!("127.0.0.1:{}", ports::PROXY_OUTBOUND),
        ),
        env(
            "ADMIN_LISTEN_ADDR",
            format!("0.0.0.0:{}", ports::PROXY_ADMIN),
        ),
    ];
    if !cfg.opaque_ports.is_empty() {
        envs.push(env("INBOUND_OPAQUE_PORTS", cfg.opaque_ports.to_string()));
    }
    let probe = |path: &str, extra: Value| {
        let mut p = json!({
            "httpGet": { "path": path, "port": ports::PROXY_ADMIN },
        });
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        p
    };
    let mut c = json!({
        "name": mesh::PROXY_CONTAINER_NAME,
        "image": cfg.image(),
        "imagePullPolicy": cfg.image_pull_policy,
        "env": envs,
        "ports": [
            { "name": "mesh-proxy", "containerPort": ports::PROXY_INBOUND },
            { "name": "mesh-admin", "containerPort": ports::PROXY_ADMIN },
        ],
        "livenessProbe": probe("/live", json!({ "periodSeconds": 10, "timeoutSeconds": 1 })),
        "readinessProbe": probe("/ready", json!({ "periodSeconds": 10, "timeoutSeconds": 1 })),
        "startupProbe": probe("/ready", json!({ "periodSeconds": 1, "failureThreshold": 120 })),
        "resources": cfg.resources.to_json(),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": mesh::PROXY_UID,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            { "name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR },
            { "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR },
        ],
    });
    if let Some(obj) = c.as_object_mut() {
        if cfg.native_sidecar {
            // A restartable init container: started before the app and its init
            // containers, and not waited for when a Job's containers finish.
            obj.insert("restartPolicy".into(), "Always".into());
        } else {
            // Kubernetes starts the next container only once this hook returns, so the
            // application never runs before the proxy is ready.
            obj.insert(
                "lifecycle".into(),
                json!({ "postStart": { "exec": { "command": [
                    "/usr/bin/linkerd-lite-proxy", "await-ready", "--timeout", "2m",
                ] } } }),
            );
        }
    }
    c
}

fn volumes_json() -> Vec<Value> {
    vec![
        json!({ "name": IDENTITY_VOLUME, "emptyDir": { "medium": "Memory" } }),
        json!({
            "name": TOKEN_VOLUME,
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": mesh::IDENTITY_TOKEN_AUDIENCE,
                "expirationSeconds": 86400,
                "path": TOKEN_FILE,
            } }] },
        }),
        json!({ "name": XTABLES_VOLUME, "emptyDir": {} }),
    ]
}
