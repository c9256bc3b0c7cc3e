//! Contracts with the other components: the proxy's environment and init arguments that
//! `mesh inject` writes, and the control-plane arguments `mesh install` writes, must be
//! accepted by the real parsers of the proxy, identity and destination binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use clap::Parser as _;
use common::{fixture, inject, mesh};
use mesh_cli::manifest::parse_documents;
use serde_json::Value;
use smi_crds::mesh::WorkloadIdentity;

fn docs(text: &str) -> Vec<Value> {
    parse_documents("out", text)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// Expands `$(VAR)` references the way the kubelet does, from earlier entries.
fn container_env(container: &Value, fields: &HashMap<&str, &str>) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e["value"].as_str() {
            Some(v) => {
                let mut v = v.to_string();
                for (k, val) in &env {
                    v = v.replace(&format!("$({k})"), val);
                }
                v
            }
            None => fields[e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap()].to_string(),
        };
        env.insert(name, value);
    }
    env
}

#[derive(Debug, clap::Parser)]
struct ProxyCli {
    #[command(subcommand)]
    cmd: ProxyCmd,
}

#[derive(Debug, clap::Subcommand)]
enum ProxyCmd {
    Init(linkerd_lite_proxy::init::InitArgs),
}

#[test]
fn injected_proxy_env_is_accepted_by_the_proxy() {
    let path = fixture("inject/emojivoto.yaml");
    let run = inject(&["--opaque-ports", "4222"], path.to_str().unwrap(), None);
    assert!(run.success(), "{}", run.stderr);
    let web = &docs(&run.stdout)[4];
    let proxy = &web["spec"]["template"]["spec"]["initContainers"][1];
    let fields = HashMap::from([
        ("metadata.name", "web-7c9f6d8b5-x2k4q"),
        ("metadata.namespace", "emojivoto"),
        ("spec.serviceAccountName", "web"),
    ]);
    let env = container_env(proxy, &fields);
    let config = linkerd_lite_proxy::env::Config::from_lookup(|k| env.get(k).cloned())
        .expect("the proxy rejects the injected environment");
    let id = config.identity.expect("identity is configured");
    assert_eq!(
        WorkloadIdentity::parse_dns(&id.name, "linkerd-lite", "cluster.local").unwrap(),
        WorkloadIdentity::new("emojivoto", "web")
    );
    assert_eq!(
        id.trust_anchors_pem,
        std::fs::read_to_string(fixture("pki/trust-anchors.pem")).unwrap()
    );
    assert_eq!(config.inbound_addr.port(), 4143);
    assert_eq!(config.outbound_addr.to_string(), "127.0.0.1:4140");
    assert_eq!(config.admin_addr.port(), 4191);
    assert!(config.inbound_opaque_ports.contains(&4222));
    assert_eq!(
        config.destination_addr.as_deref(),
        Some("linkerd-lite-destination.linkerd-lite.svc.cluster.local:8086")
    );
    // Every variable with the proxy's prefix is one the proxy reads.
    let names: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with("LINKERD_LITE_PROXY_"))
        .collect();
    assert_eq!(names.len(), 13, "{names:?}");
    assert_eq!(
        id.svc_name.as_deref(),
        Some(
            "linkerd-lite-identity.linkerd-lite.serviceaccount.identity.linkerd-lite.cluster.local"
        ),
        "the certify channel is TLS, verified for the identity service's name"
    );
    assert_eq!(
        config.inbound_workload.as_deref(),
        Some(r#"{"ns":"emojivoto","pod":"web-7c9f6d8b5-x2k4q"}"#),
        "the proxy can look up its own inbound policy"
    );
}

#[test]
fn init_container_args_are_accepted_by_the_proxy() {
    let path = fixture("inject/emojivoto.yaml");
    let run = inject(
        &[
            "--skip-inbound-ports",
            "25",
            "--skip-outbound-ports",
            "443,8000-8002",
        ],
        path.to_str().unwrap(),
        None,
    );
    let web = &docs(&run.stdout)[4];
    let args: Vec<&str> = web["spec"]["template"]["spec"]["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let cli = ProxyCli::try_parse_from(std::iter::once("linkerd-lite-proxy").chain(args))
        .expect("the proxy rejects the init arguments");
    let ProxyCmd::Init(init) = cli.cmd;
    assert_eq!(init.proxy_uid, 2102);
    assert_eq!((init.inbound_port, init.outbound_port), (4143, 4140));
    assert_eq!(
        init.skip_inbound_ports.into_iter().collect::<Vec<_>>(),
        [25, 4190, 4191]
    );
    assert_eq!(
        init.skip_outbound_ports.into_iter().collect::<Vec<_>>(),
        [443, 8000, 8001, 8002]
    );
}

fn deployment_args<'a>(objects: &'a [Value], name: &str) -> Vec<&'a str> {
    let d = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
        .unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn control_plane_args_are_accepted_by_the_services() {
    let run = mesh(
        &[
            "install",
            "--ignore-cluster",
            "--default-inbound-policy",
            "deny",
        ],
        None,
    );
    assert!(run.success(), "{}", run.stderr);
    let objects = docs(&run.stdout);

    let args = deployment_args(&objects, "linkerd-lite-identity");
    let parsed = identity::args::Args::try_parse_from(std::iter::once("identity").chain(args))
        .expect("identity rejects its arguments");
    assert_eq!(parsed.audience, "identity.linkerd-lite.io");
    assert_eq!(parsed.grpc_addr.port(), 8080);
    assert_eq!(parsed.admin_addr.port(), 9990);
    assert_eq!(
        parsed.trust_anchors.to_str(),
        Some("/var/run/linkerd-lite/identity/trust-roots/ca-bundle.crt")
    );
    assert!(parsed.require_tls, "tokens never travel in plaintext");

    let args = deployment_args(&objects, "linkerd-lite-destination");
    assert!(args.contains(&"--default-policy=deny"));
    destination::args::Args::try_parse_from(std::iter::once("destination").chain(args))
        .expect("destination rejects its arguments");
}

#[test]
fn injected_proxies_expect_the_name_the_installed_identity_service_presents() {
    for extra in [&[][..], &["--identity-trust-domain", "corp.example"][..]] {
        let run = mesh(
            &[&["install", "--ignore-cluster"][..], extra].concat(),
            None,
        );
        assert!(run.success(), "{}", run.stderr);
        let objects = docs(&run.stdout);
        let args = deployment_args(&objects, "linkerd-lite-identity");
        let svc = identity::args::Args::try_parse_from(std::iter::once("identity").chain(args))
            .expect("identity rejects its arguments");
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "linkerd-lite-identity")
            .unwrap();
        assert_eq!(
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
            svc.service_account.as_str(),
            "the service account the flag names is the one it runs as"
        );
        let presented = identity::tls::service_identity(
            &svc.service_account,
            &identity::service::Names {
                trust_domain: svc.trust_domain.clone(),
                control_plane_ns: svc.control_plane_namespace.clone(),
            },
        )
        .dns_name();

        let ns = svc.control_plane_namespace.as_str();
        let path = fixture("inject/emojivoto.yaml");
        let run = inject(
            &[
                "--control-plane-namespace",
                ns,
                "--trust-domain",
                &svc.trust_domain,
            ],
            path.to_str().unwrap(),
            None,
        );
        assert!(run.success(), "{}", run.stderr);
        let web = &docs(&run.stdout)[4];
        let proxy = &web["spec"]["template"]["spec"]["initContainers"][1];
        let fields = HashMap::from([
            ("metadata.name", "web-0"),
            ("metadata.namespace", "emojivoto"),
            ("spec.serviceAccountName", "web"),
        ]);
        let env = container_env(proxy, &fields);
        let config = linkerd_lite_proxy::env::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(
            config.identity.unwrap().svc_name,
            Some(presented),
            "{extra:?}"
        );
    }
}

#[test]
fn destination_cluster_role_grants_exactly_what_the_kubernetes_source_watches() {
    let run = mesh(&["install", "--ignore-cluster"], None);
    assert!(run.success(), "{}", run.stderr);
    let objects = docs(&run.stdout);
    let role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "linkerd-lite-destination")
        .expect("destination ClusterRole");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut rendered: Vec<(Vec<String>, Vec<String>, Vec<String>)> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect();
    let mut needed: Vec<(Vec<String>, Vec<String>, Vec<String>)> =
        destination::source::kubernetes::RBAC_RULES
            .iter()
            .map(|(g, res, verbs)| {
                (
                    vec![g.to_string()],
                    res.iter().map(|s| s.to_string()).collect(),
                    verbs.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
    rendered.sort();
    needed.sort();
    assert_eq!(
        rendered, needed,
        "least privilege: the role must match the watches"
    );
}
