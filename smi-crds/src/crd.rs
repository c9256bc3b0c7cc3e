//! CustomResourceDefinitions generated from the typed resources.
//!
//! One CRD per kind serves every version linkerd-lite reads. There is no conversion
//! webhook (`strategy: None`): the API server stores objects in the storage version
//! named below and serves them under any served version by rewriting `apiVersion`
//! only, which is why every version's fields are optional where the spec allows.
//!
//! | kind | served | storage |
//! |---|---|---|
//! | TrafficSplit | v1alpha1–v1alpha4 | v1alpha4 |
//! | TrafficTarget | v1alpha1–v1alpha3 | v1alpha3 |
//! | HTTPRouteGroup | v1alpha1–v1alpha4 | v1alpha4 |
//! | TCPRoute | v1alpha1–v1alpha4 | v1alpha4 |
//! | UDPRoute | v1alpha4 | v1alpha4 |
//!
//! The YAML committed under `helm/linkerd-lite-crds/crds/` is [`render_yaml`]'s output,
//! one file per CRD; a test fails when it drifts from the types.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition,
};
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

use crate::{access, specs, split};

/// Every CRD linkerd-lite needs, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    use specs::{v1alpha1 as s1, v1alpha2 as s2, v1alpha3 as s3, v1alpha4 as s4};
    vec![
        merged(
            vec![
                split::v1alpha1::TrafficSplit::crd(),
                split::v1alpha2::TrafficSplit::crd(),
                split::v1alpha3::TrafficSplit::crd(),
                split::v1alpha4::TrafficSplit::crd(),
            ],
            "v1alpha4",
        ),
        merged(
            vec![
                access::v1alpha1::TrafficTarget::crd(),
                access::v1alpha2::TrafficTarget::crd(),
                access::v1alpha3::TrafficTarget::crd(),
            ],
            "v1alpha3",
        ),
        merged(
            vec![
                s1::HTTPRouteGroup::crd(),
                s2::HTTPRouteGroup::crd(),
                s3::HTTPRouteGroup::crd(),
                s4::HTTPRouteGroup::crd(),
            ],
            "v1alpha4",
        ),
        merged(
            vec![
                s1::TCPRoute::crd(),
                s2::TCPRoute::crd(),
                s3::TCPRoute::crd(),
                s4::TCPRoute::crd(),
            ],
            "v1alpha4",
        ),
        merged(vec![s4::UDPRoute::crd()], "v1alpha4"),
    ]
}

fn merged(crds: Vec<CustomResourceDefinition>, storage: &str) -> CustomResourceDefinition {
    #[allow(clippy::expect_used)]
    // Invariant: every list above holds single-version CRDs of one group and kind,
    // including the storage version; a mistake there fails every test at once.
    let mut crd = merge_crds(crds, storage).expect("static CRD list is consistent");
    crd.metadata.labels = Some(BTreeMap::from([
        (
            "app.kubernetes.io/part-of".to_string(),
            "linkerd-lite".to_string(),
        ),
        (
            "mesh.linkerd-lite.io/crd-group".to_string(),
            crd.spec.group.replace('.', "-"),
        ),
    ]));
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "None".to_string(),
        webhook: None,
    });
    // Oldest version first, as `kubectl explain` and readers expect.
    crd.spec.versions.sort_by(|a, b| a.name.cmp(&b.name));
    for v in &mut crd.spec.versions {
        if let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema.description = Some(format!(
                "{} {}/{}, as served by linkerd-lite.",
                crd.spec.names.kind, crd.spec.group, v.name
            ));
        }
    }
    crd
}

/// The file name a CRD is committed under: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// Every CRD as one multi-document YAML stream, as `mesh install --crds` prints it.
pub fn render_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}
