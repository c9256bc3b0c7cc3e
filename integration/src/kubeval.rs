//! Runs PyPI's `kubernetes-validate --strict` over generated manifests.
//!
//! The validator lives in a Python venv at `<workspace>/.venv`. `.ci/run` creates it;
//! when it is missing (a fresh checkout running `cargo test`), the first caller
//! creates it with `python3 -m venv` and pip. `KUBERNETES_VALIDATE` overrides the
//! executable's path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The Kubernetes version manifests are validated against: the oldest we support
/// (native sidecars need 1.29; we state 1.30 as the minimum).
pub const KUBERNETES_VERSION: &str = "1.30";

static BOOTSTRAP: Mutex<()> = Mutex::new(());

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `kubernetes-validate` executable, installing it into the venv if needed.
pub fn executable() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE") {
        return Ok(PathBuf::from(p));
    }
    let venv = workspace_root().join(".venv");
    let exe = venv.join("bin/kubernetes-validate");
    let _guard = BOOTSTRAP.lock().unwrap_or_else(|e| e.into_inner());
    if exe.exists() {
        return Ok(exe);
    }
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "kubernetes-validate"]))?;
    Ok(exe)
}

/// Validates the given files with `--strict`; returns the validator's output on
/// failure.
pub fn validate_files(files: &[PathBuf]) -> Result<String, String> {
    let exe = executable()?;
    let out = Command::new(&exe)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("ERROR") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Validates a YAML stream by writing it to a temporary file first.
pub fn validate_yaml(name: &str, yaml: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("kubeval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, yaml).map_err(|e| format!("{}: {e}", path.display()))?;
    let result = validate_files(std::slice::from_ref(&path));
    let _ = std::fs::remove_file(&path);
    result
}
