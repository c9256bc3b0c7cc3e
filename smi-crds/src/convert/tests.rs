//! Each invalid input gets its own error, naming the object, version and field.

use serde_json::{Value, json};

use super::*;

fn split(version: &str, spec: Value) -> Value {
    json!({
        "apiVersion": format!("split.smi-spec.io/{version}"),
        "kind": "TrafficSplit",
        "metadata": {"name": "canary", "namespace": "shop"},
        "spec": spec,
    })
}

fn err(doc: &Value) -> ValidationError {
    match from_json(doc) {
        Err(e) => e,
        Ok(o) => panic!("expected an error, converted to {o:?}"),
    }
}

fn backends(weights: Value) -> Value {
    json!({"service": "web", "backends": [
        {"service": "web-v1", "weight": weights[0]},
        {"service": "web-v2", "weight": weights[1]},
    ]})
}

#[test]
fn negative_weights_are_rejected_in_every_version() {
    for (version, w) in [
        ("v1alpha1", json!(-1)),
        ("v1alpha1", json!("-500m")),
        ("v1alpha2", json!(-5)),
        ("v1alpha4", json!(-5)),
    ] {
        let e = err(&split(version, backends(json!([10, w.clone()]))));
        assert!(
            matches!(e.problem, Problem::NegativeWeight(_)),
            "{version} {w}: {e}"
        );
        assert_eq!(e.field, "spec.backends[1].weight");
        assert_eq!(e.object, "shop/canary");
        assert_eq!(e.api_version, format!("split.smi-spec.io/{version}"));
        assert!(e.to_string().starts_with(&format!(
            "TrafficSplit shop/canary (split.smi-spec.io/{version}): spec.backends[1].weight: weight"
        )), "{e}");
    }
}

#[test]
fn unparsable_weights_are_rejected() {
    for w in ["abc", "1.2.3", "5x", "", "1e3"] {
        let e = err(&split("v1alpha1", backends(json!(["1", w]))));
        assert_eq!(e.problem, Problem::UnparsableWeight(w.to_string()), "{w:?}");
    }
    // A string where v1alpha4 wants a whole number is a malformed document.
    let e = err(&split("v1alpha4", backends(json!([1, "900m"]))));
    assert!(matches!(e.problem, Problem::Malformed(_)), "{e}");
}

#[test]
fn quantities_parse_to_milli_units() {
    for (q, milli) in [
        ("1", 1000),
        ("900m", 900),
        ("90", 90_000),
        ("0.5", 500),
        ("1.5k", 1_500_000),
        ("1Ki", 1_024_000),
        ("+3", 3000),
        ("0.0001", 1),
        ("0", 0),
    ] {
        assert_eq!(parse_quantity_milli(q), Ok(milli), "{q}");
    }
}

#[test]
fn a_split_needs_backends_and_a_root() {
    let e = err(&split(
        "v1alpha4",
        json!({"service": "web", "backends": []}),
    ));
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("spec.backends", Problem::EmptyBackends)
    );
    let e = err(&split(
        "v1alpha4",
        json!({"service": "", "backends": [{"service": "a", "weight": 1}]}),
    ));
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("spec.service", Problem::Missing)
    );
    let e = err(&split("v1alpha1", json!({"service": "web"})));
    assert_eq!(
        e.problem,
        Problem::EmptyBackends,
        "absent backends are empty"
    );
}

#[test]
fn backends_in_another_namespace_are_rejected() {
    for reference in ["web-v2.other", "web-v2.other.svc.cluster.local"] {
        let doc = split(
            "v1alpha3",
            json!({"service": "web", "backends": [
                {"service": "web-v1", "weight": 1},
                {"service": reference, "weight": 1},
            ]}),
        );
        let e = err(&doc);
        assert_eq!(e.field, "spec.backends[1].service");
        assert_eq!(
            e.problem,
            Problem::CrossNamespace {
                reference: reference.into(),
                namespace: "other".into()
            }
        );
    }
    let e = err(&split(
        "v1alpha2",
        json!({"service": "web.other", "backends": [{"service": "a", "weight": 1}]}),
    ));
    assert_eq!(e.field, "spec.service");
    // The object's own namespace, written out, is fine.
    let ok = split(
        "v1alpha2",
        json!({"service": "web.shop.svc", "backends": [{"service": "a.shop", "weight": 1}]}),
    );
    assert!(from_json(&ok).is_ok());
}

#[test]
fn duplicate_backends_are_rejected() {
    let doc = split(
        "v1alpha4",
        json!({"service": "web", "backends": [
            {"service": "web-v1", "weight": 1}, {"service": "web-v1.shop", "weight": 2},
        ]}),
    );
    assert_eq!(
        err(&doc).problem,
        Problem::DuplicateBackend("web-v1".into())
    );
}

#[test]
fn unknown_match_kinds_are_rejected() {
    let doc = split(
        "v1alpha4",
        json!({"service": "web",
        "backends": [{"service": "a", "weight": 1}],
        "matches": [{"kind": "HTTPRoute", "name": "x"}]}),
    );
    let e = err(&doc);
    assert_eq!(e.field, "spec.matches[0].kind");
    assert!(matches!(e.problem, Problem::UnknownKind { ref kind, .. } if kind == "HTTPRoute"));

    let target = json!({
        "apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
        "metadata": {"name": "t", "namespace": "shop"},
        "spec": {
            "destination": {"kind": "ServiceAccount", "name": "api"},
            "sources": [{"kind": "Group", "name": "admins"}],
            "rules": [],
        },
    });
    let e = err(&target);
    assert_eq!(e.field, "spec.sources[0].kind");
    let mut target = target;
    target["spec"]["sources"] = json!([{"kind": "ServiceAccount", "name": "web"}]);
    target["spec"]["rules"] = json!([{"kind": "GRPCRoute", "name": "x"}]);
    let e = err(&target);
    assert_eq!(e.field, "spec.rules[0].kind");
    assert!(matches!(e.problem, Problem::UnknownKind { .. }));

    let doc = json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "GRPCRoute", "metadata": {"name": "g"}});
    assert!(matches!(err(&doc).problem, Problem::UnknownKind { .. }));
}

fn route_group(matches: Value) -> Value {
    json!({
        "apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
        "metadata": {"name": "routes", "namespace": "shop"},
        "spec": {"matches": matches},
    })
}

#[test]
fn invalid_regexes_are_rejected() {
    let e = err(&route_group(
        json!([{"name": "bad", "pathRegex": "/api/(unclosed"}]),
    ));
    assert_eq!(e.field, "spec.matches[0].pathRegex");
    assert!(
        matches!(e.problem, Problem::InvalidRegex { ref regex, .. } if regex == "/api/(unclosed")
    );
    assert!(
        e.to_string()
            .contains("HTTPRouteGroup shop/routes (specs.smi-spec.io/v1alpha4)"),
        "{e}"
    );

    let e = err(&route_group(
        json!([{"name": "bad", "headers": {"user-agent": "*Android"}}]),
    ));
    assert_eq!(e.field, "spec.matches[0].headers.user-agent");
    assert!(matches!(e.problem, Problem::InvalidRegex { .. }));
}

#[test]
fn invalid_methods_header_names_and_duplicate_names_are_rejected() {
    let e = err(&route_group(
        json!([{"name": "m", "methods": ["GET", "FETCH"]}]),
    ));
    assert_eq!(
        (e.field.as_str(), e.problem),
        (
            "spec.matches[0].methods[1]",
            Problem::InvalidMethod("FETCH".into())
        )
    );
    let e = err(&route_group(
        json!([{"name": "h", "headers": {"bad header": "x"}}]),
    ));
    assert_eq!(e.problem, Problem::InvalidHeaderName("bad header".into()));
    let e = err(&route_group(json!([{"name": "a"}, {"name": "a"}])));
    assert_eq!(
        (e.field.as_str(), e.problem),
        (
            "spec.matches[1].name",
            Problem::DuplicateMatchName("a".into())
        )
    );
    let e = err(&route_group(
        json!([{"name": "h", "headers": [{"a": "1", "b": "2"}]}]),
    ));
    assert!(
        matches!(e.problem, Problem::Malformed(ref m) if m.contains("exactly one key")),
        "{e}"
    );
}

#[test]
fn ports_must_be_in_range() {
    let doc = json!({
        "apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"matches": {"ports": [5432, 70000]}},
    });
    let e = err(&doc);
    assert_eq!(
        (e.field.as_str(), e.problem),
        (
            "spec.matches.ports[1]",
            Problem::InvalidPort("70000".into())
        )
    );
    let target = json!({
        "apiVersion": "access.smi-spec.io/v1alpha1", "kind": "TrafficTarget",
        "metadata": {"name": "t", "namespace": "shop"},
        "destination": {"kind": "ServiceAccount", "name": "db", "port": "http"},
    });
    assert_eq!(err(&target).field, "destination.port");
}

#[test]
fn destinations_in_another_namespace_are_rejected() {
    let target = json!({
        "apiVersion": "access.smi-spec.io/v1alpha2", "kind": "TrafficTarget",
        "metadata": {"name": "t", "namespace": "shop"},
        "spec": {"destination": {"kind": "ServiceAccount", "name": "db", "namespace": "bank"}},
    });
    let e = err(&target);
    assert_eq!(e.field, "spec.destination.namespace");
    assert!(matches!(e.problem, Problem::CrossNamespace { .. }));
}

#[test]
fn unserved_versions_and_nameless_objects_are_rejected() {
    let e = err(&split("v1beta1", backends(json!([1, 1]))));
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("apiVersion", Problem::UnsupportedVersion)
    );
    let mut doc = split("v1alpha4", backends(json!([1, 1])));
    doc["metadata"] = json!({"namespace": "shop"});
    let e = err(&doc);
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("metadata.name", Problem::Missing)
    );
}

#[test]
fn objects_without_a_namespace_land_in_default() {
    let mut doc = split("v1alpha4", backends(json!([3, 1])));
    doc["metadata"] = json!({"name": "canary"});
    let Some(SmiObject::Split(s)) = from_json(&doc).unwrap() else {
        panic!()
    };
    assert_eq!(s.source.key(), "default/canary");
    assert_eq!(s.backends[0].weight_milli, 750);
}
