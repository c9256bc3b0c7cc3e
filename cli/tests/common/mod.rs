//! Helpers shared by the integration tests: running the real `mesh` binary and the
//! `kubernetes-validate` schema checker.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod apiserver;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The crate's directory.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures").join(rel)
}

/// What a run of `mesh` printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            stdout: String::from_utf8(o.stdout).unwrap(),
            stderr: String::from_utf8(o.stderr).unwrap(),
            code: o.status.code(),
        }
    }
}

/// Runs `mesh` with `args`, feeding `stdin`, with no kubeconfig in reach.
pub fn mesh(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("MESH_IDENTITY_TRUST_ANCHORS_FILE")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn mesh");
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap().into()
}

/// The trust anchors every inject test uses.
pub fn anchors_flag() -> String {
    fixture("pki/trust-anchors.pem").display().to_string()
}

/// `mesh inject` with the test trust anchors.
pub fn inject(extra: &[&str], input: &str, stdin: Option<&str>) -> Run {
    let anchors = anchors_flag();
    let mut args = vec!["inject", "--identity-trust-anchors-file", &anchors];
    args.extend_from_slice(extra);
    args.push(input);
    mesh(&args, stdin)
}

/// The `kubernetes-validate` executable: `$KUBERNETES_VALIDATE`, or the workspace venv.
/// Panics with instructions when neither exists, so a missing validator fails loudly.
pub fn kubernetes_validate() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    let venv = manifest_dir().join("../.venv/bin/kubernetes-validate");
    assert!(
        venv.exists(),
        "kubernetes-validate not found at {} and KUBERNETES_VALIDATE is unset; create it \
         from the workspace root with: python3 -m venv .venv && .venv/bin/pip install \
         kubernetes-validate",
        venv.display()
    );
    venv
}

/// The oldest Kubernetes we support: native sidecars need 1.29.
pub const MIN_KUBERNETES: &str = "1.29.0";

/// Validates a manifest with `kubernetes-validate --strict` against `version`, panicking
/// with its report on failure.
pub fn validate_strict(yaml: &str, name: &str, version: &str) {
    assert!(
        yaml.contains("kind:") || yaml.contains("\"kind\""),
        "nothing to validate in {name}: {yaml:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join(name);
    std::fs::write(path, yaml).unwrap();
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", version])
        .arg(path)
        .output()
        .expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict -k {version} rejected {name}:\n{stdout}\n{stderr}"
    );
}

/// Compares `actual` with the golden file `tests/golden/<rel>`; with `UPDATE_GOLDEN=1`
/// rewrites it instead.
pub fn golden(rel: &str, actual: &str) {
    let path = manifest_dir().join("tests/golden").join(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden {}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .map_or(expected.lines().count().min(actual.lines().count()), |i| i);
        panic!(
            "{} differs from the output at line {}:\n  golden: {:?}\n  actual: {:?}\n\
             (run with UPDATE_GOLDEN=1 to accept the new output)",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first),
        );
    }
}
