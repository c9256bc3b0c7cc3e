//! `mesh inject` and `mesh uninject`, run as real processes over a realistic set of
//! manifests: golden output, idempotence, the uninject round trip, schema validation,
//! and every error case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{MIN_KUBERNETES, fixture, golden, inject, mesh, validate_strict};
use mesh_cli::manifest::parse_documents;
use serde_json::Value;

/// Every manifest under `tests/fixtures/inject`.
const FIXTURES: &[&str] = &[
    "emojivoto.yaml",
    "redis-statefulset.yaml",
    "batch.yaml",
    "pod-with-sidecars.yaml",
    "list.yaml",
    "config.yaml",
    "more-workloads.yaml",
    "node-exporter.json",
];

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("inject/{name}"))).unwrap()
}

fn values(source: &str, text: &str) -> Vec<Value> {
    parse_documents(source, text)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn inject_ok(extra: &[&str], name: &str) -> common::Run {
    let path = fixture(&format!("inject/{name}"));
    let run = inject(extra, path.to_str().unwrap(), None);
    assert!(run.success(), "inject {name} failed: {}", run.stderr);
    run
}

#[test]
fn inject_matches_golden_output() {
    for name in FIXTURES {
        let run = inject_ok(&[], name);
        golden(&format!("inject/{name}.yaml"), &run.stdout);
        golden(&format!("inject/{name}.report"), &run.stderr);
    }
}

#[test]
fn inject_json_output_matches_golden() {
    let run = inject_ok(&["-o", "json"], "node-exporter.json");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["kind"], "DaemonSet");
    golden("inject/node-exporter.json.json", &run.stdout);

    // Several documents come out as one List, which kubectl applies as a whole.
    let run = inject_ok(&["-o", "json"], "batch.yaml");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}

#[test]
fn inject_without_native_sidecars_matches_golden() {
    let run = inject_ok(&["--no-native-sidecar"], "batch.yaml");
    golden("inject/batch.yaml.no-native.yaml", &run.stdout);
    let docs = values("out", &run.stdout);
    let pod = &docs[1]["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["name"], "linkerd-lite-proxy");
    assert!(
        pod["containers"][0]["lifecycle"]["postStart"].is_object(),
        "the proxy must hold back the app until it is ready"
    );
    let inits: Vec<&str> = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, ["linkerd-lite-init"]);
}

#[test]
fn native_sidecar_starts_after_the_redirect_and_before_existing_init_containers() {
    let run = inject_ok(&[], "pod-with-sidecars.yaml");
    let pod = &values("out", &run.stdout)[0];
    let inits: Vec<(&str, Option<&str>)> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["restartPolicy"].as_str()))
        .collect();
    assert_eq!(
        inits,
        [
            ("linkerd-lite-init", None),
            ("linkerd-lite-proxy", Some("Always")),
            ("fetch-config", None),
            ("log-forwarder", Some("Always")),
        ]
    );
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["shipper", "metrics-exporter"]);
}

#[test]
fn proxy_gets_identity_env_token_and_probes() {
    let run = inject_ok(&[], "emojivoto.yaml");
    let web = &values("out", &run.stdout)[4];
    let spec = &web["spec"]["template"]["spec"];
    let proxy = &spec["initContainers"][1];
    let env = |name: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    assert_eq!(
        env("LINKERD_LITE_PROXY_IDENTITY_NAME").as_deref(),
        Some("$(_pod_sa).$(_pod_ns).serviceaccount.identity.linkerd-lite.cluster.local")
    );
    let anchors = std::fs::read_to_string(fixture("pki/trust-anchors.pem")).unwrap();
    assert_eq!(
        env("LINKERD_LITE_PROXY_IDENTITY_TRUST_ANCHORS").as_deref(),
        Some(anchors.as_str())
    );
    let token = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "linkerd-lite-identity-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "identity.linkerd-lite.io"
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(proxy[probe]["httpGet"]["port"], 4191, "{probe}");
    }
    assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
    let digest = identity::pki::trust_anchors_digest(&anchors).unwrap();
    assert_eq!(
        web["spec"]["template"]["metadata"]["annotations"]["mesh.linkerd-lite.io/trust-anchor-sha256"],
        digest.as_str()
    );
    // The init step's capabilities are exactly what iptables needs.
    let init = &spec["initContainers"][0];
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
}

#[test]
fn ignore_and_opaque_ports_come_from_flags_and_annotations() {
    let run = inject_ok(
        &[
            "--skip-inbound-ports",
            "25",
            "--skip-outbound-ports",
            "443,8000-8100",
            "--opaque-ports",
            "4222",
        ],
        "emojivoto.yaml",
    );
    let docs = values("out", &run.stdout);
    let args_of = |doc: &Value| -> Vec<String> {
        doc["spec"]["template"]["spec"]["initContainers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let web = args_of(&docs[4]);
    let after = |args: &[String], flag: &str| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].clone()
    };
    assert_eq!(after(&web, "--skip-inbound-ports"), "4190,4191,25");
    assert_eq!(after(&web, "--skip-outbound-ports"), "443,8000-8100");
    // vote-bot's own annotations are merged after the flags.
    let bot = args_of(&docs[5]);
    assert_eq!(after(&bot, "--skip-outbound-ports"), "443,8000-8100,5432");
    let opaque = docs[5]["spec"]["template"]["spec"]["initContainers"][1]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LINKERD_LITE_PROXY_INBOUND_OPAQUE_PORTS")
        .unwrap()["value"]
        .clone();
    assert_eq!(opaque, "4222,3306,6379");
}

#[test]
fn inject_twice_equals_inject_once() {
    for name in FIXTURES {
        let once = inject_ok(&[], name);
        let twice = inject(&[], "-", Some(&once.stdout));
        assert!(twice.success(), "{name}: {}", twice.stderr);
        assert_eq!(
            once.stdout, twice.stdout,
            "{name}: re-injection changed output"
        );
    }
    // Also across modes: switching to a regular container leaves no native sidecar.
    let native = inject_ok(&[], "batch.yaml");
    let regular = inject(&["--no-native-sidecar"], "-", Some(&native.stdout));
    let direct = inject_ok(&["--no-native-sidecar"], "batch.yaml");
    assert_eq!(regular.stdout, direct.stdout);
}

#[test]
fn uninject_undoes_inject() {
    for name in FIXTURES {
        for mode in [&[][..], &["--no-native-sidecar"][..]] {
            let injected = inject_ok(mode, name);
            let un = mesh(&["uninject", "-"], Some(&injected.stdout));
            assert!(un.success(), "{name}: {}", un.stderr);
            let original = values(name, &fixture_text(name));
            assert_eq!(
                values("uninjected", &un.stdout),
                original,
                "{name} {mode:?}: uninject(inject(x)) != x"
            );
        }
    }
}

#[test]
fn uninject_reports_each_object() {
    let injected = inject_ok(&[], "emojivoto.yaml");
    let un = mesh(&["uninject", "-"], Some(&injected.stdout));
    assert_eq!(
        un.stderr,
        "namespace/emojivoto uninjected\nserviceaccount/emoji skipped (not a workload)\n\
         service/emoji-svc skipped (not a workload)\ndeployment/emoji uninjected\n\
         deployment/web uninjected\ndeployment/vote-bot uninjected\n"
    );
}

#[test]
fn other_kinds_pass_through_byte_for_byte() {
    let text = fixture_text("config.yaml");
    let run = inject_ok(&[], "config.yaml");
    // Nothing in this file is injected, so the output is the input minus the separators'
    // normalisation: every document's text is kept, comments and quoting included.
    assert_eq!(run.stdout, text);
    assert_eq!(
        run.stderr,
        "configmap/cfg skipped (not a workload)\nsecret/db-credentials skipped (not a workload)\n\
         deployment/legacy-batch skipped (injection disabled by annotation)\n"
    );

    let emoji = fixture_text("emojivoto.yaml");
    let out = inject_ok(&[], "emojivoto.yaml").stdout;
    let service = emoji.split("---\n").nth(2).unwrap();
    assert!(
        out.contains(service),
        "the Service must be copied verbatim:\n{service}"
    );
}

#[test]
fn field_order_of_unrelated_fields_is_kept() {
    let out = inject_ok(&[], "emojivoto.yaml").stdout;
    let emoji = &values("out", &out)[3];
    let keys: Vec<&String> = emoji["spec"]["template"]["spec"]["containers"][0]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["env", "image", "name", "ports", "resources"]);
    let spec_keys: Vec<&String> = emoji["spec"]["template"]["spec"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        spec_keys,
        [
            "containers",
            "serviceAccountName",
            "initContainers",
            "volumes"
        ]
    );
}

#[test]
fn directories_and_stdin_are_read() {
    let dir = fixture("inject");
    let run = inject(&[], dir.to_str().unwrap(), None);
    assert!(run.success(), "{}", run.stderr);
    let injected = run
        .stderr
        .lines()
        .filter(|l| l.ends_with(" injected"))
        .count();
    // emojivoto: the namespace and 3 deployments; then the statefulset, the cronjob and
    // job, the pod, the list's deployment, the replicaset and replicationcontroller, and
    // the daemonset.
    assert_eq!(injected, 1 + 3 + 1 + 2 + 1 + 1 + 2 + 1, "{}", run.stderr);

    let stdin = inject(&[], "-", Some(&fixture_text("batch.yaml")));
    assert_eq!(stdin.stdout, inject_ok(&[], "batch.yaml").stdout);
}

#[test]
fn inject_and_uninject_output_passes_strict_schema_validation() {
    for name in FIXTURES {
        for mode in [&[][..], &["--no-native-sidecar"][..]] {
            let run = inject_ok(mode, name);
            validate_strict(&run.stdout, &format!("{name}.yaml"), MIN_KUBERNETES);
        }
    }
    let run = inject_ok(&["-o", "json"], "emojivoto.yaml");
    validate_strict(&run.stdout, "emojivoto.json", MIN_KUBERNETES);
}

// === errors ===

#[test]
fn host_network_is_an_error_and_prints_nothing() {
    let input = fixture_text("batch.yaml").replace(
        "restartPolicy: Never\n",
        "restartPolicy: Never\n      hostNetwork: true\n",
    );
    let run = inject(&[], "-", Some(&input));
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains(
            "<stdin>: document 2: job/migrate-db: spec.template.spec.hostNetwork is true"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn malformed_document_is_reported_with_index_and_line() {
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [b\n  namespace: x\n";
    let run = inject(&[], "-", Some(input));
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "", "no partial output");
    assert!(
        run.stderr
            .contains("<stdin>: document 2 (line 9): illegal placement of ':' indicator"),
        "{}",
        run.stderr
    );

    let run = inject(&[], "-", Some("kind: Pod\n---\n- just\n- a list\n"));
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("document 2 (line 3): a Kubernetes object must be a mapping"),
        "{}",
        run.stderr
    );

    let run = inject(&[], "-", Some("{\"kind\": \"Pod\",\n \"spec\": }\n"));
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("<stdin>: document 1 (line 2)"),
        "{}",
        run.stderr
    );
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers: {}\n      initContainers: 5\n";
    let run = inject(&[], "-", Some(input));
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("deployment/d: field spec.template.spec.initContainers must be a sequence"),
        "{}",
        run.stderr
    );
    let run = inject(
        &[],
        "-",
        Some("kind: Deployment\nmetadata: {name: d}\nspec: {}\n"),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("deployment/d: field spec.template must be a mapping"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_ports_are_rejected_with_their_source() {
    let run = inject(&["--skip-inbound-ports", "80,http"], "-", Some(""));
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--skip-inbound-ports"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("\"http\" is not a port"),
        "{}",
        run.stderr
    );

    let input = fixture_text("more-workloads.yaml").replace("\"9100\"", "\"9100-80\"");
    let run = inject(&[], "-", Some(&input));
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains(
            "replicationcontroller/nginx: annotation mesh.linkerd-lite.io/skip-inbound-ports"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_input_and_missing_trust_anchors_are_explained() {
    let run = inject(&[], "/nonexistent/app.yaml", None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("cannot read /nonexistent/app.yaml"),
        "{}",
        run.stderr
    );

    let run = mesh(
        &["inject", "-"],
        Some("kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n"),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("no --identity-trust-anchors-file given and the cluster is unreachable"),
        "{}",
        run.stderr
    );

    let bogus = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bogus.path(), "not a certificate").unwrap();
    let run = mesh(
        &[
            "inject",
            "--identity-trust-anchors-file",
            bogus.path().to_str().unwrap(),
            "-",
        ],
        Some("kind: Pod\n"),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("invalid trust anchors"),
        "{}",
        run.stderr
    );
}

#[test]
fn trust_anchors_come_from_the_cluster_without_the_flag() {
    let server = common::apiserver::ApiServer::start();
    common::apiserver::serve_pki(&server, &common::apiserver::Pki::fixture());
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let path = fixture("inject/batch.yaml");
    let run = mesh(
        &[
            "inject",
            "--kubeconfig",
            kc.to_str().unwrap(),
            path.to_str().unwrap(),
        ],
        None,
    );
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(run.stdout, inject_ok(&[], "batch.yaml").stdout);
    assert!(
        server.seen().contains(
            &"GET /api/v1/namespaces/linkerd-lite/configmaps/linkerd-lite-identity-trust-roots"
                .to_string()
        )
    );

    // An installed control plane without its trust roots is explained.
    let empty = common::apiserver::ApiServer::start();
    let kc = empty.kubeconfig(dir.path());
    let run = mesh(
        &[
            "inject",
            "--kubeconfig",
            kc.to_str().unwrap(),
            path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("cannot read configmap linkerd-lite/linkerd-lite-identity-trust-roots"),
        "{}",
        run.stderr
    );
}
