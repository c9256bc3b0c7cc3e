//! Conversion tests on realistic documents.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::index::objects::{PathMatch, ValueMatch};

fn convert(doc: serde_json::Value) -> Result<Option<Object>, ConvertError> {
    from_value(doc, "default")
}

#[test]
fn services_read_ips_ports_and_mesh_annotations() {
    let doc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {
            "mesh.linkerd-lite.io/opaque-ports": "3306, 4000-4002",
            "mesh.linkerd-lite.io/timeout": "1500ms",
            "mesh.linkerd-lite.io/retry": "true",
            "mesh.linkerd-lite.io/failure-accrual-consecutive": "5"}},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    });
    let Some(Object::Service(svc)) = convert(doc).unwrap() else {
        panic!("a service");
    };
    assert_eq!(svc.cluster_ips.len(), 2);
    assert_eq!(svc.ports[0].name.as_deref(), Some("http"));
    assert_eq!(
        svc.opaque_ports.into_iter().collect::<Vec<_>>(),
        vec![3306, 4000, 4001, 4002]
    );
    assert_eq!(svc.timeout, Some(Duration::from_millis(1500)));
    assert!(svc.retryable);
    assert_eq!(svc.failure_accrual, Some(5));
}

#[test]
fn a_bad_annotation_is_ignored_not_fatal() {
    let doc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "annotations": {"mesh.linkerd-lite.io/timeout": "soon"}},
        "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
    });
    let Some(Object::Service(svc)) = convert(doc).unwrap() else {
        panic!("a service");
    };
    assert_eq!(
        svc.namespace, "default",
        "a missing namespace is the default one"
    );
    assert_eq!(svc.timeout, None);
    assert!(svc.cluster_ips.is_empty(), "headless");
}

#[test]
fn slices_without_their_service_label_are_rejected_by_name() {
    let doc = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "orphan", "namespace": "shop"},
        "addressType": "IPv4", "endpoints": []
    });
    let err = convert(doc).unwrap_err().to_string();
    assert!(err.contains("shop/orphan"), "{err}");
    assert!(err.contains("kubernetes.io/service-name"), "{err}");

    let bad_ip = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.300"]}]
    });
    let err = convert(bad_ip).unwrap_err().to_string();
    assert!(err.contains("endpoints[0].addresses"), "{err}");
}

#[test]
fn pods_know_their_identity_owner_and_protocols() {
    let doc = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-5d8f7c9b6-a", "namespace": "shop",
                     "labels": {"pod-template-hash": "5d8f7c9b6"},
                     "annotations": {"mesh.linkerd-lite.io/opaque-ports": "5432"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b6",
                                          "uid": "u", "controller": true}]},
        "spec": {"containers": [
            {"name": "app", "ports": [{"name": "http", "containerPort": 8080}, {"name": "grpc-api", "containerPort": 9090}]},
            {"name": "linkerd-lite-proxy"}]},
        "status": {"podIP": "10.0.0.1"}
    });
    let Some(Object::Pod(pod)) = convert(doc).unwrap() else {
        panic!("a pod");
    };
    assert!(pod.meshed);
    assert_eq!(pod.service_account, "default");
    assert_eq!(pod.owner, Some(("deployment".into(), "web".into())));
    assert_eq!(pod.port_protocols.get(&8080), Some(&AppProtocol::Http1));
    assert_eq!(pod.port_protocols.get(&9090), Some(&AppProtocol::Http2));
    assert!(pod.opaque_ports.contains(&5432));
    assert_eq!(pod.ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn other_kinds_are_not_ours() {
    let doc = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    assert!(convert(doc).unwrap().is_none());
}

fn http_route(spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web-route", "namespace": "shop", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": spec
    })
}

#[test]
fn http_routes_attached_to_services_become_routes() {
    let doc = http_route(json!({
        "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80},
                       {"name": "public-gateway"}],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                         "headers": [{"name": "X-Canary", "value": "yes"}],
                         "queryParams": [{"type": "RegularExpression", "name": "v", "value": "2.*"}],
                         "method": "get"}],
            "backendRefs": [{"name": "web", "port": 80, "weight": 3}, {"name": "web-v2", "port": 80, "weight": 1},
                            {"kind": "ConfigMap", "name": "nope"}],
            "timeouts": {"request": "2s"}
        }]
    }));
    let Some(Object::HttpRoute(route)) = convert(doc).unwrap() else {
        panic!("a route");
    };
    assert_eq!(route.parents.len(), 1, "the Gateway parent is not ours");
    assert_eq!(route.parents[0].port, Some(80));
    let rule = &route.rules[0];
    assert_eq!(rule.matches[0].path, Some(PathMatch::Prefix("/api".into())));
    assert_eq!(rule.matches[0].method.as_deref(), Some("GET"));
    assert_eq!(
        rule.matches[0].headers,
        vec![("x-canary".into(), ValueMatch::Exact("yes".into()))]
    );
    assert_eq!(
        rule.matches[0].query_params,
        vec![("v".into(), ValueMatch::Regex("2.*".into()))]
    );
    let weights: Vec<_> = rule
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight_milli))
        .collect();
    assert_eq!(weights, vec![("web", 750), ("web-v2", 250)]);
    assert_eq!(rule.timeout, Some(Duration::from_secs(2)));
}

#[test]
fn gateway_only_routes_are_ignored_and_bad_ones_name_their_field() {
    let gateway_only = http_route(json!({"parentRefs": [{"name": "public-gateway"}], "rules": []}));
    assert!(convert(gateway_only).unwrap().is_none());

    let bad = http_route(json!({
        "parentRefs": [{"kind": "Service", "group": "core", "name": "web"}],
        "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "/api/("}}]}]
    }));
    let err = convert(bad).unwrap_err().to_string();
    assert!(err.contains("shop/web-route"), "{err}");
    assert!(err.contains("spec.rules[0].matches[0].path.value"), "{err}");

    let bad_timeout = http_route(json!({
        "parentRefs": [{"kind": "Service", "name": "web"}],
        "rules": [{"timeouts": {"request": "forever"}}]
    }));
    let err = convert(bad_timeout).unwrap_err().to_string();
    assert!(err.contains("timeouts.request"), "{err}");
}

#[test]
fn invalid_smi_objects_are_errors_naming_them() {
    let doc = json!({
        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"service": "web", "backends": [{"service": "web", "weight": -5}]}
    });
    let err = convert(doc).unwrap_err().to_string();
    assert!(err.contains("shop/broken"), "{err}");
}
