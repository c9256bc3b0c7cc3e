//! `mesh install` as a real process: the golden control plane, generated and given
//! identity material, values, schema validation, and the CRD precondition checked against
//! a scripted API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::apiserver::{self, ApiServer};
use common::{MIN_KUBERNETES, Run, fixture, golden, mesh, validate_strict};
use mesh_cli::manifest::parse_documents;
use serde_json::Value;

fn pki_args() -> Vec<String> {
    let p = |n: &str| fixture(&format!("pki/{n}")).display().to_string();
    vec![
        "--identity-trust-anchors-file".into(),
        p("trust-anchors.pem"),
        "--identity-issuer-certificate-file".into(),
        p("issuer.crt"),
        "--identity-issuer-key-file".into(),
        p("issuer.key"),
    ]
}

fn install(extra: &[&str], with_pki: bool) -> Run {
    let mut args: Vec<String> = vec!["install".into(), "--ignore-cluster".into()];
    if with_pki {
        args.extend(pki_args());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    mesh(&refs, None)
}

fn objects(text: &str) -> Vec<Value> {
    parse_documents("install", text)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn install_with_given_identity_is_deterministic_and_matches_golden() {
    let a = install(&[], true);
    assert!(a.success(), "{}", a.stderr);
    let b = install(&[], true);
    assert_eq!(a.stdout, b.stdout);
    golden("install/default.yaml", &a.stdout);
    let kinds: Vec<String> = objects(&a.stdout)
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Service",
            "Service",
            "Deployment",
            "Deployment"
        ]
    );
}

#[test]
fn generated_identity_is_valid_and_the_only_difference_between_runs() {
    let a = install(&[], false);
    assert!(a.success(), "{}", a.stderr);
    let b = install(&[], false);
    let (mut oa, mut ob) = (objects(&a.stdout), objects(&b.stdout));
    let material = |objs: &[Value]| {
        let anchors =
            find(objs, "ConfigMap", "linkerd-lite-identity-trust-roots")["data"]["ca-bundle.crt"]
                .as_str()
                .unwrap()
                .to_string();
        let secret = find(objs, "Secret", "linkerd-lite-identity-issuer");
        let decode = |k: &str| {
            use base64::Engine as _;
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(secret["data"][k].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        (anchors, decode("tls.crt"), decode("tls.key"))
    };
    let (anchors, crt, key) = material(&oa);
    let info = identity::pki::check(&anchors, &crt, &key, SystemTime::now()).unwrap();
    assert!(info.issuer_not_after > SystemTime::now() + Duration::from_secs(300 * 24 * 3600));
    assert!(anchors.contains("BEGIN CERTIFICATE"));
    assert_ne!(
        material(&oa).0,
        material(&ob).0,
        "each install gets its own anchor"
    );
    for objs in [&mut oa, &mut ob] {
        for o in objs.iter_mut() {
            if o["metadata"]["name"] == "linkerd-lite-identity-trust-roots"
                || o["metadata"]["name"] == "linkerd-lite-identity-issuer"
            {
                o["data"] = Value::Null;
            }
        }
    }
    assert_eq!(oa, ob);
}

#[test]
fn install_and_crds_pass_strict_schema_validation() {
    let run = install(&[], true);
    assert!(run.success(), "{}", run.stderr);
    validate_strict(&run.stdout, "install.yaml", MIN_KUBERNETES);
    let run = install(
        &["--replicas", "3", "--set", "proxy.opaquePorts=3306"],
        false,
    );
    assert!(run.success(), "{}", run.stderr);
    validate_strict(&run.stdout, "install-custom.yaml", MIN_KUBERNETES);
    let crds = mesh(&["install", "--crds"], None);
    assert!(crds.success(), "{}", crds.stderr);
    validate_strict(&crds.stdout, "crds.yaml", MIN_KUBERNETES);
}

#[test]
fn control_plane_runs_locked_down_with_least_privilege() {
    let objs = objects(&install(&[], true).stdout);
    for name in ["linkerd-lite-destination", "linkerd-lite-identity"] {
        let d = find(&objs, "Deployment", name);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], 9990, "{name} {probe}");
        }
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
    }
    let identity_role = find(&objs, "ClusterRole", "linkerd-lite-identity");
    assert_eq!(
        identity_role["rules"],
        serde_json::json!([{ "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] }])
    );
    let dest_role = find(&objs, "ClusterRole", "linkerd-lite-destination");
    for rule in dest_role["rules"].as_array().unwrap() {
        assert_eq!(rule["verbs"], serde_json::json!(["get", "list", "watch"]));
    }
}

#[test]
fn flags_and_set_override_values() {
    let run = install(
        &[
            "--registry",
            "registry.example.com/mesh",
            "--image-tag",
            "v9.9.9",
            "--replicas",
            "3",
            "--default-inbound-policy",
            "all-authenticated",
            "--log-level",
            "debug",
            "--set",
            "identity.replicas=2",
            "--set",
            "identity.resources.memoryLimit=1Gi",
        ],
        true,
    );
    assert!(run.success(), "{}", run.stderr);
    let objs = objects(&run.stdout);
    let dest = find(&objs, "Deployment", "linkerd-lite-destination");
    assert_eq!(dest["spec"]["replicas"], 3);
    let c = &dest["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example.com/mesh/destination:v9.9.9");
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .contains(&Value::from("--default-policy=all-authenticated"))
    );
    assert_eq!(c["env"][0]["value"], "debug");
    // --set runs before the flags: --replicas wins over identity.replicas=2.
    let id = find(&objs, "Deployment", "linkerd-lite-identity");
    assert_eq!(id["spec"]["replicas"], 3);
    assert_eq!(
        id["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "1Gi"
    );
}

#[test]
fn bad_values_are_rejected_naming_the_value() {
    let run = install(&["--default-inbound-policy", "allow"], true);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("value defaultInboundPolicy: \"allow\" is not one of"),
        "{}",
        run.stderr
    );
    let run = install(&["--set", "destination.replicaz=2"], true);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("--set destination.replicaz=2: unknown field `replicaz`"),
        "{}",
        run.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("v.yaml");
    std::fs::write(&f, "destination:\n  replicas: [1\n").unwrap();
    let run = install(&["--values", f.to_str().unwrap()], true);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains(&format!("values file {}", f.display())),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn identity_files_must_come_together_and_chain() {
    let anchors = fixture("pki/trust-anchors.pem").display().to_string();
    let run = install(&["--identity-trust-anchors-file", &anchors], false);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("(missing: --identity-issuer-certificate-file, --identity-issuer-key-file)"),
        "{}",
        run.stderr
    );

    // An issuer from another anchor.
    let other = identity::pki::generate(&identity::pki::PkiParams::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = |n: &str, t: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, t).unwrap();
        p.display().to_string()
    };
    let (crt, key) = (
        w("crt", &other.issuer_cert_pem),
        w("key", &other.issuer_key_pem),
    );
    let args = [
        "--identity-trust-anchors-file",
        &anchors,
        "--identity-issuer-certificate-file",
        &crt,
        "--identity-issuer-key-file",
        &key,
    ];
    let run = install(&args, false);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("is not signed by any trust anchor"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");

    // An expired issuer.
    let day = Duration::from_secs(24 * 3600);
    let expired = identity::pki::generate(&identity::pki::PkiParams {
        issuer_validity: day,
        not_before: SystemTime::now() - 3 * day,
        ..identity::pki::PkiParams::default()
    })
    .unwrap();
    let a = w("a", &expired.trust_anchor_pem);
    let c = w("c", &expired.issuer_cert_pem);
    let k = w("k", &expired.issuer_key_pem);
    let run = install(
        &[
            "--identity-trust-anchors-file",
            &a,
            "--identity-issuer-certificate-file",
            &c,
            "--identity-issuer-key-file",
            &k,
        ],
        false,
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("expired at"), "{}", run.stderr);

    let run = install(
        &[
            "--identity-trust-anchors-file",
            "/nonexistent/ca.crt",
            "--identity-issuer-certificate-file",
            &c,
            "--identity-issuer-key-file",
            &k,
        ],
        false,
    );
    assert!(
        run.stderr
            .contains("cannot read --identity-trust-anchors-file /nonexistent/ca.crt"),
        "{}",
        run.stderr
    );
}

#[test]
fn install_refuses_until_the_crds_are_installed() {
    let server = ApiServer::start();
    server.route("GET", "/version", 200, apiserver::read("version.json"));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let mut args = vec![
        "install".to_string(),
        "--kubeconfig".into(),
        kc.display().to_string(),
    ];
    args.extend(pki_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = mesh(&refs, None);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("the linkerd-lite CRDs must be installed first")
            && run
                .stderr
                .contains("mesh install --crds | kubectl apply -f -")
            && run.stderr.contains("trafficsplits.split.smi-spec.io"),
        "{}",
        run.stderr
    );

    for (name, crd) in apiserver::crd_objects() {
        server.get(&apiserver::crd_path(&name), &crd);
    }
    let run = mesh(&refs, None);
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(run.stdout, install(&[], true).stdout);

    // No cluster at all: say how to render anyway.
    let run = mesh(
        &["install", "--kubeconfig", "/nonexistent/kubeconfig"],
        None,
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("--ignore-cluster"), "{}", run.stderr);
}

#[test]
fn values_file_in_chart_format_is_accepted() {
    let values = std::fs::read_to_string(
        common::manifest_dir().join("../helm/linkerd-lite-control-plane/values.yaml"),
    )
    .unwrap()
    .replace("replicas: 1", "replicas: 2");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("values.yaml");
    std::fs::write(&f, values).unwrap();
    let run = install(&["--values", f.to_str().unwrap()], true);
    assert!(run.success(), "{}", run.stderr);
    let objs = objects(&run.stdout);
    assert_eq!(
        find(&objs, "Deployment", "linkerd-lite-identity")["spec"]["replicas"],
        2
    );
}
