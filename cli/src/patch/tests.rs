use serde_json::json;

use super::*;

fn cfg() -> InjectConfig {
    InjectConfig {
        proxy_image: "reg/proxy".into(),
        proxy_version: "v1".into(),
        image_pull_policy: "IfNotPresent".into(),
        control_plane_ns: "linkerd-lite".into(),
        trust_domain: "cluster.local".into(),
        cluster_domain: "cluster.local".into(),
        trust_anchors_pem: "PEM".into(),
        trust_anchors_digest: "abc".into(),
        skip_inbound_ports: PortList::default(),
        skip_outbound_ports: PortList::default(),
        opaque_ports: PortList::default(),
        log_level: "info".into(),
        resources: ProxyResources::default(),
        native_sidecar: true,
    }
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "app", "image": "app:1" }] },
    })
}

#[test]
fn every_workload_kind_is_found() {
    for kind in [
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
    ] {
        assert!(pod_template_path(kind).is_some(), "{kind}");
    }
    for kind in ["Service", "ConfigMap", "Namespace", "List"] {
        assert!(pod_template_path(kind).is_none(), "{kind}");
    }
}

#[test]
fn inject_then_uninject_restores_a_bare_pod() {
    let mut p = pod();
    let reports = inject(&mut p, &cfg()).unwrap();
    assert_eq!(reports[0].to_string(), "pod/p injected");
    assert_eq!(
        p["metadata"]["labels"][annotations::PROXY_CONTROL_PLANE_NS],
        "linkerd-lite"
    );
    assert_eq!(p["spec"]["initContainers"][1]["restartPolicy"], "Always");
    let reports = uninject(&mut p).unwrap();
    assert_eq!(reports[0].outcome, Outcome::Uninjected);
    assert_eq!(p, pod());
}

#[test]
fn uninject_of_a_plain_pod_changes_nothing() {
    let mut p = pod();
    let reports = uninject(&mut p).unwrap();
    assert_eq!(reports[0].outcome, Outcome::Skipped("no proxy".into()));
    assert_eq!(p, pod());
}

#[test]
fn namespaces_get_only_the_annotation() {
    let mut ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } });
    inject(&mut ns, &cfg()).unwrap();
    assert_eq!(
        ns,
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "shop", "annotations": { annotations::INJECT: "enabled" } } })
    );
    let mut disabled = json!({ "kind": "Namespace", "metadata": {
        "name": "x", "annotations": { annotations::INJECT: "disabled" } } });
    let before = disabled.clone();
    let r = inject(&mut disabled, &cfg()).unwrap();
    assert_eq!(disabled, before);
    assert!(matches!(r[0].outcome, Outcome::Skipped(_)));
}

#[test]
fn host_network_names_the_field() {
    let mut p = pod();
    p["spec"]["hostNetwork"] = json!(true);
    let e = inject(&mut p, &cfg()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pod/p: spec.hostNetwork is true; host-network pods cannot be meshed"
    );
}
