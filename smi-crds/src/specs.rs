//! `specs.smi-spec.io` route groups: HTTPRouteGroup, TCPRoute and UDPRoute.
//!
//! HTTPRouteGroup v1alpha1 and v1alpha2 keep `matches` at the top level; v1alpha3 and
//! v1alpha4 wrap them in `spec`. Header filters (v1alpha2 on) are accepted in both
//! encodings seen in the wild: a map (`user-agent: ".*Android.*"`) and a list of
//! single-key maps (`- user-agent: ".*Android.*"`).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// An HTTP match without header filters (HTTPRouteGroup v1alpha1).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchV1 {
    /// The match's name, referenced by TrafficTarget rules.
    pub name: String,
    /// Methods (`GET`, …) or `*` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// A regular expression anchored at the start of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
}

/// An HTTP match with header filters (HTTPRouteGroup v1alpha2 on).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// The match's name, referenced by TrafficTarget rules and TrafficSplit matches.
    pub name: String,
    /// Methods (`GET`, …) or `*` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// A regular expression anchored at the start of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Header name to value regular expression; all must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Header filters, in written order. Deserialises from a map or a list of
/// single-key maps; serialises as a map.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Headers(pub Vec<(String, String)>);

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;

        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of header names to regexes, or a list of single-key maps")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(Headers(out))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<indexmap_lite::OrderedMap>()? {
                    if item.0.len() != 1 {
                        return Err(de::Error::custom(format!(
                            "each header filter in a list must have exactly one key, found {}",
                            item.0.len()
                        )));
                    }
                    out.extend(item.0);
                }
                Ok(Headers(out))
            }
        }

        deserializer.deserialize_any(HeadersVisitor)
    }
}

/// A tiny ordered string map, so list-encoded header filters keep their order.
mod indexmap_lite {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

    pub(super) struct OrderedMap(pub(super) Vec<(String, String)>);

    impl<'de> Deserialize<'de> for OrderedMap {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = OrderedMap;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a single-key map of header name to regex")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry::<String, String>()? {
                        out.push(entry);
                    }
                    Ok(OrderedMap(out))
                }
            }
            deserializer.deserialize_map(V)
        }
    }
}

impl JsonSchema for Headers {
    fn schema_name() -> Cow<'static, str> {
        "HttpHeaders".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Either a map or a list of single-key maps: no single structural type fits
        // both, so the API server keeps the value as written and we validate it.
        json_schema!({
            "description": "Header name to value regex: a map, or a list of single-key maps.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// L4 port matches (TCPRoute and UDPRoute v1alpha4).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PortMatches {
    /// The ports; empty means every port of the destination.
    #[serde(default)]
    pub ports: Vec<i64>,
}

macro_rules! http_route_group_flat {
    ($version:literal, $match:ty) => {
        use kube::CustomResource;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};

        /// Names HTTP routes, with `matches` at the top level.
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "specs.smi-spec.io",
            version = $version,
            kind = "HTTPRouteGroup",
            namespaced,
            no_spec,
            shortname = "htr",
            derive = "PartialEq",
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        pub struct HTTPRouteGroupFields {
            /// The routes.
            #[serde(default)]
            pub matches: Vec<$match>,
        }

        /// Describes TCP traffic; this version has no fields.
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "specs.smi-spec.io",
            version = $version,
            kind = "TCPRoute",
            namespaced,
            no_spec,
            derive = "PartialEq",
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        pub struct TCPRouteFields {}
    };
}

macro_rules! http_route_group_spec {
    ($version:literal) => {
        use kube::CustomResource;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};

        /// Names HTTP routes, under `spec.matches`.
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "specs.smi-spec.io",
            version = $version,
            kind = "HTTPRouteGroup",
            namespaced,
            shortname = "htr",
            derive = "PartialEq",
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        pub struct HTTPRouteGroupSpec {
            /// The routes.
            #[serde(default)]
            pub matches: Vec<super::HttpMatch>,
        }
    };
}

/// `specs.smi-spec.io/v1alpha1`.
pub mod v1alpha1 {
    http_route_group_flat!("v1alpha1", super::HttpMatchV1);
}

/// `specs.smi-spec.io/v1alpha2`: adds header filters.
pub mod v1alpha2 {
    http_route_group_flat!("v1alpha2", super::HttpMatch);
}

/// `specs.smi-spec.io/v1alpha3`: moves routes under `spec`.
pub mod v1alpha3 {
    http_route_group_spec!("v1alpha3");

    /// Describes TCP traffic; this version's spec is empty.
    #[derive(
        CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
    )]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha3",
        kind = "TCPRoute",
        namespaced,
        derive = "PartialEq",
        derive = "Default",
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )]
    pub struct TCPRouteSpec {}
}

/// `specs.smi-spec.io/v1alpha4`: adds port matches to TCPRoute, and UDPRoute.
pub mod v1alpha4 {
    http_route_group_spec!("v1alpha4");

    /// Describes TCP traffic on some ports.
    #[derive(
        CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
    )]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "TCPRoute",
        namespaced,
        derive = "PartialEq",
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )]
    pub struct TCPRouteSpec {
        /// The ports matched.
        #[serde(default)]
        pub matches: super::PortMatches,
    }

    /// Describes UDP traffic on some ports.
    #[derive(
        CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
    )]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "UDPRoute",
        namespaced,
        derive = "PartialEq",
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )]
    pub struct UDPRouteSpec {
        /// The ports matched.
        #[serde(default)]
        pub matches: super::PortMatches,
    }
}
