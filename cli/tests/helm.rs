//! The Helm charts render the same objects as `mesh install`.
//!
//! No `helm` binary can be installed here, so the control-plane templates are kept to
//! value substitution and simple conditionals and rendered with `gtmpl`, a Go-template
//! engine, plus the five Helm functions they use (`quote`, `b64enc`, `trim`, `indent`,
//! `fail`), implemented below with Helm's semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{fixture, manifest_dir, mesh};
use gtmpl::{Context, FuncError, Template, Value as Tv};
use mesh_cli::manifest::parse_documents;
use serde_json::{Value, json};

fn chart(name: &str) -> PathBuf {
    manifest_dir().join("../helm").join(name)
}

fn to_gtmpl(v: &Value) -> Tv {
    match v {
        Value::Null => Tv::Nil,
        Value::Bool(b) => Tv::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Tv::from(i),
            None => Tv::from(n.as_f64().unwrap()),
        },
        Value::String(s) => Tv::String(s.clone()),
        Value::Array(a) => Tv::Array(a.iter().map(to_gtmpl).collect()),
        Value::Object(o) => Tv::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_gtmpl(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn last_string(args: &[Tv], func: &str) -> Result<String, FuncError> {
    match args.last() {
        Some(Tv::String(s)) => Ok(s.clone()),
        Some(Tv::Nil | Tv::NoValue) => Ok(String::new()),
        Some(other) => Ok(other.to_string()),
        None => Err(FuncError::AtLeastXArgs(func.into(), 1)),
    }
}

fn quote(args: &[Tv]) -> Result<Tv, FuncError> {
    Ok(Tv::String(
        serde_json::to_string(&last_string(args, "quote")?).unwrap(),
    ))
}

fn b64enc(args: &[Tv]) -> Result<Tv, FuncError> {
    let s = last_string(args, "b64enc")?;
    Ok(Tv::String(
        base64::engine::general_purpose::STANDARD.encode(s),
    ))
}

fn trim(args: &[Tv]) -> Result<Tv, FuncError> {
    Ok(Tv::String(last_string(args, "trim")?.trim().to_string()))
}

/// Helm's `indent N s`: N spaces before every line of s.
fn indent(args: &[Tv]) -> Result<Tv, FuncError> {
    let [n, s] = args else {
        return Err(FuncError::ExactlyXArgs("indent".into(), 2));
    };
    let n: usize = n
        .to_string()
        .parse()
        .map_err(|_| FuncError::UnableToConvertFromValue)?;
    let pad = " ".repeat(n);
    let s = match s {
        Tv::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(Tv::String(format!(
        "{pad}{}",
        s.replace('\n', &format!("\n{pad}"))
    )))
}

fn fail(args: &[Tv]) -> Result<Tv, FuncError> {
    Err(FuncError::Generic(last_string(args, "fail")?))
}

/// Renders every template of the control-plane chart with `values` (merged over the
/// chart's values.yaml) into parsed objects.
fn helm_template(values: &Value) -> Result<Vec<Value>, String> {
    let dir = chart("linkerd-lite-control-plane");
    let defaults: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap()).unwrap();
    let mut merged = defaults;
    merge(&mut merged, values.clone());
    let ctx = json!({
        "Values": merged,
        "Release": { "Name": "linkerd-lite", "Namespace": "linkerd-lite" },
        "Chart": { "Name": "linkerd-lite-control-plane" },
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let mut t = Template::default();
        t.add_funcs(&[
            ("quote", quote as gtmpl::Func),
            ("b64enc", b64enc as gtmpl::Func),
            ("trim", trim as gtmpl::Func),
            ("indent", indent as gtmpl::Func),
            ("fail", fail as gtmpl::Func),
        ]);
        t.parse(std::fs::read_to_string(&file).unwrap())
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let text = t
            .render(&Context::from(to_gtmpl(&ctx)))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let name = file.display().to_string();
        out.extend(
            parse_documents(&name, &text)
                .map_err(|e| format!("{e}\n{text}"))?
                .into_iter()
                .map(|d| d.value),
        );
    }
    Ok(out)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn pki_values() -> Value {
    let r = |n: &str| std::fs::read_to_string(fixture(&format!("pki/{n}"))).unwrap();
    json!({
        "identityTrustAnchorsPEM": r("trust-anchors.pem"),
        "identity": { "issuer": { "tls": { "crtPEM": r("issuer.crt"), "keyPEM": r("issuer.key") } } },
    })
}

fn mesh_install(extra: &[&str]) -> Vec<Value> {
    let p = |n: &str| fixture(&format!("pki/{n}")).display().to_string();
    let (a, c, k) = (p("trust-anchors.pem"), p("issuer.crt"), p("issuer.key"));
    let mut args = vec![
        "install",
        "--ignore-cluster",
        "--identity-trust-anchors-file",
        &a,
        "--identity-issuer-certificate-file",
        &c,
        "--identity-issuer-key-file",
        &k,
    ];
    args.extend_from_slice(extra);
    let run = mesh(&args, None);
    assert!(run.success(), "{}", run.stderr);
    parse_documents("install", &run.stdout)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// Objects keyed by kind/namespace/name: Helm orders output by kind itself.
fn by_identity(objects: Vec<Value>) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = objects
        .into_iter()
        .map(|o| {
            let key = format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            );
            (key, o)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn assert_same_objects(helm: Vec<Value>, mesh: Vec<Value>) {
    let (helm, mesh) = (by_identity(helm), by_identity(mesh));
    let hk: Vec<&String> = helm.iter().map(|(k, _)| k).collect();
    let mk: Vec<&String> = mesh.iter().map(|(k, _)| k).collect();
    assert_eq!(
        hk, mk,
        "the chart and mesh install render different objects"
    );
    for ((k, h), (_, m)) in helm.iter().zip(&mesh) {
        assert_eq!(h, m, "{k} differs between the chart and mesh install");
    }
}

#[test]
fn chart_with_default_values_renders_what_mesh_install_does() {
    let helm = helm_template(&pki_values()).unwrap();
    let mesh = mesh_install(&[]);
    assert_eq!(helm.len(), 14);
    assert_same_objects(helm, mesh);
}

#[test]
fn chart_and_mesh_install_agree_on_a_custom_values_file() {
    let custom = json!({
        "image": { "registry": "registry.example.com/mesh", "tag": "v0.2.0-rc.1", "pullPolicy": "Always" },
        "logLevel": "debug",
        "defaultInboundPolicy": "deny",
        "identityTrustDomain": "prod.example",
        "destination": { "replicas": 3, "resources": { "memoryLimit": "1Gi" } },
        "identity": { "replicas": 2 },
        "proxy": { "logLevel": "warn", "opaquePorts": "3306,5432", "skipOutboundPorts": "25" },
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    // The same file, identity material included, serves both: mesh takes those from flags.
    let mut with_pki = custom.clone();
    merge(&mut with_pki, pki_values());
    std::fs::write(&file, serde_saphyr::to_string(&with_pki).unwrap()).unwrap();

    let helm = helm_template(&with_pki).unwrap();
    let mesh = mesh_install(&["--values", file.to_str().unwrap()]);
    let deploy = mesh
        .iter()
        .find(|o| o["metadata"]["name"] == "linkerd-lite-destination" && o["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/mesh/destination:v0.2.0-rc.1"
    );
    assert_same_objects(helm, mesh);
}

#[test]
fn chart_requires_the_identity_values() {
    let err = helm_template(&json!({})).unwrap_err();
    assert!(err.contains("identityTrustAnchorsPEM is required"), "{err}");
    let mut v = pki_values();
    v["identity"]["issuer"]["tls"]["keyPEM"] = json!("");
    let err = helm_template(&v).unwrap_err();
    assert!(
        err.contains("identity.issuer.tls.keyPEM is required"),
        "{err}"
    );
}

#[test]
fn install_namespace_can_be_left_out() {
    let mut v = pki_values();
    v["installNamespace"] = json!(false);
    let helm = helm_template(&v).unwrap();
    assert!(helm.iter().all(|o| o["kind"] != "Namespace"));
    assert_eq!(helm.len(), 13);
}

/// Leaf paths of a values tree, e.g. `destination.resources.cpuRequest`.
fn leaves(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, v) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_documented_used_and_known_to_mesh_install() {
    let dir = chart("linkerd-lite-control-plane");
    let text = std::fs::read_to_string(dir.join("values.yaml")).unwrap();
    // Every leaf key line is preceded by a `# --` comment block.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let is_leaf = !t.starts_with('#') && t.contains(": ") && !t.ends_with(':');
        if is_leaf {
            let documented = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with('#'))
                .any(|l| l.trim_start().starts_with("# --"));
            assert!(
                documented,
                "values.yaml line {}: {line:?} has no `# --` doc",
                i + 1
            );
        }
    }
    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let mut paths = Vec::new();
    leaves(&values, "", &mut paths);
    let templates: String = std::fs::read_dir(dir.join("templates"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for p in &paths {
        assert!(
            templates.contains(&format!(".Values.{p}")),
            "value {p} is never used"
        );
    }
    // mesh install knows every value but the identity material and installNamespace.
    let mesh_defaults = serde_json::to_value(mesh_cli::install::Values::default()).unwrap();
    let mut mesh_paths = Vec::new();
    leaves(&mesh_defaults, "", &mut mesh_paths);
    let helm_only = [
        "installNamespace",
        "identityTrustAnchorsPEM",
        "identity.issuer.tls.crtPEM",
        "identity.issuer.tls.keyPEM",
    ];
    let mut chart_paths: Vec<&String> = paths
        .iter()
        .filter(|p| !helm_only.contains(&p.as_str()))
        .collect();
    chart_paths.sort();
    let mut mesh_sorted: Vec<&String> = mesh_paths.iter().collect();
    mesh_sorted.sort();
    assert_eq!(chart_paths, mesh_sorted);
    // And the defaults agree.
    for p in &mesh_paths {
        let ptr = format!("/{}", p.replace('.', "/"));
        assert_eq!(
            values.pointer(&ptr),
            mesh_defaults.pointer(&ptr),
            "default of {p}"
        );
    }
}

fn read_dir_yaml(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            parse_documents(
                &f.display().to_string(),
                &std::fs::read_to_string(f).unwrap(),
            )
            .unwrap()
            .into_iter()
            .map(|d| d.value)
        })
        .collect()
}

#[test]
fn crds_chart_holds_what_mesh_install_crds_renders() {
    let run = mesh(&["install", "--crds"], None);
    assert!(run.success(), "{}", run.stderr);
    let mesh: Vec<Value> = parse_documents("crds", &run.stdout)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    let chart = read_dir_yaml(&chart("linkerd-lite-crds/crds"));
    assert_eq!(mesh.len(), 5);
    assert_same_objects(chart, mesh);
}
