//! Route filters: header modifiers, redirects and failure injection, as Gateway API
//! defines them. A filter kind the proxy does not know fails its requests with 500
//! rather than being skipped: skipping it could, say, let through requests a
//! filter meant to stop.

use std::sync::Arc;

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header,
    uri::{Authority, Scheme},
};
use http_body_util::Empty;
use rand::Rng;

use crate::http::{Body, ProxyError, boxed};

/// One filter of a rule or backend.
#[derive(Clone, Debug)]
pub enum Filter {
    /// Changes the request's headers.
    RequestHeaders(HeaderModifier),
    /// Changes the response's headers.
    ResponseHeaders(HeaderModifier),
    /// Answers with a redirect instead of forwarding.
    Redirect(Redirect),
    /// Answers a share of requests with an error.
    Fail(FailureInjector),
    /// A filter kind this proxy does not implement: its requests answer 500.
    Unknown,
}

/// Header changes, applied in Gateway API's order: add, set, remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Appended to existing values.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Replacing existing values.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Removed.
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

/// A redirect: each part left `None` keeps the request's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The new scheme.
    pub scheme: Option<Scheme>,
    /// The new host.
    pub host: Option<String>,
    /// How the path changes.
    pub path: Option<PathModifier>,
    /// The new port.
    pub port: Option<u16>,
    /// The status to answer with (3xx).
    pub status: StatusCode,
}

/// How a redirect rewrites the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// Replaces the whole path.
    Full(String),
    /// Replaces the path prefix the rule matched.
    Prefix(String),
}

/// Answers a share of requests with `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureInjector {
    /// The status to answer with.
    pub status: StatusCode,
    /// The reason, sent in `l5d-proxy-error`.
    pub message: Arc<str>,
    /// Share of requests failed: `numerator / denominator`, denominator > 0.
    pub numerator: u32,
    /// See `numerator`.
    pub denominator: u32,
}

/// Applies request filters in order. `Ok(Some(_))` is an answer that replaces
/// forwarding (a redirect); `prefixes` are the rule's path-prefix matches.
pub fn on_request<B>(
    filters: &[Filter],
    req: &mut Request<B>,
    authority: &Authority,
    prefixes: &[String],
) -> Result<Option<Response<Body>>, ProxyError> {
    for f in filters {
        match f {
            Filter::RequestHeaders(m) => m.apply(req.headers_mut()),
            Filter::ResponseHeaders(_) => {}
            Filter::Redirect(r) => {
                let location = r.location(req, authority, prefixes)?;
                let mut rsp = Response::new(boxed(Empty::<Bytes>::new()));
                *rsp.status_mut() = r.status;
                rsp.headers_mut().insert(header::LOCATION, location);
                return Ok(Some(rsp));
            }
            Filter::Fail(f) => {
                let hit = f.numerator >= f.denominator
                    || rand::rng().random_ratio(f.numerator, f.denominator);
                if hit {
                    return Err(ProxyError::Injected {
                        status: f.status,
                        message: f.message.clone(),
                    });
                }
            }
            Filter::Unknown => {
                return Err(ProxyError::InvalidRoute(
                    "route has a filter this proxy does not support",
                ));
            }
        }
    }
    Ok(None)
}

/// Applies response filters in order.
pub fn on_response(filters: &[Filter], rsp: &mut Response<Body>) {
    for f in filters {
        if let Filter::ResponseHeaders(m) = f {
            m.apply(rsp.headers_mut());
        }
    }
}

impl Redirect {
    fn location<B>(
        &self,
        req: &Request<B>,
        authority: &Authority,
        prefixes: &[String],
    ) -> Result<HeaderValue, ProxyError> {
        let scheme = self
            .scheme
            .clone()
            .or_else(|| req.uri().scheme().cloned())
            .unwrap_or(Scheme::HTTP);
        let host = self.host.as_deref().unwrap_or_else(|| authority.host());
        let port = self
            .port
            .or_else(|| self.host.is_none().then(|| authority.port_u16()).flatten())
            .filter(|p| Some(*p) != default_port(&scheme));
        let path = req.uri().path();
        let path = match &self.path {
            None => path.to_string(),
            Some(PathModifier::Full(p)) => p.clone(),
            Some(PathModifier::Prefix(replacement)) => {
                let matched = prefixes
                    .iter()
                    .filter(|p| prefix_matches(p, path))
                    .max_by_key(|p| p.len())
                    .ok_or(ProxyError::InvalidRoute(
                        "redirect rewrites a path prefix the rule did not match",
                    ))?;
                replace_prefix(path, matched, replacement)
            }
        };
        let mut loc = format!("{scheme}://{host}");
        if let Some(port) = port {
            loc.push_str(&format!(":{port}"));
        }
        loc.push_str(&path);
        if let Some(q) = req.uri().query() {
            loc.push('?');
            loc.push_str(q);
        }
        HeaderValue::try_from(loc)
            .map_err(|_| ProxyError::InvalidRoute("redirect location is not a valid header"))
    }
}

fn default_port(scheme: &Scheme) -> Option<u16> {
    if *scheme == Scheme::HTTP {
        Some(80)
    } else if *scheme == Scheme::HTTPS {
        Some(443)
    } else {
        None
    }
}

/// Gateway API prefix matching: whole path segments only.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty()
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = path
        .strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or(path);
    let mut out = replacement.trim_end_matches('/').to_string();
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(path: Option<PathModifier>) -> Filter {
        Filter::Redirect(Redirect {
            scheme: None,
            host: Some("new.example".into()),
            path,
            port: None,
            status: StatusCode::FOUND,
        })
    }

    fn location(f: &Filter, uri: &str, prefixes: &[&str]) -> Result<String, String> {
        let mut req = Request::get(uri).body(()).unwrap();
        let authority: Authority = "web.shop:8080".parse().unwrap();
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        match on_request(std::slice::from_ref(f), &mut req, &authority, &prefixes) {
            Ok(Some(rsp)) => {
                assert_eq!(rsp.status(), StatusCode::FOUND);
                Ok(rsp.headers()[header::LOCATION]
                    .to_str()
                    .unwrap()
                    .to_string())
            }
            Ok(None) => Err("no answer".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn redirects_rewrite_host_and_path() {
        assert_eq!(
            location(&redirect(None), "/a/b?x=1", &[]),
            Ok("http://new.example/a/b?x=1".into())
        );
        let full = redirect(Some(PathModifier::Full("/c".into())));
        assert_eq!(
            location(&full, "/a/b", &[]),
            Ok("http://new.example/c".into())
        );
        let prefix = redirect(Some(PathModifier::Prefix("/v2".into())));
        assert_eq!(
            location(&prefix, "/v1/users/7", &["/", "/v1"]),
            Ok("http://new.example/v2/users/7".into())
        );
        assert_eq!(
            location(&prefix, "/v1x", &["/v1"]),
            Err("redirect rewrites a path prefix the rule did not match".into())
        );
        // Keeping the host keeps its port.
        let same_host = Filter::Redirect(Redirect {
            scheme: Some(Scheme::HTTPS),
            host: None,
            path: None,
            port: None,
            status: StatusCode::FOUND,
        });
        assert_eq!(
            location(&same_host, "/", &[]),
            Ok("https://web.shop:8080/".into())
        );
    }

    #[test]
    fn header_modifiers_add_set_then_remove() {
        let m = HeaderModifier {
            add: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("2"),
            )],
            set: vec![(
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("new"),
            )],
            remove: vec![HeaderName::from_static("x-c")],
        };
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("old"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        m.apply(&mut h);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(h["x-b"], "new");
        assert!(!h.contains_key("x-c"));
    }

    #[test]
    fn unknown_filters_and_injected_failures_answer_errors() {
        let mut req = Request::get("/").body(()).unwrap();
        let a: Authority = "web:80".parse().unwrap();
        let err = on_request(&[Filter::Unknown], &mut req, &a, &[]).unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let always = Filter::Fail(FailureInjector {
            status: StatusCode::IM_A_TEAPOT,
            message: "chaos".into(),
            numerator: 1,
            denominator: 1,
        });
        let err = on_request(&[always], &mut req, &a, &[]).unwrap_err();
        assert_eq!(err.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(err.to_string(), "chaos");
        let never = Filter::Fail(FailureInjector {
            status: StatusCode::IM_A_TEAPOT,
            message: "chaos".into(),
            numerator: 0,
            denominator: 1,
        });
        assert!(on_request(&[never], &mut req, &a, &[]).unwrap().is_none());
    }
}
