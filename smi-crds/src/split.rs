//! `split.smi-spec.io` TrafficSplit, every served version.
//!
//! v1alpha1 weights are Kubernetes quantities (`1`, `"900m"`, `"90"`, `100`); later
//! versions use whole numbers and may select requests with `matches`.

/// `split.smi-spec.io/v1alpha1`: quantity weights, no matches.
pub mod v1alpha1 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// Splits traffic for a root Service between backend Services.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts",
        derive = "PartialEq",
        printcolumn(
            name = "Service",
            type_ = "string",
            json_path = ".spec.service",
            description = "The root service"
        ),
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )]
    #[serde(rename_all = "camelCase")]
    pub struct TrafficSplitSpec {
        /// The root Service that clients address.
        pub service: String,
        /// The Services traffic is split between.
        #[serde(default)]
        pub backends: Vec<TrafficSplitBackend>,
    }

    /// A backend and its weight.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    pub struct TrafficSplitBackend {
        /// The backend Service's name.
        pub service: String,
        /// A Kubernetes quantity: `1`, `"900m"`, `"90"`, `100`.
        pub weight: IntOrString,
    }
}

macro_rules! integer_weight_split {
    ($version:literal, $doc:literal) => {
        #[doc = $doc]
        pub mod version {
            use kube::CustomResource;
            use schemars::JsonSchema;
            use serde::{Deserialize, Serialize};

            /// Splits traffic for a root Service between backend Services.
            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
            #[kube(
                group = "split.smi-spec.io",
                version = $version,
                kind = "TrafficSplit",
                namespaced,
                shortname = "ts",
                derive = "PartialEq",
                printcolumn(name = "Service", type_ = "string", json_path = ".spec.service", description = "The root service"),
                printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
            )]
            #[serde(rename_all = "camelCase")]
            pub struct TrafficSplitSpec {
                /// The root Service that clients address.
                pub service: String,
                /// The Services traffic is split between.
                #[serde(default)]
                pub backends: Vec<TrafficSplitBackend>,
                /// Route groups selecting which requests are split; others go to the root.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub matches: Option<Vec<TrafficSplitMatch>>,
            }

            /// A backend and its weight.
            #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
            pub struct TrafficSplitBackend {
                /// The backend Service's name.
                pub service: String,
                /// A relative whole-number weight.
                pub weight: i64,
            }

            /// A reference to a route group (normally an HTTPRouteGroup).
            #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
            #[serde(rename_all = "camelCase")]
            pub struct TrafficSplitMatch {
                /// The route group's kind, e.g. `HTTPRouteGroup`.
                pub kind: String,
                /// The route group's name, in the split's namespace.
                pub name: String,
                /// The route group's API group, `specs.smi-spec.io`.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub api_group: Option<String>,
            }
        }
    };
}

/// `split.smi-spec.io/v1alpha2`: whole-number weights.
pub mod v1alpha2 {
    integer_weight_split!("v1alpha2", "The v1alpha2 types.");
    pub use version::*;
}

/// `split.smi-spec.io/v1alpha3`: whole-number weights and `matches`.
pub mod v1alpha3 {
    integer_weight_split!("v1alpha3", "The v1alpha3 types.");
    pub use version::*;
}

/// `split.smi-spec.io/v1alpha4`: whole-number weights and `matches`.
pub mod v1alpha4 {
    integer_weight_split!("v1alpha4", "The v1alpha4 types.");
    pub use version::*;
}
