//! Realistic manifests of every served SMI version: each parses, converts into the
//! model, equivalent objects in different versions give identical models, and each
//! validates against the JSON schema of its generated CRD version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use smi_crds::convert::{self, SmiObject, ToModel};
use smi_crds::model::{
    HeaderMatch, HttpMatch, RouteKind, RouteRef, RuleRef, ServiceAccountRef, Split, SplitBackend,
};
use smi_crds::{access, crd, specs, split};

fn docs(file: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn convert_all(file: &str) -> Vec<SmiObject> {
    docs(file)
        .iter()
        .map(|d| {
            convert::from_json(d)
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .unwrap_or_else(|| panic!("{file}: not recognised as SMI"))
        })
        .collect()
}

fn splits(file: &str) -> Vec<Split> {
    convert_all(file)
        .into_iter()
        .map(|o| match o {
            SmiObject::Split(s) => s,
            other => panic!("{file}: expected a split, got {other:?}"),
        })
        .collect()
}

/// The model without its source, for comparing versions.
fn shape(s: &Split) -> (String, Vec<SplitBackend>, Vec<RouteRef>) {
    (s.root.clone(), s.backends.clone(), s.matches.clone())
}

#[test]
fn every_split_version_gives_the_same_canary_model() {
    let v1 = splits("split-v1alpha1.yaml");
    let canary = shape(&v1[0]);
    assert_eq!(
        canary,
        (
            "web".to_string(),
            vec![
                SplitBackend {
                    service: "web-v1".into(),
                    weight_milli: 900
                },
                SplitBackend {
                    service: "web-v2".into(),
                    weight_milli: 100
                },
            ],
            vec![],
        )
    );
    assert_eq!(v1[0].source.api_version, "split.smi-spec.io/v1alpha1");
    assert_eq!(
        v1[0].source.created.as_deref(),
        Some("2024-03-01T10:00:00Z")
    );
    for v in ["v1alpha2", "v1alpha3", "v1alpha4"] {
        let s = splits(&format!("split-{v}.yaml"));
        assert_eq!(shape(&s[0]), canary, "{v} canary differs from v1alpha1's");
        assert_eq!(s[0].source.api_version, format!("split.smi-spec.io/{v}"));
        assert_eq!(
            shape(&s[1]),
            (
                "web".to_string(),
                vec![
                    SplitBackend {
                        service: "web-v1".into(),
                        weight_milli: 0
                    },
                    SplitBackend {
                        service: "web-v2".into(),
                        weight_milli: 1000
                    },
                ],
                vec![RouteRef {
                    kind: RouteKind::HttpRouteGroup,
                    name: "insiders".into()
                }],
            ),
            "{v} A/B split"
        );
    }
}

#[test]
fn v1alpha1_quantities_in_every_form() {
    // 1 = 1000m, "90" = 90000m, 100 = 100000m, 0: relative shares of 191000m.
    let s = &splits("split-v1alpha1.yaml")[1];
    let weights: Vec<u32> = s.backends.iter().map(|b| b.weight_milli).collect();
    assert_eq!(weights, vec![5, 471, 524, 0]);
    assert_eq!(weights.iter().sum::<u32>(), 1000);
}

#[test]
fn typed_resources_convert_like_untyped_documents() {
    let d = &docs("split-v1alpha4.yaml")[1];
    let typed: split::v1alpha4::TrafficSplit = serde_json::from_value(d.clone()).unwrap();
    assert_eq!(
        Some(SmiObject::Split(typed.to_model().unwrap())),
        convert::from_json(d).unwrap()
    );
    let d = &docs("target-v1alpha1.yaml")[0];
    let typed: access::v1alpha1::TrafficTarget = serde_json::from_value(d.clone()).unwrap();
    assert_eq!(
        typed.spec.specs.len(),
        1,
        "v1alpha1 fields sit at the top level"
    );
    assert_eq!(
        Some(SmiObject::AccessRule(typed.to_model().unwrap())),
        convert::from_json(d).unwrap()
    );
    let d = &docs("routes-v1alpha2.yaml")[0];
    let typed: specs::v1alpha2::HTTPRouteGroup = serde_json::from_value(d.clone()).unwrap();
    assert_eq!(
        Some(SmiObject::HttpRouteGroup(typed.to_model().unwrap())),
        convert::from_json(d).unwrap()
    );
}

#[test]
fn traffic_targets_of_every_version_convert() {
    let prometheus = ServiceAccountRef {
        namespace: "monitoring".into(),
        name: "prometheus".into(),
    };
    let metrics_rule = RuleRef {
        route: RouteRef {
            kind: RouteKind::HttpRouteGroup,
            name: "api-routes".into(),
        },
        matches: vec!["metrics".into()],
    };
    for file in ["target-v1alpha1.yaml", "target-v1alpha2.yaml"] {
        let SmiObject::AccessRule(rule) = convert_all(file).remove(0) else {
            panic!("{file}")
        };
        assert_eq!(
            rule.destination,
            ServiceAccountRef {
                namespace: "shop".into(),
                name: "api".into()
            }
        );
        assert_eq!(rule.port, Some(8080), "{file}");
        assert_eq!(rule.sources, vec![prometheus.clone()], "{file}");
        assert_eq!(rule.rules, vec![metrics_rule.clone()], "{file}");
    }
    // A string port, and namespaces defaulting to the TrafficTarget's.
    let SmiObject::AccessRule(db) = convert_all("target-v1alpha1.yaml").remove(1) else {
        panic!()
    };
    assert_eq!(db.port, Some(5432));
    assert_eq!(
        db.sources,
        vec![ServiceAccountRef {
            namespace: "shop".into(),
            name: "api".into()
        }]
    );
    assert_eq!(db.rules[0].route.kind, RouteKind::TcpRoute);
    assert!(db.rules[0].matches.is_empty());

    let SmiObject::AccessRule(v3) = convert_all("target-v1alpha3.yaml").remove(0) else {
        panic!()
    };
    assert_eq!(v3.port, None);
    assert_eq!(
        v3.sources[1],
        ServiceAccountRef {
            namespace: "shop".into(),
            name: "payments".into()
        }
    );
    assert_eq!(v3.rules.len(), 2);
    assert_eq!(
        v3.rules[0].matches,
        vec!["api".to_string(), "metrics".to_string()]
    );
}

#[test]
fn both_header_encodings_give_the_same_match() {
    let expected = HttpMatch {
        name: "android-insiders".into(),
        path_regex: Some("/".into()),
        methods: vec!["GET".into(), "HEAD".into()],
        headers: vec![
            HeaderMatch {
                name: "user-agent".into(),
                value_regex: ".*Android.*".into(),
            },
            HeaderMatch {
                name: "cookie".into(),
                value_regex: "^(.*?;)?(type=insider)(;.*)?$".into(),
            },
        ],
    };
    for v in ["v1alpha2", "v1alpha3", "v1alpha4"] {
        let SmiObject::HttpRouteGroup(g) = convert_all(&format!("routes-{v}.yaml")).remove(0)
        else {
            panic!("{v}")
        };
        assert_eq!(g.matches, vec![expected.clone()], "{v}");
    }
    let SmiObject::HttpRouteGroup(g) = convert_all("routes-v1alpha1.yaml").remove(0) else {
        panic!()
    };
    assert_eq!(g.matches[0].methods, vec!["GET".to_string()]);
    assert!(g.matches[1].methods.is_empty(), "`*` means any method");
    assert!(g.matches.iter().all(|m| m.headers.is_empty()));
}

#[test]
fn port_routes_convert() {
    for v in ["v1alpha1", "v1alpha2", "v1alpha3"] {
        let SmiObject::PortRoute(r) = convert_all(&format!("routes-{v}.yaml")).remove(1) else {
            panic!("{v}")
        };
        assert_eq!(
            (r.kind, r.ports.len()),
            (RouteKind::TcpRoute, 0),
            "{v}: all ports"
        );
    }
    let all = convert_all("routes-v1alpha4.yaml");
    let SmiObject::PortRoute(tcp) = &all[1] else {
        panic!()
    };
    assert_eq!(
        (tcp.kind, tcp.ports.clone()),
        (RouteKind::TcpRoute, vec![5432, 6432])
    );
    let SmiObject::PortRoute(udp) = &all[2] else {
        panic!()
    };
    assert_eq!(
        (udp.kind, udp.ports.clone()),
        (RouteKind::UdpRoute, vec![53])
    );
}

#[test]
fn non_smi_documents_are_not_converted() {
    let svc =
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}});
    assert_eq!(convert::from_json(&svc).unwrap(), None);
    let other = serde_json::json!({"kind": "Thing"});
    assert_eq!(convert::from_json(&other).unwrap(), None);
}

// === schema validation against the generated CRDs ===

fn crd_schema(api_version: &str, kind: &str) -> serde_json::Value {
    let (group, version) = api_version.split_once('/').unwrap();
    let c = crd::all()
        .into_iter()
        .find(|c| c.spec.group == group && c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}.{group}"));
    let v = c
        .spec
        .versions
        .into_iter()
        .find(|v| v.name == version)
        .unwrap();
    let schema = v.schema.unwrap().open_api_v3_schema.unwrap();
    serde_json::to_value(schema).unwrap()
}

fn schema_errors(doc: &serde_json::Value) -> Vec<String> {
    let schema = crd_schema(
        doc["apiVersion"].as_str().unwrap(),
        doc["kind"].as_str().unwrap(),
    );
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_fixture_validates_against_its_crd_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        for doc in docs(&name) {
            let errors = schema_errors(&doc);
            assert!(
                errors.is_empty(),
                "{name}: {}: {errors:?}",
                doc["metadata"]["name"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} documents checked");
}

#[test]
fn the_schema_check_rejects_wrong_shapes() {
    let mut doc = docs("split-v1alpha4.yaml").remove(0);
    doc["spec"]["backends"][0]["weight"] = serde_json::json!("900m");
    assert!(
        !schema_errors(&doc).is_empty(),
        "a quantity weight is not a v1alpha4 integer"
    );
    let mut doc = docs("split-v1alpha4.yaml").remove(0);
    doc["spec"].as_object_mut().unwrap().remove("service");
    assert!(!schema_errors(&doc).is_empty(), "spec.service is required");
    let mut doc = docs("target-v1alpha3.yaml").remove(0);
    doc["spec"]["sources"] = serde_json::json!("everyone");
    assert!(!schema_errors(&doc).is_empty(), "sources is a list");
}
