//! Choosing a rule for a request: the shared matcher ([`crate::route`]) ranks every
//! rule of every route, hosts first, with Gateway API precedence; ties go to the
//! earlier route and rule.

use linkerd2_proxy_api::http_route as api;

use super::model::{Route, Rule};
use crate::route::{self, HostMatch, RouteError, RouteMatch};

/// A rule's compiled matches.
#[derive(Debug)]
pub struct RuleMatches {
    /// Any one selects the rule; never empty (no matches compile to "any").
    pub matches: Vec<RouteMatch>,
    /// Path prefixes among the matches, for redirects that rewrite a prefix.
    pub prefixes: Vec<String>,
    /// Some match has no constraint at all: every request matches the rule.
    pub catch_all: bool,
}

impl RuleMatches {
    /// Compiles a rule's matches (regexes included); an empty list matches every
    /// request.
    pub fn from_proto(matches: &[api::HttpRouteMatch]) -> Result<Self, RouteError> {
        let prefixes = matches
            .iter()
            .filter_map(|m| match m.path.as_ref()?.kind.as_ref()? {
                api::path_match::Kind::Prefix(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        Ok(Self {
            matches: RouteMatch::from_protos(matches)?,
            prefixes,
            catch_all: matches.is_empty() || matches.iter().any(matches_everything),
        })
    }
}

/// Whether a match constrains nothing: no path or the prefix `/`, and no method,
/// header or query parameter.
fn matches_everything(m: &api::HttpRouteMatch) -> bool {
    let any_path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        None => true,
        Some(api::path_match::Kind::Prefix(p)) => {
            p.trim_end_matches('/').is_empty() && p.starts_with('/')
        }
        Some(_) => false,
    };
    any_path && m.method.is_none() && m.headers.is_empty() && m.query_params.is_empty()
}

/// A route's compiled host names.
pub type Host = HostMatch;

/// The rule for `req`: the most specific match across all routes' rules. Walks the
/// rules twice and allocates nothing; a policy of one catch-all rule for any host
/// (the destination's default, and splits without matches) skips matching.
pub fn select<'r, B>(routes: &'r [Route], req: &http::Request<B>) -> Option<(&'r Route, &'r Rule)> {
    if let [route] = routes
        && route.any_host
        && let [rule] = &route.rules[..]
        && rule.matches.catch_all
    {
        return Some((route, rule));
    }
    let candidates = routes.iter().flat_map(|r| {
        r.rules
            .iter()
            .map(move |rule| (&r.hosts, &rule.matches.matches[..]))
    });
    let i = route::best_with_hosts(req, candidates)?;
    routes
        .iter()
        .flat_map(|r| r.rules.iter().map(move |rule| (r, rule)))
        .nth(i)
}
