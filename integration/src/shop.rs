//! The whole mesh, the way it runs in a cluster, for the end-to-end tests and the
//! local demo: "pods" are network namespaces, the init step installs the real
//! iptables redirect, proxies run as UID 2102, and the destination and identity
//! services run as real processes in local mode, reading the [`demo`] YAML from a
//! directory. As in a cluster, identity requires TLS and each proxy verifies the
//! service's name, and each proxy watches its pod's inbound policy.
//!
//! [`Shop::start`] builds a control-plane pod, a client pod and two `web` pods (v1 and
//! v2) behind a TrafficSplit; [`Shop::call_web`] calls the `web` Service's cluster IP
//! from the client pod, through both proxies, over mTLS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use smi_crds::mesh::{PROXY_ENV_PREFIX, PROXY_UID, WorkloadIdentity};

use crate::demo::{self, DemoPod};
use crate::netns::{Lab, Pod};
use crate::process::{Proc, binary};

const CLIENT_TOKEN: &str = "token-client-4b1f";
const WEB_TOKEN: &str = "token-web-93ce";
const CLIENT: &str = "client-5f8d";
const WEB_V1: &str = "web-v1-6c9b";
const WEB_V2: &str = "web-v2-7a1e";

/// One response seen by the client: status, the version that answered, and the
/// client identity the server's proxy vouched for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u64,
    /// `v1` or `v2`.
    pub version: String,
    /// The `l5d-client-id` the application saw.
    pub client_id: String,
}

/// The running demo mesh. Everything stops, and the namespaces go, when it is dropped.
#[derive(Debug)]
pub struct Shop {
    // Field order is drop order: processes stop before their namespaces go.
    procs: Vec<Proc>,
    /// The client pod.
    pub client: Pod,
    /// The control-plane pod.
    pub ctrl: Pod,
    /// The web pods, v1 then v2.
    pub web: [Pod; 2],
    manifests: PathBuf,
    _lab: Lab,
    _dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The name the identity service presents with its default service account, control
/// plane namespace and trust domain (the proxies verify it, as injected ones do).
fn identity_service_name() -> String {
    identity::tls::service_identity(
        identity::DEFAULT_SERVICE_ACCOUNT,
        &identity::service::Names::default(),
    )
    .dns_name()
}

fn wait_ready(pod: &Pod, url: &str, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pod
            .run(&["curl", "-sf", "-o", "/dev/null", "--max-time", "1", url])
            .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} not ready at {url} after {timeout:?}")
}

impl Shop {
    /// Builds the lab and starts everything, with the split at `v1_weight`/`v2_weight`.
    pub fn start(v1_weight: u32, v2_weight: u32) -> anyhow::Result<Self> {
        let mut lab = Lab::new()?;
        let ctrl = lab.pod("ctrl")?;
        let client = lab.pod("client")?;
        let web1 = lab.pod("web1")?;
        let web2 = lab.pod("web2")?;
        let dir = tempfile::tempdir()?;
        let demo_pod = |name: &str, sa: &str, version: &str, pod: &Pod| DemoPod {
            name: name.into(),
            service_account: sa.into(),
            version: version.into(),
            ip: pod.ip,
        };
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests)?;
        for (name, text) in demo::manifests(
            &demo_pod(CLIENT, "client", "", &client),
            &demo_pod(WEB_V1, "web", "v1", &web1),
            &demo_pod(WEB_V2, "web", "v2", &web2),
        ) {
            write(&manifests, &name, &text)?;
        }
        write(
            &manifests,
            "split.yaml",
            &demo::split_yaml(v1_weight, v2_weight),
        )?;

        let mut shop = Self {
            procs: Vec::new(),
            client,
            ctrl,
            web: [web1, web2],
            manifests,
            _lab: lab,
            _dir: dir,
        };
        let anchors = shop.start_control_plane()?;
        for (i, version) in ["v1", "v2"].into_iter().enumerate() {
            let pod = shop.web[i].clone();
            let mut cmd = pod.command(binary("integration", "demo-app"));
            cmd.args(["serve", "--addr", "0.0.0.0:8080", "--version", version]);
            shop.procs.push(Proc::spawn(&format!("app-{version}"), cmd));
            let name = if version == "v1" { WEB_V1 } else { WEB_V2 };
            shop.mesh_pod(&pod, name, "web", WEB_TOKEN, &anchors)?;
        }
        let client = shop.client.clone();
        shop.mesh_pod(&client, CLIENT, "client", CLIENT_TOKEN, &anchors)?;
        Ok(shop)
    }

    /// Starts identity and destination in the control-plane pod; returns the trust
    /// anchors' PEM.
    fn start_control_plane(&mut self) -> anyhow::Result<String> {
        let dir = self._dir.path().to_path_buf();
        let pki = identity::pki::generate(&identity::pki::PkiParams::default())?;
        let anchors = write(&dir, "ca.crt", &pki.trust_anchor_pem)?;
        let issuer_cert = write(&dir, "issuer.crt", &pki.issuer_cert_pem)?;
        let issuer_key = write(&dir, "issuer.key", &pki.issuer_key_pem)?;
        let tokens = write(
            &dir,
            "tokens",
            &format!("{CLIENT_TOKEN} shop/client\n{WEB_TOKEN} shop/web\n"),
        )?;
        let mut cmd = self.ctrl.command(binary("identity", "identity"));
        cmd.arg("--trust-anchors")
            .arg(&anchors)
            .arg("--issuer-cert")
            .arg(&issuer_cert)
            .arg("--issuer-key")
            .arg(&issuer_key)
            .args(["--token-validation", "local", "--tokens-file"])
            .arg(&tokens)
            // As `mesh install` runs it: tokens never cross the network in plaintext.
            .arg("--require-tls")
            .args([
                "--grpc-addr",
                "0.0.0.0:8080",
                "--admin-addr",
                "0.0.0.0:9991",
            ]);
        self.procs.push(Proc::spawn("identity", cmd));
        let mut cmd = self.ctrl.command(binary("destination", "destination"));
        cmd.args(["--source", "files", "--dir"])
            .arg(&self.manifests)
            .args([
                "--grpc-addr",
                "0.0.0.0:8086",
                "--admin-addr",
                "0.0.0.0:9990",
            ]);
        self.procs.push(Proc::spawn("destination", cmd));
        for (port, what) in [(9990, "destination"), (9991, "identity")] {
            let url = format!("http://127.0.0.1:{port}/ready");
            wait_ready(&self.ctrl, &url, what, Duration::from_secs(20))?;
        }
        Ok(pki.trust_anchor_pem)
    }

    /// Installs the iptables redirect in `pod` (named `name` in the YAML), then starts
    /// its proxy as UID 2102, watching its inbound policy as the injector arranges.
    fn mesh_pod(
        &mut self,
        pod: &Pod,
        name: &str,
        sa: &str,
        token: &str,
        anchors: &str,
    ) -> anyhow::Result<()> {
        let proxy_bin = binary("linkerd-lite-proxy", "linkerd-lite-proxy");
        let init = pod
            .command(&proxy_bin)
            .args(["init", "--skip-inbound-ports", "4190,4191"])
            .output()?;
        ensure!(
            init.status.success(),
            "init in {} failed: {}",
            pod.netns,
            String::from_utf8_lossy(&init.stderr)
        );
        let pod_dir = self._dir.path().join(&pod.netns);
        let identity_dir = pod_dir.join("identity");
        std::fs::create_dir_all(&identity_dir)?;
        let chown = std::process::Command::new("chown")
            .arg(format!("{PROXY_UID}:{PROXY_UID}"))
            .arg(&identity_dir)
            .status()?;
        ensure!(chown.success(), "chown {}", identity_dir.display());
        let token_file = write(&pod_dir, "token", token)?;

        let var = |name: &str| format!("{PROXY_ENV_PREFIX}{name}");
        let ctrl = self.ctrl.ip;
        let mut cmd = pod.command_as(PROXY_UID, &proxy_bin);
        cmd.env(var("DESTINATION_ADDR"), format!("{ctrl}:8086"))
            .env(var("IDENTITY_ADDR"), format!("{ctrl}:8080"))
            .env(var("IDENTITY_SVC_NAME"), identity_service_name())
            .env(
                var("IDENTITY_NAME"),
                WorkloadIdentity::new("shop", sa).dns_name(),
            )
            .env(var("IDENTITY_TOKEN_FILE"), &token_file)
            .env(var("IDENTITY_TRUST_ANCHORS"), anchors)
            .env(var("IDENTITY_DIR"), &identity_dir)
            .env(
                var("INBOUND_WORKLOAD"),
                format!("{}:{name}", demo::NAMESPACE),
            )
            .env(var("LOG"), "warn,linkerd_lite_proxy=info");
        self.procs
            .push(Proc::spawn(&format!("proxy-{}", pod.netns), cmd));
        wait_ready(
            pod,
            "http://127.0.0.1:4191/ready",
            &format!("proxy in {}", pod.netns),
            Duration::from_secs(20),
        )
    }

    /// Rewrites the TrafficSplit file, as an operator would edit it.
    pub fn set_split(&self, v1_weight: u32, v2_weight: u32) -> anyhow::Result<()> {
        write(
            &self.manifests,
            "split.yaml",
            &demo::split_yaml(v1_weight, v2_weight),
        )?;
        Ok(())
    }

    /// Writes (or with `None`, removes) an access-policy file, as an operator would
    /// apply or delete TrafficTargets.
    pub fn set_access(&self, yaml: Option<&str>) -> anyhow::Result<()> {
        match yaml {
            Some(yaml) => {
                write(&self.manifests, "access.yaml", yaml)?;
            }
            None => std::fs::remove_file(self.manifests.join("access.yaml"))?,
        }
        Ok(())
    }

    /// The status of one `method` request from the client pod to `path` on `web`'s
    /// cluster IP, sent with curl, with the proxy's error header if it answered.
    pub fn curl_web(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("http://{}:80{path}", demo::WEB_CLUSTER_IP);
        let out = self
            .client
            .command("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "5", "-X", method])
            .args(["-D", "-", "-w", "%{http_code}", &url])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("curl {method} {url} said {text:?}"))?;
        let reason = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("l5d-proxy-error")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        Ok((status, reason))
    }

    /// Sends `count` requests from the client pod to `web`'s cluster IP.
    pub fn call_web(&self, count: usize) -> anyhow::Result<Vec<Answer>> {
        let url = format!("http://{}:80/", demo::WEB_CLUSTER_IP);
        let out = self
            .client
            .command(binary("integration", "demo-app"))
            .args(["get", &url, "--count", &count.to_string()])
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("demo-app said {line:?}"))?;
                Ok(Answer {
                    status: v["status"].as_u64().unwrap_or(0),
                    version: v["body"]["version"].as_str().unwrap_or("").to_string(),
                    client_id: v["body"]["client_id"].as_str().unwrap_or("").to_string(),
                })
            })
            .collect()
    }

    /// A proxy's Prometheus metrics, fetched inside its pod.
    pub fn metrics(&self, pod: &Pod) -> anyhow::Result<String> {
        let out = pod
            .command("curl")
            .args(["-sf", "http://127.0.0.1:4191/metrics"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// How many answers came from `version`.
pub fn share(answers: &[Answer], version: &str) -> usize {
    answers.iter().filter(|a| a.version == version).count()
}
