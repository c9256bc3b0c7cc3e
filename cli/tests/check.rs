//! `mesh check` against a scripted Kubernetes API server replaying recorded responses:
//! a healthy installation, and each failure the checks detect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::apiserver::{self, ApiServer, Pki, read};
use common::{Run, mesh};
use serde_json::Value;

struct Cluster {
    server: ApiServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn healthy() -> Self {
        let server = ApiServer::start();
        apiserver::healthy(&server, &Pki::fixture());
        Self {
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn empty() -> Self {
        let server = ApiServer::start();
        apiserver::empty_cluster(&server);
        Self {
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn check(&self, extra: &[&str]) -> Run {
        let kubeconfig = self.server.kubeconfig(self.dir.path());
        let mut args = vec!["check", "--kubeconfig", kubeconfig.to_str().unwrap()];
        args.extend_from_slice(extra);
        mesh(&args, None)
    }

    fn check_json(&self, extra: &[&str]) -> (Run, Value) {
        let mut args = vec!["-o", "json"];
        args.extend_from_slice(extra);
        let run = self.check(&args);
        let v = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", run.stdout, run.stderr));
        (run, v)
    }
}

/// The line for a check, with its symbol, e.g. `× destination service is ready`.
fn line<'a>(run: &'a Run, description: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.contains(description))
        .unwrap_or_else(|| panic!("no check {description:?} in:\n{}", run.stdout))
}

fn assert_failed(run: &Run, description: &str, message: &str) {
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let l = line(run, description);
    assert!(l.starts_with("×"), "{l}\n{}", run.stdout);
    assert!(
        run.stdout.contains(message),
        "{message:?} not in:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with("Status check results are ×\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn healthy_install_passes_every_check() {
    let c = Cluster::healthy();
    let run = c.check(&["--proxy"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        !run.stdout.contains('×') && !run.stdout.contains('‼'),
        "{}",
        run.stdout
    );
    for expected in [
        "✓ can query the Kubernetes API",
        "✓ is running the minimum Kubernetes API version (1.29)",
        "✓ CRD trafficsplits.split.smi-spec.io serves v1alpha1, v1alpha2, v1alpha3, v1alpha4",
        "✓ linkerd-lite-destination deployment is available",
        "✓ trust anchors are valid for at least 60 days",
        "✓ issuer certificate chains to the trust anchors",
        "✓ destination service is ready",
        "✓ identity service is ready",
        "✓ data plane proxies are ready (2 pods)",
        "✓ data plane proxies use the installed trust anchors",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} missing:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.ends_with("Status check results are ✓\n"));
    // Readiness went through the API server's service proxy.
    assert!(
        c.server
            .seen()
            .contains(&format!("GET {}", apiserver::DEST_READY))
    );
}

#[test]
fn json_output_reports_every_check() {
    let c = Cluster::healthy();
    let (run, v) = c.check_json(&[]);
    assert_eq!(run.code, Some(0));
    assert_eq!(v["success"], true);
    let names: Vec<&str> = v["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["categoryName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kubernetes-api",
            "kubernetes-version",
            "linkerd-lite-crds",
            "linkerd-lite-existence",
            "linkerd-lite-identity",
            "linkerd-lite-control-plane"
        ]
    );

    c.server.route(
        "GET",
        apiserver::IDENTITY_READY,
        503,
        read("service-unavailable.json"),
    );
    let (run, v) = c.check_json(&[]);
    assert_eq!(run.code, Some(1));
    assert_eq!(v["success"], false);
    let failed: Vec<&Value> = v["categories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["checks"].as_array().unwrap())
        .filter(|c| c["result"] == "error")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["description"], "identity service is ready");
    assert!(failed[0]["hint"].as_str().unwrap().contains("logs"));
}

#[test]
fn unreachable_api_fails_early() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = ApiServer::start();
    let kc = server.kubeconfig(dir.path());
    let text = std::fs::read_to_string(&kc)
        .unwrap()
        .replace(&server.addr.port().to_string(), &port.to_string());
    std::fs::write(&kc, text).unwrap();
    let run = mesh(&["check", "--kubeconfig", kc.to_str().unwrap()], None);
    assert_failed(
        &run,
        "can query the Kubernetes API",
        "hint: check that the API server",
    );
    assert_eq!(run.stdout.matches('✓').count(), 1, "{}", run.stdout);

    let run = mesh(&["check", "--kubeconfig", "/nonexistent/kubeconfig"], None);
    assert_failed(
        &run,
        "can initialize the client",
        "cannot read kubeconfig /nonexistent/kubeconfig",
    );
}

#[test]
fn old_kubernetes_is_rejected() {
    let c = Cluster::healthy();
    let old = read("version.json").replace("\"minor\": \"31\"", "\"minor\": \"27\"");
    c.server.route("GET", "/version", 200, old);
    let run = c.check(&[]);
    assert_failed(
        &run,
        "minimum Kubernetes API version (1.29)",
        "the cluster runs Kubernetes 1.27",
    );
}

#[test]
fn missing_crd_and_missing_served_version_fail() {
    let c = Cluster::healthy();
    let crds = apiserver::crd_objects();
    let (name, _) = &crds[0];
    c.server.remove("GET", &apiserver::crd_path(name));
    let run = c.check(&[]);
    assert_failed(
        &run,
        &format!("CRD {name}"),
        &format!("{name} is not installed"),
    );
    assert!(run.stdout.contains("mesh install --crds"), "{}", run.stdout);

    let c = Cluster::healthy();
    let (name, mut crd) = crds[1].clone();
    for v in crd["spec"]["versions"].as_array_mut().unwrap() {
        if v["name"] == "v1alpha1" {
            v["served"] = Value::Bool(false);
        }
    }
    c.server.get(&apiserver::crd_path(&name), &crd);
    let run = c.check(&[]);
    assert_failed(&run, &format!("CRD {name}"), "not served: v1alpha1");
}

#[test]
fn unavailable_deployment_fails() {
    let c = Cluster::healthy();
    let d = read("deployment-identity.json")
        .replace("\"availableReplicas\": 1", "\"availableReplicas\": 0");
    c.server.route(
        "GET",
        "/apis/apps/v1/namespaces/linkerd-lite/deployments/linkerd-lite-identity",
        200,
        d,
    );
    let run = c.check(&[]);
    assert_failed(
        &run,
        "linkerd-lite-identity deployment is available",
        "0 of 1 replicas available",
    );

    c.server.remove(
        "GET",
        "/apis/apps/v1/namespaces/linkerd-lite/deployments/linkerd-lite-destination",
    );
    let run = c.check(&[]);
    assert_failed(
        &run,
        "linkerd-lite-destination deployment is available",
        "deployment linkerd-lite/linkerd-lite-destination does not exist",
    );
}

#[test]
fn missing_namespace_stops_the_control_plane_checks() {
    let c = Cluster::healthy();
    c.server.remove("GET", "/api/v1/namespaces/linkerd-lite");
    let run = c.check(&[]);
    assert_failed(
        &run,
        "control plane namespace exists",
        "namespace linkerd-lite does not exist",
    );
    assert!(
        !run.stdout.contains("deployment is available"),
        "{}",
        run.stdout
    );
}

fn generated(anchor_days: u64, issuer_days: u64, started_days_ago: u64) -> Pki {
    let day = Duration::from_secs(24 * 3600);
    let params = identity::pki::PkiParams {
        anchor_validity: day * u32::try_from(anchor_days).unwrap(),
        issuer_validity: day * u32::try_from(issuer_days).unwrap(),
        not_before: SystemTime::now() - day * u32::try_from(started_days_ago).unwrap(),
        ..identity::pki::PkiParams::default()
    };
    let g = identity::pki::generate(&params).unwrap();
    Pki {
        anchors: g.trust_anchor_pem,
        issuer_crt: g.issuer_cert_pem,
        issuer_key: g.issuer_key_pem,
    }
}

#[test]
fn certificates_expiring_soon_are_warnings() {
    let c = Cluster::healthy();
    let pki = generated(30, 20, 1);
    apiserver::serve_pki(&c.server, &pki);
    let run = c.check(&[]);
    assert_eq!(run.code, Some(0), "warnings alone succeed:\n{}", run.stdout);
    assert!(line(&run, "trust anchors are valid for at least 60 days").starts_with("‼"));
    assert!(line(&run, "issuer certificate is valid for at least 60 days").starts_with("‼"));
    assert!(
        run.stdout.contains("hint: rotate the trust anchor"),
        "{}",
        run.stdout
    );
}

#[test]
fn expired_trust_anchor_and_issuer_fail() {
    let c = Cluster::healthy();
    apiserver::serve_pki(&c.server, &generated(10, 5, 20));
    let run = c.check(&[]);
    assert_failed(&run, "trust anchors are valid", "expired at");
    assert!(line(&run, "issuer certificate chains to the trust anchors").starts_with("×"));
}

#[test]
fn issuer_from_another_anchor_fails() {
    let c = Cluster::healthy();
    let mut pki = Pki::fixture();
    let other = generated(3650, 365, 0);
    pki.issuer_crt = other.issuer_crt;
    pki.issuer_key = other.issuer_key;
    apiserver::serve_pki(&c.server, &pki);
    let run = c.check(&[]);
    assert_failed(
        &run,
        "issuer certificate chains to the trust anchors",
        "is not signed by any trust anchor",
    );

    apiserver::serve_pki(
        &c.server,
        &Pki {
            anchors: "garbage".into(),
            ..Pki::fixture()
        },
    );
    let run = c.check(&[]);
    assert_failed(
        &run,
        "trust anchors are valid",
        "trust anchor bundle is not a PEM certificate bundle",
    );

    c.server.remove(
        "GET",
        "/api/v1/namespaces/linkerd-lite/secrets/linkerd-lite-identity-issuer",
    );
    apiserver::serve_pki(&c.server, &Pki::fixture());
    c.server.remove(
        "GET",
        "/api/v1/namespaces/linkerd-lite/secrets/linkerd-lite-identity-issuer",
    );
    let run = c.check(&[]);
    assert_failed(
        &run,
        "issuer certificate chains",
        "secret linkerd-lite/linkerd-lite-identity-issuer does not exist",
    );
}

#[test]
fn unready_components_fail_through_the_service_proxy() {
    let c = Cluster::healthy();
    c.server.route(
        "GET",
        apiserver::DEST_READY,
        503,
        read("service-unavailable.json"),
    );
    let run = c.check(&[]);
    assert_failed(&run, "destination service is ready", "503");
    assert!(line(&run, "identity service is ready").starts_with("✓"));
}

#[test]
fn proxy_checks_find_unready_old_and_untrusting_proxies() {
    let c = Cluster::healthy();
    let pods = read("pods-meshed.json")
        .replacen("@DIGEST@", &Pki::fixture().digest(), 1)
        .replacen("@DIGEST@", "0000", 1)
        .replacen(
            "{\"name\": \"linkerd-lite-proxy\", \"ready\": true",
            "{\"name\": \"linkerd-lite-proxy\", \"ready\": false",
            1,
        )
        .replacen(
            "\"mesh.linkerd-lite.io/proxy-version\": \"v0.1.0\"",
            "\"mesh.linkerd-lite.io/proxy-version\": \"v0.0.9\"",
            2,
        );
    c.server.route("GET", apiserver::PODS, 200, pods);
    let run = c.check(&["--proxy"]);
    assert_failed(
        &run,
        "data plane proxies are ready (2 pods)",
        "not ready: emojivoto/web-7c9f6d8b5-x2k4q",
    );
    assert!(line(&run, "data plane proxies are on version").starts_with("‼"));
    assert!(
        run.stdout
            .contains("emojivoto/emoji-5d8b7f9c4-p7lmz (v0.0.9)"),
        "{}",
        run.stdout
    );
    assert!(line(&run, "use the installed trust anchors").starts_with("‼"));
}

#[test]
fn pre_checks_pass_on_an_empty_cluster() {
    let c = Cluster::empty();
    let run = c.check(&["--pre"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    for r in [
        "namespaces",
        "customresourcedefinitions",
        "clusterroles",
        "clusterrolebindings",
    ] {
        assert!(line(&run, &format!("can create {r}")).starts_with("✓"));
    }
    assert!(line(&run, "control plane namespace does not already exist").starts_with("✓"));
    let posts = c
        .server
        .seen()
        .iter()
        .filter(|s| s.starts_with("POST"))
        .count();
    assert_eq!(posts, 9, "one access review per resource");
}

#[test]
fn pre_checks_fail_without_permissions_or_with_an_existing_install() {
    let c = Cluster::empty();
    c.server
        .route("POST", apiserver::SSAR, 201, read("ssar-denied.json"));
    let run = c.check(&["--pre"]);
    assert_failed(&run, "can create customresourcedefinitions", "not allowed");

    let c = Cluster::empty();
    c.server.route(
        "GET",
        "/api/v1/namespaces/linkerd-lite",
        200,
        read("namespace.json"),
    );
    let roles = read("clusterroles-empty.json").replace(
        "\"items\": []",
        "\"items\": [{\"metadata\": {\"name\": \"linkerd-lite-destination\"}}]",
    );
    c.server.route("GET", apiserver::CLUSTERROLES, 200, roles);
    let run = c.check(&["--pre"]);
    assert_failed(
        &run,
        "control plane namespace does not already exist",
        "namespace linkerd-lite exists",
    );
    assert_failed(
        &run,
        "no cluster-wide control-plane objects",
        "clusterroles exist: linkerd-lite-destination",
    );
}

#[test]
fn wait_retries_until_the_control_plane_is_ready() {
    let c = Cluster::healthy();
    c.server.route(
        "GET",
        apiserver::DEST_READY,
        503,
        read("service-unavailable.json"),
    );
    let kubeconfig = c.server.kubeconfig(c.dir.path());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args([
            "check",
            "--wait",
            "30s",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the first attempt see the failure, then heal the component.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !c
        .server
        .seen()
        .iter()
        .any(|s| s.ends_with(apiserver::DEST_READY))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mesh never asked for /ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.server.route("GET", apiserver::DEST_READY, 200, "ready\n");
    let run: Run = child.wait_with_output().unwrap().into();
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("checked 2 times"), "{}", run.stderr);
}
