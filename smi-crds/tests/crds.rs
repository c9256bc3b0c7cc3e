//! The generated CRDs: committed YAML must match the types, and every example
//! manifest must validate against the schema of the CRD version it names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use smi_crds::crd;

fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/linkerd-lite-crds/crds")
}

/// Regenerate with `UPDATE_CRDS=1 cargo test -p smi-crds --test crds`.
#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = crds_dir();
    let update = std::env::var_os("UPDATE_CRDS").is_some();
    let mut expected_files = Vec::new();
    for c in crd::all() {
        let name = crd::file_name(&c);
        let yaml = format!(
            "# Generated from the smi-crds types; do not edit.\n# Regenerate: UPDATE_CRDS=1 cargo test -p smi-crds --test crds\n{}",
            crd::to_yaml(&c).unwrap()
        );
        let path = dir.join(&name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &yaml).unwrap();
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with UPDATE_CRDS=1", path.display()));
        assert!(
            committed == yaml,
            "{} drifted from the types; regenerate with UPDATE_CRDS=1 cargo test -p smi-crds --test crds",
            path.display()
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present,
        expected_files,
        "stale CRD files in {}",
        dir.display()
    );
}

#[test]
fn committed_crds_pass_kubernetes_validate_strict() {
    let files: Vec<PathBuf> = crd::all()
        .iter()
        .map(|c| crds_dir().join(crd::file_name(c)))
        .collect();
    let out = integration::kubeval::validate_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.matches("passed").count(), files.len(), "{out}");
}

#[test]
fn every_kind_serves_its_versions_with_one_storage_version() {
    let served: Vec<(String, Vec<String>, String)> = crd::all()
        .into_iter()
        .map(|c| {
            let storage = c
                .spec
                .versions
                .iter()
                .find(|v| v.storage)
                .unwrap()
                .name
                .clone();
            assert_eq!(c.spec.versions.iter().filter(|v| v.storage).count(), 1);
            assert!(c.spec.versions.iter().all(|v| v.served));
            (
                c.spec.names.kind,
                c.spec.versions.into_iter().map(|v| v.name).collect(),
                storage,
            )
        })
        .collect();
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        served,
        vec![
            (
                "TrafficSplit".into(),
                v(&["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]),
                "v1alpha4".into()
            ),
            (
                "TrafficTarget".into(),
                v(&["v1alpha1", "v1alpha2", "v1alpha3"]),
                "v1alpha3".into()
            ),
            (
                "HTTPRouteGroup".into(),
                v(&["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]),
                "v1alpha4".into()
            ),
            (
                "TCPRoute".into(),
                v(&["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]),
                "v1alpha4".into()
            ),
            ("UDPRoute".into(), v(&["v1alpha4"]), "v1alpha4".into()),
        ]
    );
    // v1alpha1 weights are int-or-string; later versions are integers.
    let yaml = crd::render_yaml().unwrap();
    assert_eq!(
        yaml.matches("x-kubernetes-int-or-string: true").count(),
        2,
        "split v1alpha1 weight and target v1alpha1 port"
    );
}
