//! Conversion of every served SMI version into the version-neutral [`model`], with
//! validation.
//!
//! Each typed resource implements [`ToModel`]. [`from_json`] does the same for an
//! untyped document (as read from a file or a dynamic watch), dispatching on
//! `apiVersion` and `kind`. Every error names the object (`namespace/name`), its
//! `apiVersion` and the offending field.

// Errors carry owned names for clear messages; conversion runs once per object
// change, never on a request path, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashSet;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::de::DeserializeOwned;

use crate::model::{
    self, AccessRule, HeaderMatch, HttpMatch, HttpRouteGroup, PortRoute, RouteKind, RouteRef,
    RuleRef, ServiceAccountRef, Source, Split, SplitBackend,
};
use crate::{access, specs, split};

/// The namespace assumed for an object that names none (as in a local-mode file).
pub const DEFAULT_NAMESPACE: &str = "default";

/// A typed SMI resource that converts into the model.
pub trait ToModel {
    /// The model type it converts into.
    type Model;

    /// Converts and validates.
    fn to_model(&self) -> Result<Self::Model, ValidationError>;
}

/// Any SMI object, converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmiObject {
    /// A TrafficSplit.
    Split(Split),
    /// An HTTPRouteGroup.
    HttpRouteGroup(HttpRouteGroup),
    /// A TCPRoute or UDPRoute.
    PortRoute(PortRoute),
    /// A TrafficTarget.
    AccessRule(AccessRule),
}

impl SmiObject {
    /// Where the object came from.
    pub fn source(&self) -> &Source {
        match self {
            Self::Split(s) => &s.source,
            Self::HttpRouteGroup(g) => &g.source,
            Self::PortRoute(r) => &r.source,
            Self::AccessRule(a) => &a.source,
        }
    }
}

/// An SMI object that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {object} ({api_version}): {field}: {problem}")]
pub struct ValidationError {
    /// The object's kind.
    pub kind: String,
    /// `namespace/name`.
    pub object: String,
    /// The `apiVersion` it was written in.
    pub api_version: String,
    /// The offending field, as a path such as `spec.backends[1].weight`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A required field is absent or empty.
    Missing,
    /// The document does not have the shape of this kind and version.
    Malformed(String),
    /// This group has no such version, or it is not served.
    UnsupportedVersion,
    /// A weight below zero.
    NegativeWeight(String),
    /// A weight that is not a number or quantity.
    UnparsableWeight(String),
    /// A split with no backends.
    EmptyBackends,
    /// The same backend Service listed twice.
    DuplicateBackend(String),
    /// A Service in another namespace than the object's.
    CrossNamespace {
        /// The reference as written.
        reference: String,
        /// The namespace it resolves to.
        namespace: String,
    },
    /// A name that is not a valid DNS label.
    InvalidName(String),
    /// A regular expression that does not compile.
    InvalidRegex {
        /// The expression as written.
        regex: String,
        /// The compiler's reason.
        reason: String,
    },
    /// A kind this field cannot reference.
    UnknownKind {
        /// The kind as written.
        kind: String,
        /// The kinds allowed here.
        expected: &'static str,
    },
    /// An HTTP method that does not exist.
    InvalidMethod(String),
    /// A header name that is not a valid HTTP header name.
    InvalidHeaderName(String),
    /// A port outside 1–65535.
    InvalidPort(String),
    /// Two matches with one name in a group.
    DuplicateMatchName(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("required but missing or empty"),
            Self::Malformed(why) => write!(f, "malformed: {why}"),
            Self::UnsupportedVersion => f.write_str("version not served by linkerd-lite"),
            Self::NegativeWeight(w) => write!(f, "weight {w} is negative"),
            Self::UnparsableWeight(w) => write!(
                f,
                "weight {w:?} is not a whole number or a quantity such as \"900m\""
            ),
            Self::EmptyBackends => f.write_str("a split needs at least one backend"),
            Self::DuplicateBackend(s) => write!(f, "backend {s:?} is listed more than once"),
            Self::CrossNamespace {
                reference,
                namespace,
            } => write!(
                f,
                "{reference:?} is in namespace {namespace:?}; only Services in the object's own namespace may be referenced"
            ),
            Self::InvalidName(n) => write!(f, "{n:?} is not a valid DNS label"),
            Self::InvalidRegex { regex, reason } => {
                write!(f, "regex {regex:?} does not compile: {reason}")
            }
            Self::UnknownKind { kind, expected } => {
                write!(f, "unknown kind {kind:?}, expected {expected}")
            }
            Self::InvalidMethod(m) => write!(f, "{m:?} is not an HTTP method"),
            Self::InvalidHeaderName(h) => write!(f, "{h:?} is not a valid header name"),
            Self::InvalidPort(p) => write!(f, "port {p} is not in 1-65535"),
            Self::DuplicateMatchName(n) => write!(f, "match name {n:?} is used more than once"),
        }
    }
}

// === conversion of untyped documents ===

/// Converts an untyped document into the model.
///
/// Returns `Ok(None)` when the document is not an SMI kind (a Service, a Pod, …), and
/// an error when it is an SMI kind that is malformed, invalid, or of a version that is
/// not served.
pub fn from_json(doc: &serde_json::Value) -> Result<Option<SmiObject>, ValidationError> {
    let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    let Some((group, version)) = api_version.split_once('/') else {
        return Ok(None);
    };
    let obj = match (group, kind) {
        ("split.smi-spec.io", "TrafficSplit") => match version {
            "v1alpha1" => typed::<split::v1alpha1::TrafficSplit>(doc)?.to_model()?,
            "v1alpha2" => typed::<split::v1alpha2::TrafficSplit>(doc)?.to_model()?,
            "v1alpha3" => typed::<split::v1alpha3::TrafficSplit>(doc)?.to_model()?,
            "v1alpha4" => typed::<split::v1alpha4::TrafficSplit>(doc)?.to_model()?,
            _ => return Err(unsupported(doc)),
        }
        .into(),
        ("access.smi-spec.io", "TrafficTarget") => match version {
            "v1alpha1" => typed::<access::v1alpha1::TrafficTarget>(doc)?.to_model()?,
            "v1alpha2" => typed::<access::v1alpha2::TrafficTarget>(doc)?.to_model()?,
            "v1alpha3" => typed::<access::v1alpha3::TrafficTarget>(doc)?.to_model()?,
            _ => return Err(unsupported(doc)),
        }
        .into(),
        ("specs.smi-spec.io", "HTTPRouteGroup") => match version {
            "v1alpha1" => typed::<specs::v1alpha1::HTTPRouteGroup>(doc)?.to_model()?,
            "v1alpha2" => typed::<specs::v1alpha2::HTTPRouteGroup>(doc)?.to_model()?,
            "v1alpha3" => typed::<specs::v1alpha3::HTTPRouteGroup>(doc)?.to_model()?,
            "v1alpha4" => typed::<specs::v1alpha4::HTTPRouteGroup>(doc)?.to_model()?,
            _ => return Err(unsupported(doc)),
        }
        .into(),
        ("specs.smi-spec.io", "TCPRoute") => match version {
            "v1alpha1" => typed::<specs::v1alpha1::TCPRoute>(doc)?.to_model()?,
            "v1alpha2" => typed::<specs::v1alpha2::TCPRoute>(doc)?.to_model()?,
            "v1alpha3" => typed::<specs::v1alpha3::TCPRoute>(doc)?.to_model()?,
            "v1alpha4" => typed::<specs::v1alpha4::TCPRoute>(doc)?.to_model()?,
            _ => return Err(unsupported(doc)),
        }
        .into(),
        ("specs.smi-spec.io", "UDPRoute") => match version {
            "v1alpha4" => typed::<specs::v1alpha4::UDPRoute>(doc)?.to_model()?,
            _ => return Err(unsupported(doc)),
        }
        .into(),
        ("split.smi-spec.io" | "access.smi-spec.io" | "specs.smi-spec.io", _) => {
            return Err(ValidationError {
                kind: kind.to_string(),
                object: object_key(doc),
                api_version: api_version.to_string(),
                field: "kind".into(),
                problem: Problem::UnknownKind {
                    kind: kind.to_string(),
                    expected: "TrafficSplit, TrafficTarget, HTTPRouteGroup, TCPRoute or UDPRoute",
                },
            });
        }
        _ => return Ok(None),
    };
    Ok(Some(obj))
}

impl From<Split> for SmiObject {
    fn from(s: Split) -> Self {
        Self::Split(s)
    }
}
impl From<HttpRouteGroup> for SmiObject {
    fn from(g: HttpRouteGroup) -> Self {
        Self::HttpRouteGroup(g)
    }
}
impl From<PortRoute> for SmiObject {
    fn from(r: PortRoute) -> Self {
        Self::PortRoute(r)
    }
}
impl From<AccessRule> for SmiObject {
    fn from(a: AccessRule) -> Self {
        Self::AccessRule(a)
    }
}

fn object_key(doc: &serde_json::Value) -> String {
    let meta = doc.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(|v| v.as_str());
    format!(
        "{}/{}",
        field("namespace").unwrap_or(DEFAULT_NAMESPACE),
        field("name").unwrap_or("<unnamed>")
    )
}

fn unsupported(doc: &serde_json::Value) -> ValidationError {
    ValidationError {
        kind: doc["kind"].as_str().unwrap_or_default().to_string(),
        object: object_key(doc),
        api_version: doc["apiVersion"].as_str().unwrap_or_default().to_string(),
        field: "apiVersion".into(),
        problem: Problem::UnsupportedVersion,
    }
}

fn typed<T: DeserializeOwned>(doc: &serde_json::Value) -> Result<T, ValidationError> {
    T::deserialize(doc).map_err(|e| ValidationError {
        kind: doc["kind"].as_str().unwrap_or_default().to_string(),
        object: object_key(doc),
        api_version: doc["apiVersion"].as_str().unwrap_or_default().to_string(),
        field: "<document>".into(),
        problem: Problem::Malformed(e.to_string()),
    })
}

// === shared helpers ===

/// Builds errors for one object.
struct Ctx {
    source: Source,
    kind: &'static str,
}

impl Ctx {
    fn new<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> Result<Self, ValidationError> {
        let api_version = K::api_version(&()).into_owned();
        let kind = match K::kind(&()).as_ref() {
            "TrafficSplit" => "TrafficSplit",
            "TrafficTarget" => "TrafficTarget",
            "HTTPRouteGroup" => "HTTPRouteGroup",
            "TCPRoute" => "TCPRoute",
            _ => "UDPRoute",
        };
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let created = meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_string));
        let ctx = Self {
            source: Source {
                namespace,
                name: meta.name.clone().unwrap_or_default(),
                api_version,
                created,
            },
            kind,
        };
        if ctx.source.name.is_empty() {
            return Err(ctx.err("metadata.name", Problem::Missing));
        }
        Ok(ctx)
    }

    fn err(&self, field: impl Into<String>, problem: Problem) -> ValidationError {
        ValidationError {
            kind: self.kind.to_string(),
            object: self.source.key(),
            api_version: self.source.api_version.clone(),
            field: field.into(),
            problem,
        }
    }

    /// Resolves a Service reference (`name`, `name.ns`, `name.ns.svc`,
    /// `name.ns.svc.cluster.local`) to a name in the object's own namespace.
    fn service(&self, field: &str, reference: &str) -> Result<String, ValidationError> {
        if reference.is_empty() {
            return Err(self.err(field, Problem::Missing));
        }
        let mut parts = reference.split('.');
        let name = parts.next().unwrap_or_default();
        if let Some(ns) = parts.next()
            && ns != self.source.namespace
        {
            return Err(self.err(
                field,
                Problem::CrossNamespace {
                    reference: reference.to_string(),
                    namespace: ns.to_string(),
                },
            ));
        }
        if let Some(svc) = parts.next()
            && svc != "svc"
        {
            return Err(self.err(field, Problem::InvalidName(reference.to_string())));
        }
        if !crate::mesh::is_dns_label(name) {
            return Err(self.err(field, Problem::InvalidName(name.to_string())));
        }
        Ok(name.to_string())
    }

    fn regex(&self, field: &str, re: &str) -> Result<(), ValidationError> {
        // Paths are matched anchored at the start; compile the same way the matcher will.
        regex::Regex::new(&format!("^(?:{re})")).map_err(|e| {
            self.err(
                field,
                Problem::InvalidRegex {
                    regex: re.to_string(),
                    reason: e.to_string().lines().last().unwrap_or_default().to_string(),
                },
            )
        })?;
        Ok(())
    }

    fn port(&self, field: &str, port: i64) -> Result<u16, ValidationError> {
        u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| self.err(field, Problem::InvalidPort(port.to_string())))
    }
}

// === TrafficSplit ===

/// A backend as written, before normalisation.
struct RawBackend<'a> {
    service: &'a str,
    weight_milli: u128,
}

fn split_model(
    ctx: Ctx,
    root: &str,
    backends: Vec<RawBackend<'_>>,
    matches: &[(&str, &str, Option<&str>)],
) -> Result<Split, ValidationError> {
    let root = ctx.service("spec.service", root)?;
    if backends.is_empty() {
        return Err(ctx.err("spec.backends", Problem::EmptyBackends));
    }
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(backends.len());
    for (i, b) in backends.iter().enumerate() {
        let name = ctx.service(&format!("spec.backends[{i}].service"), b.service)?;
        if !seen.insert(name.clone()) {
            return Err(ctx.err(
                format!("spec.backends[{i}].service"),
                Problem::DuplicateBackend(name),
            ));
        }
        names.push(name);
    }
    let raw: Vec<u128> = backends.iter().map(|b| b.weight_milli).collect();
    let weights = model::normalize_weights(&raw);
    let mut refs = Vec::with_capacity(matches.len());
    for (i, (kind, name, api_group)) in matches.iter().enumerate() {
        let field = format!("spec.matches[{i}]");
        let kind = match RouteKind::parse(kind) {
            Some(k @ (RouteKind::HttpRouteGroup | RouteKind::TcpRoute)) => k,
            _ => {
                return Err(ctx.err(
                    format!("{field}.kind"),
                    Problem::UnknownKind {
                        kind: kind.to_string(),
                        expected: "HTTPRouteGroup or TCPRoute",
                    },
                ));
            }
        };
        if let Some(g) = api_group
            && !g.is_empty()
            && *g != "specs.smi-spec.io"
        {
            return Err(ctx.err(
                format!("{field}.apiGroup"),
                Problem::UnknownKind {
                    kind: format!("{kind}.{g}", kind = kind.as_str()),
                    expected: "a kind in specs.smi-spec.io",
                },
            ));
        }
        if name.is_empty() {
            return Err(ctx.err(format!("{field}.name"), Problem::Missing));
        }
        refs.push(RouteRef {
            kind,
            name: name.to_string(),
        });
    }
    Ok(Split {
        source: ctx.source,
        root,
        backends: names
            .into_iter()
            .zip(weights)
            .map(|(service, weight_milli)| SplitBackend {
                service,
                weight_milli,
            })
            .collect(),
        matches: refs,
    })
}

/// Parses a Kubernetes quantity (`1`, `"900m"`, `"1.5"`, `"2k"`, `"1Ki"`) into
/// milli-units, rounding a finer fraction up as Kubernetes does.
pub fn parse_quantity_milli(q: &str) -> Result<u128, Problem> {
    let unparsable = || Problem::UnparsableWeight(q.to_string());
    let s = q.trim();
    if s.starts_with('-') {
        return Err(Problem::NegativeWeight(q.to_string()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return Err(unparsable());
    }
    // (numerator, denominator) of the suffix's multiplier.
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        _ => return Err(unparsable()),
    };
    if int_part.len() + frac_part.len() > 24 {
        return Err(unparsable());
    }
    let digits: u128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| unparsable())?;
    let scale = 10u128.pow(frac_part.len() as u32);
    let numerator = digits
        .checked_mul(mul)
        .and_then(|n| n.checked_mul(1000))
        .ok_or_else(unparsable)?;
    let denominator = scale * div;
    Ok(numerator.div_ceil(denominator))
}

fn quantity_milli(ctx: &Ctx, field: &str, w: &IntOrString) -> Result<u128, ValidationError> {
    match w {
        IntOrString::Int(i) if *i < 0 => {
            Err(ctx.err(field, Problem::NegativeWeight(i.to_string())))
        }
        IntOrString::Int(i) => Ok(u128::from(i.unsigned_abs()) * 1000),
        IntOrString::String(s) => parse_quantity_milli(s).map_err(|p| ctx.err(field, p)),
    }
}

fn integer_milli(ctx: &Ctx, field: &str, w: i64) -> Result<u128, ValidationError> {
    if w < 0 {
        return Err(ctx.err(field, Problem::NegativeWeight(w.to_string())));
    }
    Ok(u128::from(w.unsigned_abs()) * 1000)
}

impl ToModel for split::v1alpha1::TrafficSplit {
    type Model = Split;

    fn to_model(&self) -> Result<Split, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        let mut backends = Vec::with_capacity(self.spec.backends.len());
        for (i, b) in self.spec.backends.iter().enumerate() {
            let field = format!("spec.backends[{i}].weight");
            backends.push(RawBackend {
                service: &b.service,
                weight_milli: quantity_milli(&ctx, &field, &b.weight)?,
            });
        }
        split_model(ctx, &self.spec.service, backends, &[])
    }
}

macro_rules! integer_split_to_model {
    ($module:ident) => {
        impl ToModel for split::$module::TrafficSplit {
            type Model = Split;

            fn to_model(&self) -> Result<Split, ValidationError> {
                let ctx = Ctx::new::<Self>(&self.metadata)?;
                let mut backends = Vec::with_capacity(self.spec.backends.len());
                for (i, b) in self.spec.backends.iter().enumerate() {
                    let field = format!("spec.backends[{i}].weight");
                    backends.push(RawBackend {
                        service: &b.service,
                        weight_milli: integer_milli(&ctx, &field, b.weight)?,
                    });
                }
                let matches: Vec<_> = self
                    .spec
                    .matches
                    .iter()
                    .flatten()
                    .map(|m| (m.kind.as_str(), m.name.as_str(), m.api_group.as_deref()))
                    .collect();
                split_model(ctx, &self.spec.service, backends, &matches)
            }
        }
    };
}

integer_split_to_model!(v1alpha2);
integer_split_to_model!(v1alpha3);
integer_split_to_model!(v1alpha4);

// === HTTPRouteGroup ===

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A match as written, before validation.
struct RawMatch<'a> {
    name: &'a str,
    methods: Option<&'a [String]>,
    path_regex: Option<&'a str>,
    headers: &'a [(String, String)],
}

fn http_group_model(
    ctx: Ctx,
    prefix: &str,
    matches: Vec<RawMatch<'_>>,
) -> Result<HttpRouteGroup, ValidationError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(matches.len());
    for (i, m) in matches.into_iter().enumerate() {
        let field = format!("{prefix}matches[{i}]");
        if m.name.is_empty() {
            return Err(ctx.err(format!("{field}.name"), Problem::Missing));
        }
        if !names.insert(m.name) {
            return Err(ctx.err(
                format!("{field}.name"),
                Problem::DuplicateMatchName(m.name.to_string()),
            ));
        }
        let mut methods = Vec::new();
        for (j, method) in m.methods.unwrap_or_default().iter().enumerate() {
            let upper = method.to_ascii_uppercase();
            if upper == "*" {
                methods.clear();
                break;
            }
            if !METHODS.contains(&upper.as_str()) {
                return Err(ctx.err(
                    format!("{field}.methods[{j}]"),
                    Problem::InvalidMethod(method.clone()),
                ));
            }
            if !methods.contains(&upper) {
                methods.push(upper);
            }
        }
        let path_regex = match m.path_regex.filter(|p| !p.is_empty()) {
            Some(p) => {
                ctx.regex(&format!("{field}.pathRegex"), p)?;
                Some(p.to_string())
            }
            None => None,
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for (name, value) in m.headers {
            let hfield = format!("{field}.headers.{name}");
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                return Err(ctx.err(hfield, Problem::InvalidHeaderName(name.clone())));
            }
            ctx.regex(&hfield, value)?;
            headers.push(HeaderMatch {
                name: name.to_ascii_lowercase(),
                value_regex: value.clone(),
            });
        }
        out.push(HttpMatch {
            name: m.name.to_string(),
            path_regex,
            methods,
            headers,
        });
    }
    Ok(HttpRouteGroup {
        source: ctx.source,
        matches: out,
    })
}

impl ToModel for specs::v1alpha1::HTTPRouteGroup {
    type Model = HttpRouteGroup;

    fn to_model(&self) -> Result<HttpRouteGroup, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        let matches = self
            .spec
            .matches
            .iter()
            .map(|m| RawMatch {
                name: &m.name,
                methods: m.methods.as_deref(),
                path_regex: m.path_regex.as_deref(),
                headers: &[],
            })
            .collect();
        http_group_model(ctx, "", matches)
    }
}

fn raw_matches(matches: &[specs::HttpMatch]) -> Vec<RawMatch<'_>> {
    matches
        .iter()
        .map(|m| RawMatch {
            name: &m.name,
            methods: m.methods.as_deref(),
            path_regex: m.path_regex.as_deref(),
            headers: m.headers.as_ref().map(|h| h.0.as_slice()).unwrap_or(&[]),
        })
        .collect()
}

impl ToModel for specs::v1alpha2::HTTPRouteGroup {
    type Model = HttpRouteGroup;

    fn to_model(&self) -> Result<HttpRouteGroup, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        http_group_model(ctx, "", raw_matches(&self.spec.matches))
    }
}

impl ToModel for specs::v1alpha3::HTTPRouteGroup {
    type Model = HttpRouteGroup;

    fn to_model(&self) -> Result<HttpRouteGroup, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        http_group_model(ctx, "spec.", raw_matches(&self.spec.matches))
    }
}

impl ToModel for specs::v1alpha4::HTTPRouteGroup {
    type Model = HttpRouteGroup;

    fn to_model(&self) -> Result<HttpRouteGroup, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        http_group_model(ctx, "spec.", raw_matches(&self.spec.matches))
    }
}

// === TCPRoute and UDPRoute ===

fn port_route(ctx: Ctx, kind: RouteKind, ports: &[i64]) -> Result<PortRoute, ValidationError> {
    let mut out = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let port = ctx.port(&format!("spec.matches.ports[{i}]"), *p)?;
        if !out.contains(&port) {
            out.push(port);
        }
    }
    Ok(PortRoute {
        source: ctx.source,
        kind,
        ports: out,
    })
}

impl ToModel for specs::v1alpha1::TCPRoute {
    type Model = PortRoute;

    fn to_model(&self) -> Result<PortRoute, ValidationError> {
        port_route(Ctx::new::<Self>(&self.metadata)?, RouteKind::TcpRoute, &[])
    }
}

impl ToModel for specs::v1alpha2::TCPRoute {
    type Model = PortRoute;

    fn to_model(&self) -> Result<PortRoute, ValidationError> {
        port_route(Ctx::new::<Self>(&self.metadata)?, RouteKind::TcpRoute, &[])
    }
}

impl ToModel for specs::v1alpha3::TCPRoute {
    type Model = PortRoute;

    fn to_model(&self) -> Result<PortRoute, ValidationError> {
        port_route(Ctx::new::<Self>(&self.metadata)?, RouteKind::TcpRoute, &[])
    }
}

impl ToModel for specs::v1alpha4::TCPRoute {
    type Model = PortRoute;

    fn to_model(&self) -> Result<PortRoute, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        port_route(ctx, RouteKind::TcpRoute, &self.spec.matches.ports)
    }
}

impl ToModel for specs::v1alpha4::UDPRoute {
    type Model = PortRoute;

    fn to_model(&self) -> Result<PortRoute, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        port_route(ctx, RouteKind::UdpRoute, &self.spec.matches.ports)
    }
}

// === TrafficTarget ===

/// A TrafficTarget as written, before validation.
struct RawTarget<'a> {
    prefix: &'a str,
    rules_field: &'a str,
    destination: &'a access::Subject,
    port: Option<(String, i64)>,
    sources: &'a [access::Subject],
    rules: &'a [access::Rule],
}

fn subject(
    ctx: &Ctx,
    field: &str,
    s: &access::Subject,
) -> Result<ServiceAccountRef, ValidationError> {
    if s.kind != "ServiceAccount" {
        return Err(ctx.err(
            format!("{field}.kind"),
            Problem::UnknownKind {
                kind: s.kind.clone(),
                expected: "ServiceAccount",
            },
        ));
    }
    if !crate::mesh::is_dns_label(&s.name) {
        return Err(ctx.err(
            format!("{field}.name"),
            Problem::InvalidName(s.name.clone()),
        ));
    }
    let namespace = s
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ctx.source.namespace.clone());
    Ok(ServiceAccountRef {
        namespace,
        name: s.name.clone(),
    })
}

fn access_model(ctx: Ctx, raw: RawTarget<'_>) -> Result<AccessRule, ValidationError> {
    let p = raw.prefix;
    let destination = subject(&ctx, &format!("{p}destination"), raw.destination)?;
    if destination.namespace != ctx.source.namespace {
        return Err(ctx.err(
            format!("{p}destination.namespace"),
            Problem::CrossNamespace {
                reference: destination.name.clone(),
                namespace: destination.namespace,
            },
        ));
    }
    let port = match raw.port {
        Some((field, port)) => Some(ctx.port(&field, port)?),
        None => None,
    };
    let sources = raw
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| subject(&ctx, &format!("{p}sources[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.iter().enumerate() {
        let field = format!("{p}{}[{i}]", raw.rules_field);
        let Some(kind) = RouteKind::parse(&r.kind) else {
            return Err(ctx.err(
                format!("{field}.kind"),
                Problem::UnknownKind {
                    kind: r.kind.clone(),
                    expected: "HTTPRouteGroup, TCPRoute or UDPRoute",
                },
            ));
        };
        if r.name.is_empty() {
            return Err(ctx.err(format!("{field}.name"), Problem::Missing));
        }
        rules.push(RuleRef {
            route: RouteRef {
                kind,
                name: r.name.clone(),
            },
            matches: r.matches.clone().unwrap_or_default(),
        });
    }
    Ok(AccessRule {
        source: ctx.source,
        destination,
        port,
        sources,
        rules,
    })
}

impl ToModel for access::v1alpha1::TrafficTarget {
    type Model = AccessRule;

    fn to_model(&self) -> Result<AccessRule, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        let d = &self.spec.destination;
        let field = "destination.port".to_string();
        let port = match &d.port {
            None => None,
            Some(IntOrString::Int(p)) => Some((field, i64::from(*p))),
            Some(IntOrString::String(s)) => match s.parse::<i64>() {
                Ok(p) => Some((field, p)),
                Err(_) => return Err(ctx.err(field, Problem::InvalidPort(format!("{s:?}")))),
            },
        };
        let destination = access::Subject {
            kind: d.kind.clone(),
            name: d.name.clone(),
            namespace: d.namespace.clone(),
        };
        access_model(
            ctx,
            RawTarget {
                prefix: "",
                rules_field: "specs",
                destination: &destination,
                port,
                sources: &self.spec.sources,
                rules: &self.spec.specs,
            },
        )
    }
}

impl ToModel for access::v1alpha2::TrafficTarget {
    type Model = AccessRule;

    fn to_model(&self) -> Result<AccessRule, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        let d = &self.spec.destination;
        let destination = access::Subject {
            kind: d.kind.clone(),
            name: d.name.clone(),
            namespace: d.namespace.clone(),
        };
        access_model(
            ctx,
            RawTarget {
                prefix: "spec.",
                rules_field: "rules",
                destination: &destination,
                port: d.port.map(|p| ("spec.destination.port".to_string(), p)),
                sources: &self.spec.sources,
                rules: &self.spec.rules,
            },
        )
    }
}

impl ToModel for access::v1alpha3::TrafficTarget {
    type Model = AccessRule;

    fn to_model(&self) -> Result<AccessRule, ValidationError> {
        let ctx = Ctx::new::<Self>(&self.metadata)?;
        access_model(
            ctx,
            RawTarget {
                prefix: "spec.",
                rules_field: "rules",
                destination: &self.spec.destination,
                port: None,
                sources: &self.spec.sources,
                rules: &self.spec.rules,
            },
        )
    }
}

#[cfg(test)]
mod tests;
