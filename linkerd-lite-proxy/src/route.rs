//! HTTP route matching, shared by inbound and outbound policy.
//!
//! Both `InboundServerPolicies` and `OutboundPolicies` describe routes with the
//! proxy API's `http_route::HttpRouteMatch` and `HostMatch`. This module compiles
//! them once, when a policy arrives (regexes included), into matchers that run on
//! every request without allocating in the common case.
//!
//! Semantics follow the Gateway API:
//! - a path prefix matches whole segments (`/api` matches `/api` and `/api/x`, not
//!   `/apix`), and a trailing `/` in the prefix is ignored;
//! - regexes must match the whole value (they are anchored);
//! - header names are case-insensitive; a header matches when any of its values
//!   does;
//! - query parameters are compared after percent-decoding (`+` is not a space), and
//!   only a parameter's first occurrence counts;
//! - a match with no fields, like an empty list of matches in a rule, matches
//!   everything;
//! - hostnames are exact (`web.shop`) or wildcard suffixes (`*.shop`, at least one
//!   more label), compared case-insensitively without the port.
//!
//! Precedence ([`Specificity`], [`HostSpecificity`]): an exact hostname beats a
//! longer suffix, which beats a shorter one, which beats "any host"; then an exact
//! path beats a longer prefix, which beats a regex, which beats no path constraint at
//! all (no path, or the prefix `/`); then having a method; then more header matches;
//! then more query-parameter matches. Ties go to the earlier candidate.

use std::borrow::Cow;

use http::{HeaderName, HeaderValue, Method, Request, header};
use linkerd2_proxy_api::http_route as proto;

/// The largest compiled size of one route regex; a policy cannot make the proxy
/// build arbitrarily large automata.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a route from the control plane could not be compiled. Each variant names the
/// offending field, relative to the message being compiled (e.g.
/// `headers[1].name`); callers prefix their own context with [`RouteError::within`].
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A regex does not compile.
    #[error("{field}: invalid regex {pattern:?}: {reason}")]
    Regex {
        /// The field holding the regex.
        field: String,
        /// The regex as received.
        pattern: String,
        /// Why it does not compile.
        reason: String,
    },
    /// A required field is not set.
    #[error("{field}: missing")]
    Missing {
        /// The field that is not set.
        field: String,
    },
    /// A field is set to a value that cannot be used.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl RouteError {
    /// The field the error is about, e.g. `rules[0].matches[1].path.regex`.
    pub fn field(&self) -> &str {
        match self {
            Self::Regex { field, .. } | Self::Missing { field } | Self::Invalid { field, .. } => {
                field
            }
        }
    }

    /// The same error with `prefix` (e.g. `http_routes[2]`) prepended to its field.
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        let field = match &mut self {
            Self::Regex { field, .. } | Self::Missing { field } | Self::Invalid { field, .. } => {
                field
            }
        };
        *field = if field.starts_with('[') {
            format!("{prefix}{field}")
        } else {
            format!("{prefix}.{field}")
        };
        self
    }

    fn missing(field: impl Into<String>) -> Self {
        Self::Missing {
            field: field.into(),
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

// === Specificity ===

/// How specific a path constraint is; variants are in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathRank {
    /// No path constraint, or the prefix `/` (which every path has).
    Any,
    Regex,
    /// A prefix of this many bytes (without a trailing `/`).
    Prefix(usize),
    /// An exact path of this many bytes.
    Exact(usize),
}

/// How specific a successful [`RouteMatch`] is; greater is more specific.
///
/// Ordered by the path (exact > longer prefix > regex > none), then by having a
/// method, then by the number of header matches, then of query-parameter matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    path: PathRank,
    method: bool,
    headers: usize,
    query_params: usize,
}

/// How specific a successful [`HostMatch`] is; greater is more specific.
///
/// Ordered: any host < a wildcard suffix (more labels is greater) < an exact name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostSpecificity(HostRank);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HostRank {
    Any,
    Suffix(usize),
    Exact,
}

// === RouteMatch ===

#[derive(Clone, Debug)]
enum PathMatch {
    Exact(Box<str>),
    /// Without its trailing `/`; never empty (the prefix `/` compiles to no match).
    Prefix(Box<str>),
    Regex(regex::Regex),
}

#[derive(Clone, Debug)]
enum HeaderValueMatch {
    Exact(HeaderValue),
    Regex(regex::bytes::Regex),
}

#[derive(Clone, Debug)]
struct HeaderMatch {
    name: HeaderName,
    value: HeaderValueMatch,
}

#[derive(Clone, Debug)]
enum QueryValueMatch {
    Exact(Box<str>),
    Regex(regex::Regex),
}

#[derive(Clone, Debug)]
struct QueryParamMatch {
    name: Box<str>,
    value: QueryValueMatch,
}

/// One compiled `HttpRouteMatch`: every constraint it sets must hold.
#[derive(Clone, Debug)]
pub struct RouteMatch {
    path: Option<PathMatch>,
    method: Option<Method>,
    headers: Box<[HeaderMatch]>,
    query_params: Box<[QueryParamMatch]>,
}

impl RouteMatch {
    /// Compiles one proto match; regexes are compiled here, once. Errors name the
    /// field, e.g. `path.regex: invalid regex "(": unclosed group`.
    pub fn from_proto(m: &proto::HttpRouteMatch) -> Result<Self, RouteError> {
        let path = m.path.as_ref().map(path_match).transpose()?.flatten();
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| header_match(h).map_err(|e| e.within(&format!("headers[{i}]"))))
            .collect::<Result<_, _>>()?;
        let query_params = m
            .query_params
            .iter()
            .enumerate()
            .map(|(i, q)| query_match(q).map_err(|e| e.within(&format!("query_params[{i}]"))))
            .collect::<Result<_, _>>()?;
        let method = m
            .method
            .clone()
            .map(Method::try_from)
            .transpose()
            .map_err(|e| RouteError::invalid("method", e.to_string()))?;
        Ok(Self {
            path,
            method,
            headers,
            query_params,
        })
    }

    /// Compiles a rule's list of matches, each error prefixed with `matches[i]`. An
    /// empty list matches everything (Gateway API), so it compiles to [`Self::any`].
    pub fn from_protos(ms: &[proto::HttpRouteMatch]) -> Result<Vec<Self>, RouteError> {
        if ms.is_empty() {
            return Ok(vec![Self::any()]);
        }
        ms.iter()
            .enumerate()
            .map(|(i, m)| Self::from_proto(m).map_err(|e| e.within(&format!("matches[{i}]"))))
            .collect()
    }

    /// Matches every request, like the path prefix `/`; the least specific match.
    pub fn any() -> Self {
        Self {
            path: None,
            method: None,
            headers: Box::new([]),
            query_params: Box::new([]),
        }
    }

    /// `None` if `req` does not match, else how specific the match is.
    pub fn matches<B>(&self, req: &Request<B>) -> Option<Specificity> {
        let path = match &self.path {
            None => PathRank::Any,
            Some(p) => p.matches(req.uri().path())?,
        };
        if let Some(m) = &self.method
            && req.method() != m
        {
            return None;
        }
        if !self.headers.iter().all(|h| h.matches(req.headers())) {
            return None;
        }
        if !self.query_params.is_empty() {
            let query = req.uri().query().unwrap_or("");
            if !self.query_params.iter().all(|q| q.matches(query)) {
                return None;
            }
        }
        Some(Specificity {
            path,
            method: self.method.is_some(),
            headers: self.headers.len(),
            query_params: self.query_params.len(),
        })
    }

    /// The greatest specificity among `matches` for `req`, if any matches.
    pub fn best_of<B>(matches: &[Self], req: &Request<B>) -> Option<Specificity> {
        matches.iter().filter_map(|m| m.matches(req)).max()
    }
}

fn path_match(p: &proto::PathMatch) -> Result<Option<PathMatch>, RouteError> {
    use proto::path_match::Kind;
    match p
        .kind
        .as_ref()
        .ok_or_else(|| RouteError::missing("path.kind"))?
    {
        Kind::Exact(s) => {
            if !s.starts_with('/') {
                return Err(RouteError::invalid(
                    "path.exact",
                    format!("{s:?} does not start with \"/\""),
                ));
            }
            Ok(Some(PathMatch::Exact(s.as_str().into())))
        }
        Kind::Prefix(s) => {
            if !s.starts_with('/') {
                return Err(RouteError::invalid(
                    "path.prefix",
                    format!("{s:?} does not start with \"/\""),
                ));
            }
            let trimmed = s.trim_end_matches('/');
            Ok((!trimmed.is_empty()).then(|| PathMatch::Prefix(trimmed.into())))
        }
        Kind::Regex(re) => Ok(Some(PathMatch::Regex(anchored(re, "path.regex")?))),
    }
}

fn header_match(h: &proto::HeaderMatch) -> Result<HeaderMatch, RouteError> {
    use proto::header_match::Value;
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| RouteError::invalid("name", format!("{:?} is not a header name", h.name)))?;
    let value = match h
        .value
        .as_ref()
        .ok_or_else(|| RouteError::missing("value"))?
    {
        Value::Exact(v) => HeaderValueMatch::Exact(HeaderValue::from_bytes(v).map_err(|_| {
            RouteError::invalid(
                "value.exact",
                format!(
                    "{:?} is not a header value",
                    String::from_utf8_lossy(v.as_slice())
                ),
            )
        })?),
        Value::Regex(re) => HeaderValueMatch::Regex(anchored_bytes(re, "value.regex")?),
    };
    Ok(HeaderMatch { name, value })
}

fn query_match(q: &proto::QueryParamMatch) -> Result<QueryParamMatch, RouteError> {
    use proto::query_param_match::Value;
    if q.name.is_empty() {
        return Err(RouteError::invalid("name", "empty"));
    }
    let value = match q
        .value
        .as_ref()
        .ok_or_else(|| RouteError::missing("value"))?
    {
        Value::Exact(v) => QueryValueMatch::Exact(v.as_str().into()),
        Value::Regex(re) => QueryValueMatch::Regex(anchored(re, "value.regex")?),
    };
    Ok(QueryParamMatch {
        name: q.name.as_str().into(),
        value,
    })
}

/// The short reason of a regex error: the last line of a syntax error ("unclosed
/// group"), without the multi-line excerpt the regex crate draws.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once("error: ") {
        Some((_, reason)) => reason.trim().to_string(),
        None => text.lines().last().unwrap_or_default().trim().to_string(),
    }
}

fn regex_error(field: &str, pattern: &str, e: &regex::Error) -> RouteError {
    RouteError::Regex {
        field: field.to_string(),
        pattern: pattern.to_string(),
        reason: regex_reason(e),
    }
}

/// Compiles `pattern` to match whole values. The pattern is first checked on its
/// own, so that one like `a)|(b` cannot escape the anchoring group.
fn anchored(pattern: &str, field: &str) -> Result<regex::Regex, RouteError> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(pattern).map_err(|e| regex_error(field, pattern, &e))?;
    build(&format!("^(?:{pattern})$")).map_err(|e| regex_error(field, pattern, &e))
}

/// [`anchored`] over bytes, for header values (which need not be UTF-8).
fn anchored_bytes(pattern: &str, field: &str) -> Result<regex::bytes::Regex, RouteError> {
    let build = |p: &str| {
        regex::bytes::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(pattern).map_err(|e| regex_error(field, pattern, &e))?;
    build(&format!("^(?:{pattern})$")).map_err(|e| regex_error(field, pattern, &e))
}

// === impl PathMatch ===

impl PathMatch {
    fn matches(&self, path: &str) -> Option<PathRank> {
        // A request in authority form (CONNECT) has an empty path.
        let path = if path.is_empty() { "/" } else { path };
        match self {
            Self::Exact(e) => (path == &**e).then_some(PathRank::Exact(e.len())),
            Self::Prefix(p) => {
                let rest = path.strip_prefix(&**p)?;
                (rest.is_empty() || rest.starts_with('/')).then_some(PathRank::Prefix(p.len()))
            }
            Self::Regex(re) => re.is_match(path).then_some(PathRank::Regex),
        }
    }
}

// === impl HeaderMatch ===

impl HeaderMatch {
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| match &self.value {
                HeaderValueMatch::Exact(want) => v == want,
                HeaderValueMatch::Regex(re) => re.is_match(v.as_bytes()),
            })
    }
}

// === impl QueryParamMatch ===

impl QueryParamMatch {
    /// Whether the first occurrence of the parameter in `query` matches.
    fn matches(&self, query: &str) -> bool {
        let Some(raw) = query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            percent_decoded_eq(name, &self.name).then_some(value)
        }) else {
            return false;
        };
        match &self.value {
            QueryValueMatch::Exact(want) => percent_decoded_eq(raw, want),
            QueryValueMatch::Regex(re) => percent_decode(raw).is_some_and(|v| re.is_match(&v)),
        }
    }
}

/// Bytes of `s` with `%XX` escapes decoded; malformed escapes stay as they are.
fn decoded_bytes(s: &str) -> impl Iterator<Item = u8> + '_ {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let c = *b.get(i)?;
        if c == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&h| hex(h)),
                b.get(i + 2).and_then(|&l| hex(l)),
            )
        {
            i += 3;
            return Some(h << 4 | l);
        }
        i += 1;
        Some(c)
    })
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether `raw`, percent-decoded, equals `want`; allocates nothing.
fn percent_decoded_eq(raw: &str, want: &str) -> bool {
    if !raw.contains('%') {
        return raw == want;
    }
    decoded_bytes(raw).eq(want.bytes())
}

/// `raw` percent-decoded; borrowed when it has no escapes, `None` when the result is
/// not UTF-8.
fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    String::from_utf8(decoded_bytes(raw).collect())
        .ok()
        .map(Cow::Owned)
}

// === HostMatch ===

#[derive(Clone, Debug)]
enum Host {
    /// Lowercase, without a trailing dot.
    Exact(Box<str>),
    /// Lowercase labels, most significant first (`*.example.com` is `[com, example]`).
    Suffix(Box<[Box<str>]>),
}

/// A route's hostnames: exact names or wildcard suffixes; an empty list matches any
/// host (and a request without one).
#[derive(Clone, Debug, Default)]
pub struct HostMatch {
    hosts: Box<[Host]>,
}

impl HostMatch {
    /// Matches every host.
    pub fn any() -> Self {
        Self::default()
    }

    /// Compiles a route's `hosts` list; errors name the entry, e.g.
    /// `hosts[1].suffix.reverse_labels[0]: empty label`.
    pub fn from_proto(hosts: &[proto::HostMatch]) -> Result<Self, RouteError> {
        use proto::host_match::Match;
        let hosts = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let field = format!("hosts[{i}]");
                match h.r#match.as_ref() {
                    None => Err(RouteError::missing(format!("{field}.match"))),
                    Some(Match::Exact(name)) => {
                        let name = name.trim_end_matches('.');
                        if name.is_empty() || name.contains(['*', ':', '/', ' ']) {
                            return Err(RouteError::invalid(
                                format!("{field}.exact"),
                                format!("{name:?} is not a hostname"),
                            ));
                        }
                        Ok(Host::Exact(name.to_ascii_lowercase().into()))
                    }
                    Some(Match::Suffix(s)) => s
                        .reverse_labels
                        .iter()
                        .enumerate()
                        .map(|(j, l)| {
                            if l.is_empty() || l.contains(['.', '*']) {
                                Err(RouteError::invalid(
                                    format!("{field}.suffix.reverse_labels[{j}]"),
                                    format!("{l:?} is not a single label"),
                                ))
                            } else {
                                Ok(l.to_ascii_lowercase().into_boxed_str())
                            }
                        })
                        .collect::<Result<_, _>>()
                        .map(Host::Suffix),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { hosts })
    }

    /// Whether `host` (a name without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        self.specificity(Some(host)).is_some()
    }

    /// How specifically `host` matches, if it does; `None` for a request without a
    /// host unless the list is empty.
    pub fn specificity(&self, host: Option<&str>) -> Option<HostSpecificity> {
        if self.hosts.is_empty() {
            return Some(HostSpecificity(HostRank::Any));
        }
        let host = host?.trim_end_matches('.');
        self.hosts
            .iter()
            .filter_map(|h| match h {
                Host::Exact(e) => e.eq_ignore_ascii_case(host).then_some(HostRank::Exact),
                Host::Suffix(labels) => {
                    has_wildcard_suffix(host, labels).then_some(HostRank::Suffix(labels.len()))
                }
            })
            .max()
            .map(HostSpecificity)
    }
}

/// Whether `host` is `*.` followed by `labels` (reversed), with at least one label in
/// place of the `*`.
fn has_wildcard_suffix(host: &str, labels: &[Box<str>]) -> bool {
    let mut rest = host;
    for label in labels {
        let Some((head, last)) = rest.rsplit_once('.') else {
            return false;
        };
        if !last.eq_ignore_ascii_case(label) {
            return false;
        }
        rest = head;
    }
    !rest.is_empty()
}

/// The request's host name, without port: from the URI's authority (HTTP/2,
/// absolute-form HTTP/1) or the `Host` header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    if let Some(h) = req.uri().host() {
        return Some(h.trim_start_matches('[').trim_end_matches(']'));
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']').map(|(ip, _)| ip);
    }
    Some(match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    })
}

// === Picking a route ===

/// Picks the best candidate: the greatest [`Specificity`] among each candidate's
/// matches; ties go to the earlier candidate. Returns the candidate's index. A
/// candidate with no matches never matches (compile an empty rule with
/// [`RouteMatch::from_protos`], which gives [`RouteMatch::any`]).
pub fn best<'a, B>(
    req: &Request<B>,
    candidates: impl IntoIterator<Item = &'a [RouteMatch]>,
) -> Option<usize> {
    pick(
        candidates
            .into_iter()
            .map(|ms| RouteMatch::best_of(ms, req)),
    )
}

/// Like [`best`], with each candidate's hostnames ranked first: a route whose
/// hosts do not match the request's is skipped, and a more specific host match
/// wins over a more specific path match.
pub fn best_with_hosts<'a, B>(
    req: &Request<B>,
    candidates: impl IntoIterator<Item = (&'a HostMatch, &'a [RouteMatch])>,
) -> Option<usize> {
    let host = request_host(req);
    pick(candidates.into_iter().map(|(hosts, ms)| {
        let h = hosts.specificity(host)?;
        Some((h, RouteMatch::best_of(ms, req)?))
    }))
}

/// The index of the greatest `Some`, the earliest among equals.
fn pick<T: Ord>(ranks: impl Iterator<Item = Option<T>>) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for (i, rank) in ranks.enumerate() {
        let Some(rank) = rank else { continue };
        if best.as_ref().is_none_or(|(_, b)| rank > *b) {
            best = Some((i, rank));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::http_types::HttpMethod;
    use proto::{header_match, host_match, path_match, query_param_match};

    // --- builders for proto matches ---

    fn path(kind: path_match::Kind) -> proto::HttpRouteMatch {
        proto::HttpRouteMatch {
            path: Some(proto::PathMatch { kind: Some(kind) }),
            ..Default::default()
        }
    }
    fn exact(p: &str) -> proto::HttpRouteMatch {
        path(path_match::Kind::Exact(p.into()))
    }
    fn prefix(p: &str) -> proto::HttpRouteMatch {
        path(path_match::Kind::Prefix(p.into()))
    }
    fn regex(p: &str) -> proto::HttpRouteMatch {
        path(path_match::Kind::Regex(p.into()))
    }
    fn with_method(mut m: proto::HttpRouteMatch, method: Method) -> proto::HttpRouteMatch {
        m.method = Some(HttpMethod::from(method));
        m
    }
    fn with_header(
        mut m: proto::HttpRouteMatch,
        name: &str,
        v: header_match::Value,
    ) -> proto::HttpRouteMatch {
        m.headers.push(proto::HeaderMatch {
            name: name.into(),
            value: Some(v),
        });
        m
    }
    fn with_query(
        mut m: proto::HttpRouteMatch,
        name: &str,
        v: query_param_match::Value,
    ) -> proto::HttpRouteMatch {
        m.query_params.push(proto::QueryParamMatch {
            name: name.into(),
            value: Some(v),
        });
        m
    }
    fn hx(v: &str) -> header_match::Value {
        header_match::Value::Exact(v.as_bytes().to_vec())
    }
    fn hre(v: &str) -> header_match::Value {
        header_match::Value::Regex(v.into())
    }
    fn qx(v: &str) -> query_param_match::Value {
        query_param_match::Value::Exact(v.into())
    }
    fn qre(v: &str) -> query_param_match::Value {
        query_param_match::Value::Regex(v.into())
    }

    fn any_proto() -> proto::HttpRouteMatch {
        proto::HttpRouteMatch::default()
    }
    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }
    fn get(uri: &str) -> Request<()> {
        req(Method::GET, uri, &[])
    }
    fn compile(m: proto::HttpRouteMatch) -> RouteMatch {
        RouteMatch::from_proto(&m).unwrap()
    }

    #[test]
    fn paths_match_like_the_gateway_api() {
        // (match, path, matches?)
        let table: &[(proto::HttpRouteMatch, &str, bool)] = &[
            (exact("/api"), "/api", true),
            (exact("/api"), "/api/", false),
            (exact("/api"), "/api?x=1", true),
            (exact("/api"), "/API", false),
            (prefix("/api"), "/api", true),
            (prefix("/api"), "/api/", true),
            (prefix("/api"), "/api/v1/x", true),
            (prefix("/api"), "/apix", false),
            (prefix("/api"), "/ap", false),
            (prefix("/api/"), "/api", true),
            (prefix("/api/"), "/api/x", true),
            (prefix("/api/"), "/apix", false),
            (prefix("/api//"), "/api", true),
            (prefix("/"), "/", true),
            (prefix("/"), "/anything/at/all", true),
            (regex("/api/.*"), "/api/x", true),
            (regex("/api/.*"), "/v1/api/x", false),
            (regex("/api"), "/api/x", false),
            (regex("/a|/ab"), "/ab", true),
            (regex("^(?:/books).*"), "/books/1", true),
            (regex("[0-9]+"), "/123", false),
            (proto::HttpRouteMatch::default(), "/whatever", true),
        ];
        for (i, (m, p, want)) in table.iter().enumerate() {
            let got = compile(m.clone()).matches(&get(p)).is_some();
            assert_eq!(got, *want, "case {i}: {m:?} against {p}");
        }
        assert!(RouteMatch::any().matches(&get("/x")).is_some());
    }

    #[test]
    fn methods_headers_and_query_params_must_all_hold() {
        let m = compile(with_query(
            with_header(
                with_method(prefix("/api"), Method::GET),
                "X-Canary",
                hx("yes"),
            ),
            "v",
            qx("2"),
        ));
        // (method, uri, headers, matches?)
        type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], bool);
        let table: &[Case<'_>] = &[
            (Method::GET, "/api?v=2", &[("x-canary", "yes")], true),
            (Method::GET, "/api?a=1&v=2", &[("X-CANARY", "yes")], true),
            (Method::POST, "/api?v=2", &[("x-canary", "yes")], false),
            (Method::GET, "/api?v=3", &[("x-canary", "yes")], false),
            (Method::GET, "/api", &[("x-canary", "yes")], false),
            (Method::GET, "/api?v=2", &[], false),
            (Method::GET, "/api?v=2", &[("x-canary", "YES")], false),
            (Method::GET, "/other?v=2", &[("x-canary", "yes")], false),
            // Any value of a repeated header may match.
            (
                Method::GET,
                "/api?v=2",
                &[("x-canary", "no"), ("x-canary", "yes")],
                true,
            ),
            // Only the first occurrence of a query parameter counts.
            (Method::GET, "/api?v=1&v=2", &[("x-canary", "yes")], false),
        ];
        for (i, (method, uri, headers, want)) in table.iter().enumerate() {
            let got = m.matches(&req(method.clone(), uri, headers)).is_some();
            assert_eq!(got, *want, "case {i}: {method} {uri} {headers:?}");
        }
    }

    #[test]
    fn header_and_query_regexes_are_anchored_and_decoded() {
        let h = compile(with_header(any_proto(), "x-user", hre("admin-[0-9]+")));
        assert!(
            h.matches(&req(Method::GET, "/", &[("x-user", "admin-7")]))
                .is_some()
        );
        assert!(
            h.matches(&req(Method::GET, "/", &[("x-user", "admin-7x")]))
                .is_none()
        );
        assert!(
            h.matches(&req(Method::GET, "/", &[("x-user", "xadmin-7")]))
                .is_none()
        );

        // (match, query, matches?)
        let table: &[(query_param_match::Value, &str, bool)] = &[
            (qx("a b"), "q=a%20b", true),
            (qx("a b"), "q=a+b", false),
            (qx("a/b"), "q=a%2Fb", true),
            (qx("a/b"), "q=a%2fb", true),
            (qx("100%"), "q=100%", true),
            (qx("%zz"), "q=%zz", true),
            (qx(""), "q", true),
            (qx(""), "q=", true),
            (qx("x"), "qq=x", false),
            (qre("[a-z]+ [a-z]+"), "q=hello%20world", true),
            (qre("[a-z]+"), "q=hello%20world", false),
            (qre("[a-z]+"), "q=abc", true),
            (qre("b"), "q=abc", false),
            // Invalid UTF-8 after decoding never matches a regex.
            (qre(".*"), "q=%FF", false),
        ];
        for (i, (v, query, want)) in table.iter().enumerate() {
            let m = compile(with_query(any_proto(), "q", v.clone()));
            let got = m.matches(&get(&format!("/?{query}"))).is_some();
            assert_eq!(got, *want, "case {i}: {v:?} against {query}");
        }
        // Parameter names are decoded too.
        let m = compile(with_query(any_proto(), "a b", qx("1")));
        assert!(m.matches(&get("/?a%20b=1")).is_some());
    }

    #[test]
    fn specificity_orders_path_then_method_then_headers_then_query() {
        let spec = |m: proto::HttpRouteMatch, r: &Request<()>| compile(m).matches(r).unwrap();
        let r = req(Method::GET, "/api/v1?x=1", &[("h", "1"), ("g", "1")]);
        // Increasing specificity, each strictly greater than the one before.
        let ladder = [
            spec(proto::HttpRouteMatch::default(), &r),
            spec(
                with_method(proto::HttpRouteMatch::default(), Method::GET),
                &r,
            ),
            spec(regex("/api/.*"), &r),
            spec(with_header(regex("/api/.*"), "h", hx("1")), &r),
            spec(with_method(regex("/api/.*"), Method::GET), &r),
            spec(prefix("/api"), &r),
            spec(with_query(prefix("/api"), "x", qx("1")), &r),
            spec(with_header(prefix("/api"), "h", hx("1")), &r),
            spec(
                with_header(with_header(prefix("/api"), "h", hx("1")), "g", hx("1")),
                &r,
            ),
            spec(with_method(prefix("/api"), Method::GET), &r),
            spec(prefix("/api/v1"), &r),
            spec(exact("/api/v1"), &r),
        ];
        for w in ladder.windows(2) {
            assert!(
                w[0] < w[1],
                "{:?} should be less specific than {:?}",
                w[0],
                w[1]
            );
        }
        // The prefix "/" constrains nothing: it ranks with no path at all.
        assert_eq!(
            spec(prefix("/"), &r),
            spec(proto::HttpRouteMatch::default(), &r)
        );
        assert_eq!(RouteMatch::any().matches(&r), Some(ladder[0]));
    }

    #[test]
    fn best_picks_the_most_specific_candidate_and_ties_go_first() {
        let routes: Vec<Vec<RouteMatch>> = vec![
            vec![RouteMatch::any()],                                   // 0: default
            vec![compile(with_method(regex("/api/.*"), Method::GET))], // 1: SMI-style
            vec![compile(prefix("/api")), compile(exact("/login"))],   // 2
            vec![compile(prefix("/api/admin"))],                       // 3
            vec![compile(prefix("/api"))],                             // 4: ties with 2
            vec![],                                                    // 5: never matches
        ];
        let pick = |r: &Request<()>| best(r, routes.iter().map(Vec::as_slice));
        // (method, uri, expected candidate)
        let table: &[(Method, &str, Option<usize>)] = &[
            (Method::GET, "/", Some(0)),
            (Method::GET, "/static/x", Some(0)),
            (Method::GET, "/api/x", Some(2)),
            (Method::GET, "/api", Some(2)),
            (Method::POST, "/api/x", Some(2)),
            (Method::GET, "/api/admin/users", Some(3)),
            (Method::GET, "/login", Some(2)),
            (Method::GET, "/apix", Some(0)),
        ];
        for (method, uri, want) in table {
            assert_eq!(
                pick(&req(method.clone(), uri, &[])),
                *want,
                "{method} {uri}"
            );
        }
        // Without the prefix routes, the SMI-style regex route beats the default.
        let smi = &routes[..2];
        assert_eq!(best(&get("/api/x"), smi.iter().map(Vec::as_slice)), Some(1));
        assert_eq!(
            best(
                &req(Method::POST, "/api/x", &[]),
                smi.iter().map(Vec::as_slice)
            ),
            Some(0)
        );
        // No candidate matches.
        assert_eq!(
            best(&get("/x"), routes[3..].iter().map(Vec::as_slice)),
            None
        );
        assert_eq!(best(&get("/x"), std::iter::empty()), None);
    }

    fn hosts(hs: &[host_match::Match]) -> HostMatch {
        HostMatch::from_proto(
            &hs.iter()
                .map(|m| proto::HostMatch {
                    r#match: Some(m.clone()),
                })
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }
    fn hexact(h: &str) -> host_match::Match {
        host_match::Match::Exact(h.into())
    }
    fn hsuffix(labels: &[&str]) -> host_match::Match {
        host_match::Match::Suffix(host_match::Suffix {
            reverse_labels: labels.iter().map(|l| l.to_string()).collect(),
        })
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard_suffix() {
        let exact = hosts(&[hexact("Web.Shop.svc")]);
        let wild = hosts(&[hsuffix(&["svc", "shop"])]);
        // (matcher, host, matches?)
        let table: &[(&HostMatch, &str, bool)] = &[
            (&exact, "web.shop.svc", true),
            (&exact, "WEB.shop.svc.", true),
            (&exact, "api.shop.svc", false),
            (&wild, "web.shop.svc", true),
            (&wild, "a.b.shop.svc", true),
            (&wild, "WEB.SHOP.SVC", true),
            (&wild, "shop.svc", false),
            (&wild, "webshop.svc", false),
            (&wild, "svc", false),
        ];
        for (m, host, want) in table {
            assert_eq!(m.matches(host), *want, "{m:?} against {host}");
        }
        assert!(HostMatch::any().matches("anything"));
        assert!(HostMatch::any().specificity(None).is_some());
        assert!(exact.specificity(None).is_none());

        // The request's host comes from the URI or the Host header, without the port.
        for (r, want) in [
            (get("http://web.shop.svc:8080/x"), Some("web.shop.svc")),
            (
                req(Method::GET, "/x", &[("host", "web.shop.svc:8080")]),
                Some("web.shop.svc"),
            ),
            (req(Method::GET, "/x", &[("host", "[::1]:80")]), Some("::1")),
            (get("http://[::1]:80/x"), Some("::1")),
            (req(Method::GET, "/x", &[("host", "web")]), Some("web")),
            (get("/x"), None),
        ] {
            assert_eq!(request_host(&r), want, "{r:?}");
        }
    }

    #[test]
    fn host_precedence_comes_before_path_precedence() {
        let any = HostMatch::any();
        let wild = hosts(&[hsuffix(&["shop"])]);
        let longer = hosts(&[hsuffix(&["shop", "web"])]);
        let named = hosts(&[hexact("api.web.shop")]);
        let specific = vec![compile(exact("/api/v1"))];
        let general = vec![RouteMatch::any()];
        let cands = [
            (&any, specific.as_slice()),
            (&wild, general.as_slice()),
            (&longer, general.as_slice()),
            (&named, general.as_slice()),
        ];
        let pick = |host: &str| {
            best_with_hosts(
                &req(Method::GET, "/api/v1", &[("host", host)]),
                cands.iter().copied(),
            )
        };
        assert_eq!(pick("api.web.shop"), Some(3));
        assert_eq!(pick("x.web.shop"), Some(2));
        assert_eq!(pick("x.shop"), Some(1));
        assert_eq!(pick("elsewhere"), Some(0));
        let only_exact = [(&named, general.as_slice())];
        assert_eq!(
            best_with_hosts(&get("/"), only_exact.iter().copied()),
            None,
            "no host, no match"
        );
    }

    #[test]
    fn every_malformed_field_is_named() {
        let bad_method = proto::HttpRouteMatch {
            method: Some(HttpMethod {
                r#type: Some(linkerd2_proxy_api::http_types::http_method::Type::Registered(99)),
            }),
            ..Default::default()
        };
        let bad_unregistered = proto::HttpRouteMatch {
            method: Some(HttpMethod {
                r#type: Some(
                    linkerd2_proxy_api::http_types::http_method::Type::Unregistered("GE T".into()),
                ),
            }),
            ..Default::default()
        };
        let no_method_type = proto::HttpRouteMatch {
            method: Some(HttpMethod { r#type: None }),
            ..Default::default()
        };
        let no_path_kind = proto::HttpRouteMatch {
            path: Some(proto::PathMatch { kind: None }),
            ..Default::default()
        };
        let no_header_value = {
            let mut m = any_proto();
            m.headers.push(proto::HeaderMatch {
                name: "x".into(),
                value: None,
            });
            m
        };
        let no_query_value = {
            let mut m = any_proto();
            m.query_params.push(proto::QueryParamMatch {
                name: "x".into(),
                value: None,
            });
            m
        };
        // (match, expected message)
        let table: Vec<(proto::HttpRouteMatch, &str)> = vec![
            (
                regex("("),
                r#"path.regex: invalid regex "(": unclosed group"#,
            ),
            (
                regex("a)|(b"),
                r#"path.regex: invalid regex "a)|(b": unopened group"#,
            ),
            (exact("api"), r#"path.exact: "api" does not start with "/""#),
            (
                prefix("api"),
                r#"path.prefix: "api" does not start with "/""#,
            ),
            (no_path_kind, "path.kind: missing"),
            (
                with_header(with_header(any_proto(), "ok", hx("1")), "bad name", hx("1")),
                r#"headers[1].name: "bad name" is not a header name"#,
            ),
            (
                with_header(any_proto(), "x", hx("a\nb")),
                r#"headers[0].value.exact: "a\nb" is not a header value"#,
            ),
            (
                with_header(any_proto(), "x", hre("[")),
                r#"headers[0].value.regex: invalid regex "[": unclosed character class"#,
            ),
            (no_header_value, "headers[0].value: missing"),
            (
                with_query(any_proto(), "", qx("1")),
                "query_params[0].name: empty",
            ),
            (
                with_query(any_proto(), "x", qre("a{99999}")),
                "query_params[0].value.regex: invalid regex \"a{99999}\"",
            ),
            (no_query_value, "query_params[0].value: missing"),
            (bad_method, "method: unexpected registered method: 99"),
            (bad_unregistered, "method: invalid unregistered method"),
            (no_method_type, "method: missing HTTP method type"),
        ];
        for (m, want) in table {
            let err = RouteMatch::from_proto(&m).unwrap_err().to_string();
            assert!(err.starts_with(want), "{m:?}:\n got: {err}\nwant: {want}");
            assert!(!err.contains('\n'), "one line: {err}");
        }

        // Context is prefixed by the caller.
        let err = RouteMatch::from_protos(&[exact("/"), regex("(")])
            .unwrap_err()
            .within("rules[2]");
        assert_eq!(err.field(), "rules[2].matches[1].path.regex");
        let err = RouteError::missing("[3].x").within("routes");
        assert_eq!(err.field(), "routes[3].x");

        // Hosts.
        let host_table: Vec<(proto::HostMatch, &str)> = vec![
            (
                proto::HostMatch { r#match: None },
                "hosts[0].match: missing",
            ),
            (
                proto::HostMatch {
                    r#match: Some(hexact("")),
                },
                r#"hosts[0].exact: "" is not a hostname"#,
            ),
            (
                proto::HostMatch {
                    r#match: Some(hexact("*.shop")),
                },
                r#"hosts[0].exact: "*.shop" is not a hostname"#,
            ),
            (
                proto::HostMatch {
                    r#match: Some(hsuffix(&["shop", ""])),
                },
                r#"hosts[0].suffix.reverse_labels[1]: "" is not a single label"#,
            ),
            (
                proto::HostMatch {
                    r#match: Some(hsuffix(&["a.b"])),
                },
                r#"hosts[0].suffix.reverse_labels[0]: "a.b" is not a single label"#,
            ),
        ];
        for (h, want) in host_table {
            let err = HostMatch::from_proto(std::slice::from_ref(&h))
                .unwrap_err()
                .to_string();
            assert_eq!(err, want, "{h:?}");
        }
    }

    #[test]
    fn empty_rules_match_everything() {
        let ms = RouteMatch::from_protos(&[]).unwrap();
        assert_eq!(ms.len(), 1);
        assert!(RouteMatch::best_of(&ms, &get("/x")).is_some());
        // A wildcard suffix with no labels matches any host with a name.
        let h = hosts(&[hsuffix(&[])]);
        assert!(h.matches("web"));
    }

    #[test]
    fn matching_known_values_does_not_allocate_in_the_common_case() {
        // Decoding compares lazily; escapes only cost a copy for regex matches.
        assert!(matches!(percent_decode("plain"), Some(Cow::Borrowed(_))));
        assert!(matches!(percent_decode("a%20b"), Some(Cow::Owned(ref s)) if s == "a b"));
        assert!(percent_decoded_eq("a%20b", "a b"));
        assert!(!percent_decoded_eq("a%20b", "a%20b"));
        assert!(!percent_decoded_eq("a%2", "a"));
    }
}
