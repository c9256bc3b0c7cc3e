//! The whole mesh, end to end, the way it runs in a cluster: "pods" are network
//! namespaces, the init step installs the real iptables redirect, proxies run as UID
//! 2102, and the destination and identity services run as real processes in local
//! mode, reading the same Kubernetes YAML from a directory.
//!
//! A client pod calls the `web` Service's cluster IP; its proxy intercepts the call,
//! asks the destination service where to send it, and sends it over mTLS to a web
//! pod, whose proxy verifies the client and tells the application who called. A
//! TrafficSplit canary then moves traffic between the two web versions.
//!
//! Needs root (CI runs as root), iproute2 and iptables.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration::demo::{self, DemoPod};
use integration::netns::{Lab, Pod};
use integration::process::{Proc, binary};
use smi_crds::mesh::{PROXY_UID, WorkloadIdentity};

const CLIENT_TOKEN: &str = "token-client-4b1f";
const WEB_TOKEN: &str = "token-web-93ce";

struct ControlPlane {
    _destination: Proc,
    _identity: Proc,
    manifests: PathBuf,
    anchors_pem: String,
    ip: Ipv4Addr,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn control_plane(pod: &Pod, dir: &Path, manifests: Vec<(String, String)>) -> ControlPlane {
    let pki = identity::pki::generate(&identity::pki::PkiParams::default()).expect("pki");
    let anchors = write(dir, "ca.crt", &pki.trust_anchor_pem);
    let issuer_cert = write(dir, "issuer.crt", &pki.issuer_cert_pem);
    let issuer_key = write(dir, "issuer.key", &pki.issuer_key_pem);
    let tokens = write(
        dir,
        "tokens",
        &format!("{CLIENT_TOKEN} shop/client\n{WEB_TOKEN} shop/web\n"),
    );
    let manifest_dir = dir.join("manifests");
    std::fs::create_dir_all(&manifest_dir).expect("manifest dir");
    for (name, text) in manifests {
        write(&manifest_dir, &name, &text);
    }

    let mut cmd = pod.command(binary("identity", "identity"));
    cmd.arg("--trust-anchors")
        .arg(&anchors)
        .arg("--issuer-cert")
        .arg(&issuer_cert)
        .arg("--issuer-key")
        .arg(&issuer_key)
        .args(["--token-validation", "local", "--tokens-file"])
        .arg(&tokens)
        .args([
            "--grpc-addr",
            "0.0.0.0:8080",
            "--admin-addr",
            "0.0.0.0:9991",
        ]);
    let identity = Proc::spawn("identity", cmd);

    let mut cmd = pod.command(binary("destination", "destination"));
    cmd.args(["--source", "files", "--dir"])
        .arg(&manifest_dir)
        .args([
            "--grpc-addr",
            "0.0.0.0:8086",
            "--admin-addr",
            "0.0.0.0:9990",
        ]);
    let destination = Proc::spawn("destination", cmd);

    for port in [9990, 9991] {
        let url = format!("http://127.0.0.1:{port}/ready");
        integration::assert_eventually!(
            pod.run(&["curl", "-sf", "-o", "/dev/null", "--max-time", "1", &url])
                .is_ok(),
            Duration::from_secs(20),
            "control plane not ready on {url}"
        );
    }
    ControlPlane {
        _destination: destination,
        _identity: identity,
        manifests: manifest_dir,
        anchors_pem: pki.trust_anchor_pem,
        ip: pod.ip,
    }
}

/// Installs the iptables redirect, then starts the proxy as UID 2102.
fn mesh_pod(pod: &Pod, cp: &ControlPlane, sa: &str, token: &str, dir: &Path) -> Proc {
    let proxy_bin = binary("linkerd-lite-proxy", "linkerd-lite-proxy");
    let init = pod
        .command(&proxy_bin)
        .args(["init", "--skip-inbound-ports", "4190,4191"])
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let pod_dir = dir.join(&pod.netns);
    let identity_dir = pod_dir.join("identity");
    std::fs::create_dir_all(&identity_dir).expect("identity dir");
    let chown = std::process::Command::new("chown")
        .arg(format!("{PROXY_UID}:{PROXY_UID}"))
        .arg(&identity_dir)
        .status();
    assert!(matches!(chown, Ok(s) if s.success()));
    let token_file = write(&pod_dir, "token", token);

    let prefix = smi_crds::mesh::PROXY_ENV_PREFIX;
    let mut cmd = pod.command_as(PROXY_UID, &proxy_bin);
    cmd.env(
        format!("{prefix}DESTINATION_ADDR"),
        format!("{}:8086", cp.ip),
    )
    .env(format!("{prefix}IDENTITY_ADDR"), format!("{}:8080", cp.ip))
    .env(
        format!("{prefix}IDENTITY_NAME"),
        WorkloadIdentity::new("shop", sa).dns_name(),
    )
    .env(format!("{prefix}IDENTITY_TOKEN_FILE"), &token_file)
    .env(format!("{prefix}IDENTITY_TRUST_ANCHORS"), &cp.anchors_pem)
    .env(format!("{prefix}IDENTITY_DIR"), &identity_dir)
    .env(format!("{prefix}LOG"), "warn,linkerd_lite_proxy=debug");
    let proxy = Proc::spawn(&format!("proxy-{}", pod.netns), cmd);
    integration::assert_eventually!(
        pod.run(&[
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            "--max-time",
            "1",
            "http://127.0.0.1:4191/ready"
        ])
        .is_ok(),
        Duration::from_secs(20),
        "proxy in {} never became ready:\n{}",
        pod.netns,
        proxy.log()
    );
    proxy
}

fn app(pod: &Pod, version: &str) -> Proc {
    let mut cmd = pod.command(binary("integration", "demo-app"));
    cmd.args(["serve", "--addr", "0.0.0.0:8080", "--version", version]);
    Proc::spawn(&format!("app-{version}"), cmd)
}

/// Sends `count` requests from the client pod to the web Service's cluster IP and
/// returns the (status, version, client id) of each.
fn call_web(client: &Pod, count: usize) -> Vec<(u64, String, String)> {
    let url = format!("http://{}:80/", demo::WEB_CLUSTER_IP);
    let out = client
        .command(binary("integration", "demo-app"))
        .args(["get", &url, "--count", &count.to_string()])
        .output()
        .expect("demo-app get");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            (
                v["status"].as_u64().unwrap_or(0),
                v["body"]["version"].as_str().unwrap_or("").to_string(),
                v["body"]["client_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn share(results: &[(u64, String, String)], version: &str) -> usize {
    results.iter().filter(|r| r.1 == version).count()
}

#[test]
#[ignore = "the proxy does not apply TrafficSplit routes yet"]
fn canary_over_mtls_with_real_interception() {
    let mut lab = Lab::new().expect("lab (needs root)");
    let ctrl = lab.pod("ctrl").expect("ctrl pod");
    let client = lab.pod("client").expect("client pod");
    let web1 = lab.pod("web1").expect("web1 pod");
    let web2 = lab.pod("web2").expect("web2 pod");
    let dir = tempfile::tempdir().expect("tempdir");

    let demo_pod = |name: &str, sa: &str, version: &str, ip| DemoPod {
        name: name.into(),
        service_account: sa.into(),
        version: version.into(),
        ip,
    };
    let mut manifests = demo::manifests(
        &demo_pod("client-5f8d", "client", "", client.ip),
        &demo_pod("web-v1-6c9b", "web", "v1", web1.ip),
        &demo_pod("web-v2-7a1e", "web", "v2", web2.ip),
    );
    manifests.push(("split.yaml".into(), demo::split_yaml(1, 0)));
    let cp = control_plane(&ctrl, dir.path(), manifests);

    let _app1 = app(&web1, "v1");
    let _app2 = app(&web2, "v2");
    let _p1 = mesh_pod(&web1, &cp, "web", WEB_TOKEN, dir.path());
    let _p2 = mesh_pod(&web2, &cp, "web", WEB_TOKEN, dir.path());
    let _pc = mesh_pod(&client, &cp, "client", CLIENT_TOKEN, dir.path());

    // All traffic to v1: the split gives v2 a zero weight.
    let client_id = WorkloadIdentity::new("shop", "client").dns_name();
    let results = call_web(&client, 40);
    assert_eq!(results.len(), 40);
    for r in &results {
        assert_eq!(r.0, 200, "{results:?}");
        assert_eq!(r.2, client_id, "the server saw the client's mTLS identity");
    }
    assert_eq!(share(&results, "v1"), 40, "{results:?}");

    // Half and half.
    std::fs::write(cp.manifests.join("split.yaml"), demo::split_yaml(1, 1)).expect("edit split");
    integration::assert_eventually!(
        share(&call_web(&client, 10), "v2") > 0,
        Duration::from_secs(10),
        "the 50/50 split never reached the proxy"
    );
    let results = call_web(&client, 200);
    let (v1, v2) = (share(&results, "v1"), share(&results, "v2"));
    assert_eq!(v1 + v2, 200, "{results:?}");
    assert!(v1 >= 60 && v2 >= 60, "50/50 split gave {v1}/{v2}");

    // Promote the canary: everything to v2.
    std::fs::write(cp.manifests.join("split.yaml"), demo::split_yaml(0, 1)).expect("edit split");
    integration::assert_eventually!(
        share(&call_web(&client, 10), "v1") == 0,
        Duration::from_secs(10),
        "promotion never reached the proxy"
    );
    let results = call_web(&client, 40);
    assert_eq!(share(&results, "v2"), 40, "{results:?}");
}
