//! `access.smi-spec.io` TrafficTarget, every served version.
//!
//! v1alpha1 has no `spec` wrapper and calls its rules `specs`; v1alpha2 and v1alpha3
//! wrap a `spec` with `rules`. Only v1alpha1 and v1alpha2 carry a destination port.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A source or destination subject: normally a ServiceAccount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Subject {
    /// `ServiceAccount` (the only kind enforced).
    pub kind: String,
    /// The subject's name.
    pub name: String,
    /// The subject's namespace; defaults to the TrafficTarget's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A route group allowed by a TrafficTarget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Rule {
    /// `HTTPRouteGroup`, `TCPRoute` or `UDPRoute`.
    pub kind: String,
    /// The route group's name, in the TrafficTarget's namespace.
    pub name: String,
    /// Names of the group's matches allowed; empty or absent means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<String>>,
}

/// `access.smi-spec.io/v1alpha1`: fields at the top level, no `spec`.
pub mod v1alpha1 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// Grants the `sources` access to the `destination` on the routes in `specs`.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "access.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficTarget",
        namespaced,
        no_spec,
        shortname = "tt",
        derive = "PartialEq",
        printcolumn(
            name = "Destination",
            type_ = "string",
            json_path = ".destination.name",
            description = "The destination service account"
        ),
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )]
    pub struct TrafficTargetFields {
        /// The workloads being protected.
        pub destination: Destination,
        /// The clients allowed.
        #[serde(default)]
        pub sources: Vec<super::Subject>,
        /// The routes allowed.
        #[serde(default)]
        pub specs: Vec<super::Rule>,
    }

    /// The destination subject, with an optional port (a number or a numeric string).
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    pub struct Destination {
        /// `ServiceAccount`.
        pub kind: String,
        /// The service account's name.
        pub name: String,
        /// The service account's namespace; defaults to the TrafficTarget's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace: Option<String>,
        /// The port the rule applies to; absent means every port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port: Option<IntOrString>,
    }
}

/// `access.smi-spec.io/v1alpha2`: a `spec` with `rules`, destination port allowed.
pub mod v1alpha2 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// Grants the `sources` access to the `destination` on the routes in `rules`.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "access.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficTarget",
        namespaced,
        shortname = "tt",
        derive = "PartialEq",
        printcolumn(
            name = "Destination",
            type_ = "string",
            json_path = ".spec.destination.name",
            description = "The destination service account"
        ),
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )]
    pub struct TrafficTargetSpec {
        /// The workloads being protected.
        pub destination: Destination,
        /// The clients allowed.
        #[serde(default)]
        pub sources: Vec<super::Subject>,
        /// The routes allowed.
        #[serde(default)]
        pub rules: Vec<super::Rule>,
    }

    /// The destination subject, with an optional port.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    pub struct Destination {
        /// `ServiceAccount`.
        pub kind: String,
        /// The service account's name.
        pub name: String,
        /// The service account's namespace; defaults to the TrafficTarget's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace: Option<String>,
        /// The port the rule applies to; absent means every port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port: Option<i64>,
    }
}

/// `access.smi-spec.io/v1alpha3`: a `spec` with `rules`; no destination port.
pub mod v1alpha3 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// Grants the `sources` access to the `destination` on the routes in `rules`.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "access.smi-spec.io",
        version = "v1alpha3",
        kind = "TrafficTarget",
        namespaced,
        shortname = "tt",
        derive = "PartialEq",
        printcolumn(
            name = "Destination",
            type_ = "string",
            json_path = ".spec.destination.name",
            description = "The destination service account"
        ),
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )]
    pub struct TrafficTargetSpec {
        /// The workloads being protected.
        pub destination: super::Subject,
        /// The clients allowed.
        #[serde(default)]
        pub sources: Vec<super::Subject>,
        /// The routes allowed.
        #[serde(default)]
        pub rules: Vec<super::Rule>,
    }
}
