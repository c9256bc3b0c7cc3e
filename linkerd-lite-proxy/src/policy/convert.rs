//! From the proxy API's `OutboundPolicy` message to the model. Whatever the control
//! plane sends, this never panics: an invalid route is logged with the field at
//! fault and dropped, and the rest of the policy still applies.

use std::{
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{HeaderName, HeaderValue, StatusCode, uri::Scheme};
use linkerd2_proxy_api::{
    http_route as hr, http_types, meta,
    outbound::{self as api, backend, http_route as route, proxy_protocol},
};

use super::{
    filter::{FailureInjector, Filter, HeaderModifier, PathModifier, Redirect},
    matching::{Host, RuleMatches},
    metrics::{ResourceRef, RouteFamilies, RouteLabels},
    model::{Backend, BackendTarget, OutboundPolicy, PolicyState, Route, Rule, Timeouts},
};
use crate::{
    backoff::ExponentialBackoff,
    balance::{FailureAccrual, Queue},
    retry::RetryPolicy,
};

/// What a conversion needs besides the message.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The target the policy is for, as the proxy names it (for logs and to spot
    /// backends that are the target itself).
    pub key: &'a str,
    /// Where route metrics are registered.
    pub families: &'a RouteFamilies,
}

/// A field of the policy that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The path of the field, e.g. `rules[0].retry.backoff`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The matcher's errors name their field in their message too; keep it once.
fn from_route_error(e: crate::route::RouteError) -> InvalidField {
    let field = e.field().to_string();
    let message = e.to_string();
    let reason = message
        .strip_prefix(&format!("{field}: "))
        .unwrap_or(&message)
        .to_string();
    InvalidField { field, reason }
}

fn invalid(field: impl Into<String>, reason: impl ToString) -> InvalidField {
    InvalidField {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Retry defaults for fields the control plane leaves out.
const DEFAULT_RETRY_BACKOFF: ExponentialBackoff = ExponentialBackoff {
    min: Duration::from_millis(25),
    max: Duration::from_millis(250),
    jitter: 1.0,
};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Converts a policy message. Targets without HTTP routes (opaque, TLS, gRPC-only
/// policies) fall back to routing without policies.
pub fn policy(msg: &api::OutboundPolicy, ctx: &Ctx<'_>) -> PolicyState {
    use proxy_protocol::Kind;
    let parent = Arc::new(
        resource(msg.metadata.as_ref()).unwrap_or_else(|| ResourceRef {
            kind: "default".into(),
            name: ctx.key.into(),
            ..ResourceRef::default()
        }),
    );
    let (http1, http2) = match msg.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(Kind::Detect(d)) => match (&d.http1, &d.http2) {
            (Some(h1), Some(h2)) => (
                (&h1.routes[..], h1.failure_accrual.as_ref()),
                (&h2.routes[..], h2.failure_accrual.as_ref()),
            ),
            (Some(h1), None) => {
                let h = (&h1.routes[..], h1.failure_accrual.as_ref());
                (h, h)
            }
            (None, Some(h2)) => {
                let h = (&h2.routes[..], h2.failure_accrual.as_ref());
                (h, h)
            }
            (None, None) => return fallback(ctx, "detect has no http1 or http2 routes"),
        },
        Some(Kind::Http1(h)) => {
            let h = (&h.routes[..], h.failure_accrual.as_ref());
            (h, h)
        }
        Some(Kind::Http2(h)) => {
            let h = (&h.routes[..], h.failure_accrual.as_ref());
            (h, h)
        }
        Some(Kind::Opaque(_)) => return fallback(ctx, "the target is opaque"),
        Some(Kind::Grpc(_)) => return fallback(ctx, "gRPC routes are not supported"),
        Some(Kind::Tls(_)) => return fallback(ctx, "TLS routes are not supported"),
        None => return fallback(ctx, "protocol is missing"),
    };
    let http1_routes = routes(http1.0, &parent, ctx, "http1");
    let http2_routes = if http2.0 == http1.0 {
        http1_routes.clone()
    } else {
        routes(http2.0, &parent, ctx, "http2")
    };
    // Breakers are per endpoint, whatever the protocol: HTTP/1's settings win.
    let accrual = http1
        .1
        .or(http2.1)
        .and_then(|a| failure_accrual(a, ctx.key));
    PolicyState::Known(Arc::new(OutboundPolicy {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        parent,
        http1: http1_routes,
        http2: http2_routes,
        accrual,
    }))
}

fn fallback(ctx: &Ctx<'_>, why: &str) -> PolicyState {
    tracing::debug!(target = ctx.key, why, "no HTTP policy; routing without one");
    PolicyState::Fallback
}

fn routes(
    protos: &[api::HttpRoute],
    parent: &Arc<ResourceRef>,
    ctx: &Ctx<'_>,
    proto: &str,
) -> Arc<[Route]> {
    protos
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match http_route(r, parent, ctx) {
            Ok(route) => Some(route),
            Err(error) => {
                let name = resource(r.metadata.as_ref())
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "(unnamed)".into());
                tracing::warn!(
                    target = ctx.key,
                    route = %name,
                    field = format!("{proto}.routes[{i}].{}", error.field),
                    reason = %error.reason,
                    "dropping an invalid route from the outbound policy"
                );
                None
            }
        })
        .collect()
}

fn resource(m: Option<&meta::Metadata>) -> Option<ResourceRef> {
    match m?.kind.as_ref()? {
        meta::metadata::Kind::Default(name) => Some(ResourceRef {
            kind: "default".into(),
            name: name.as_str().into(),
            ..ResourceRef::default()
        }),
        meta::metadata::Kind::Resource(r) => Some(ResourceRef {
            group: r.group.as_str().into(),
            kind: r.kind.as_str().into(),
            namespace: r.namespace.as_str().into(),
            name: r.name.as_str().into(),
            port: u16::try_from(r.port).unwrap_or(0),
        }),
    }
}

fn http_route(
    r: &api::HttpRoute,
    parent: &Arc<ResourceRef>,
    ctx: &Ctx<'_>,
) -> Result<Route, InvalidField> {
    let meta =
        Arc::new(resource(r.metadata.as_ref()).ok_or_else(|| invalid("metadata", "missing"))?);
    let hosts = Host::from_proto(&r.hosts).map_err(from_route_error)?;
    if r.rules.is_empty() {
        return Err(invalid("rules", "a route needs at least one rule"));
    }
    let labels = RouteLabels {
        parent: parent.clone(),
        route: meta.clone(),
    };
    let rules = r
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            http_rule(rule, parent, ctx, &labels).map_err(|e| InvalidField {
                field: format!("rules[{i}].{}", e.field),
                reason: e.reason,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Route {
        meta,
        hosts,
        any_host: r.hosts.is_empty(),
        rules,
    })
}

#[allow(deprecated)] // `request_timeout` is read as a fallback for older servers
fn http_rule(
    r: &route::Rule,
    parent: &ResourceRef,
    ctx: &Ctx<'_>,
    labels: &RouteLabels,
) -> Result<Rule, InvalidField> {
    let matches = RuleMatches::from_proto(&r.matches).map_err(from_route_error)?;
    let filters = filters(&r.filters, "filters")?;
    let backends = distribution(r.backends.as_ref(), parent, ctx)?;
    let t = r.timeouts.as_ref();
    let timeouts = Timeouts {
        request: opt_duration(t.and_then(|t| t.request), "timeouts.request")?,
        response: match opt_duration(t.and_then(|t| t.response), "timeouts.response")? {
            Some(d) => Some(d),
            None => opt_duration(r.request_timeout, "requestTimeout")?,
        },
    };
    let retry = r.retry.as_ref().map(retry).transpose()?;
    let retry_metrics = if retry.is_some() {
        ctx.families.retry(labels)
    } else {
        Default::default()
    };
    Ok(Rule {
        matches,
        filters,
        backends,
        timeouts,
        retry,
        retry_metrics,
    })
}

fn distribution(
    d: Option<&route::Distribution>,
    parent: &ResourceRef,
    ctx: &Ctx<'_>,
) -> Result<Vec<Backend>, InvalidField> {
    use route::distribution::Kind;
    let kind = d
        .and_then(|d| d.kind.as_ref())
        .ok_or_else(|| invalid("backends", "missing"))?;
    match kind {
        Kind::Empty(_) => Ok(Vec::new()),
        // Without health-aware fallback, the first backend takes the traffic.
        Kind::FirstAvailable(f) => f
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let field = format!("backends.first_available.backends[{i}]");
                route_backend(b, u32::from(i == 0), parent, ctx, &field)
            })
            .collect(),
        Kind::RandomAvailable(r) => r
            .backends
            .iter()
            .enumerate()
            .map(|(i, wb)| {
                let field = format!("backends.random_available.backends[{i}]");
                let b = wb
                    .backend
                    .as_ref()
                    .ok_or_else(|| invalid(format!("{field}.backend"), "missing"))?;
                route_backend(b, wb.weight, parent, ctx, &field)
            })
            .collect(),
    }
}

fn route_backend(
    rb: &route::RouteBackend,
    weight: u32,
    parent: &ResourceRef,
    ctx: &Ctx<'_>,
    field: &str,
) -> Result<Backend, InvalidField> {
    let b = rb
        .backend
        .as_ref()
        .ok_or_else(|| invalid(format!("{field}.backend"), "missing"))?;
    let target = match b.kind.as_ref() {
        None => return Err(invalid(format!("{field}.backend.kind"), "missing")),
        Some(backend::Kind::Forward(addr)) => {
            BackendTarget::Addr(addr.addr.as_ref().and_then(tcp_addr).ok_or_else(|| {
                invalid(
                    format!("{field}.backend.forward.addr"),
                    "not an IP address and port",
                )
            })?)
        }
        Some(backend::Kind::Balancer(p2c)) => {
            use backend::endpoint_discovery::Kind;
            let path = match p2c.discovery.as_ref().and_then(|d| d.kind.as_ref()) {
                Some(Kind::Dst(dst)) if !dst.path.is_empty() => &dst.path,
                _ => {
                    return Err(invalid(
                        format!("{field}.backend.balancer.discovery"),
                        "needs a destination path",
                    ));
                }
            };
            let meta = resource(b.metadata.as_ref());
            if path == ctx.key || meta.is_some_and(|m| m == *parent && m.port != 0) {
                BackendTarget::Parent
            } else {
                BackendTarget::Authority(path.as_str().into())
            }
        }
    };
    let queue = match &b.queue {
        None => None,
        Some(q) => Some(Queue {
            capacity: usize::try_from(q.capacity).unwrap_or(usize::MAX),
            failfast: opt_duration(
                q.failfast_timeout,
                &format!("{field}.backend.queue.failfast_timeout"),
            )?
            .ok_or_else(|| invalid(format!("{field}.backend.queue.failfast_timeout"), "missing"))?,
        }),
    };
    Ok(Backend {
        target,
        weight,
        filters: filters(&rb.filters, &format!("{field}.filters"))?,
        queue,
    })
}

fn tcp_addr(a: &linkerd2_proxy_api::net::TcpAddress) -> Option<SocketAddr> {
    let ip = IpAddr::try_from(a.ip?).ok()?;
    Some(SocketAddr::new(ip, u16::try_from(a.port).ok()?))
}

fn filters(protos: &[route::Filter], field: &str) -> Result<Vec<Filter>, InvalidField> {
    use route::filter::Kind;
    protos
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = format!("{field}[{i}]");
            Ok(match &f.kind {
                None => Filter::Unknown,
                Some(Kind::RequestHeaderModifier(m)) => Filter::RequestHeaders(header_modifier(
                    m.add.as_ref(),
                    m.set.as_ref(),
                    &m.remove,
                    &format!("{field}.request_header_modifier"),
                )?),
                Some(Kind::ResponseHeaderModifier(m)) => Filter::ResponseHeaders(header_modifier(
                    m.add.as_ref(),
                    m.set.as_ref(),
                    &m.remove,
                    &format!("{field}.response_header_modifier"),
                )?),
                Some(Kind::Redirect(r)) => {
                    Filter::Redirect(redirect(r, &format!("{field}.redirect"))?)
                }
                Some(Kind::FailureInjector(f)) => {
                    Filter::Fail(failure_injector(f, &format!("{field}.failure_injector"))?)
                }
            })
        })
        .collect()
}

fn header_modifier(
    add: Option<&http_types::Headers>,
    set: Option<&http_types::Headers>,
    remove: &[String],
    field: &str,
) -> Result<HeaderModifier, InvalidField> {
    let pairs = |h: Option<&http_types::Headers>, part: &str| {
        h.map(|h| &h.headers[..])
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let f = || format!("{field}.{part}[{i}]");
                let name = HeaderName::try_from(h.name.as_str()).map_err(|_| {
                    invalid(
                        format!("{}.name", f()),
                        format!("{:?} is not a header name", h.name),
                    )
                })?;
                let value = HeaderValue::from_bytes(&h.value)
                    .map_err(|_| invalid(format!("{}.value", f()), "not a valid header value"))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, InvalidField>>()
    };
    Ok(HeaderModifier {
        add: pairs(add, "add")?,
        set: pairs(set, "set")?,
        remove: remove
            .iter()
            .enumerate()
            .map(|(i, n)| {
                HeaderName::try_from(n.as_str()).map_err(|_| {
                    invalid(
                        format!("{field}.remove[{i}]"),
                        format!("{n:?} is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    })
}

fn redirect(r: &hr::RequestRedirect, field: &str) -> Result<Redirect, InvalidField> {
    let scheme = match r.scheme.as_ref().and_then(|s| s.r#type.as_ref()) {
        None => None,
        Some(t) => {
            let s: std::borrow::Cow<'static, str> = t
                .try_into()
                .map_err(|e: http_types::InvalidScheme| invalid(format!("{field}.scheme"), e))?;
            Some(Scheme::try_from(&*s).map_err(|e| invalid(format!("{field}.scheme"), e))?)
        }
    };
    let path = match r.path.as_ref().and_then(|p| p.replace.as_ref()) {
        None => None,
        Some(hr::path_modifier::Replace::Full(p)) => Some(PathModifier::Full(p.clone())),
        Some(hr::path_modifier::Replace::Prefix(p)) => Some(PathModifier::Prefix(p.clone())),
    };
    let port = match r.port {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| invalid(format!("{field}.port"), format!("{p} is not a TCP port")))?,
        ),
    };
    let status = match r.status {
        0 => StatusCode::MOVED_PERMANENTLY,
        s => u16::try_from(s)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(StatusCode::is_redirection)
            .ok_or_else(|| {
                invalid(
                    format!("{field}.status"),
                    format!("{s} is not a redirect status"),
                )
            })?,
    };
    Ok(Redirect {
        scheme,
        host: (!r.host.is_empty()).then(|| r.host.clone()),
        path,
        port,
        status,
    })
}

fn failure_injector(
    f: &hr::HttpFailureInjector,
    field: &str,
) -> Result<FailureInjector, InvalidField> {
    let status = u16::try_from(f.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            invalid(
                format!("{field}.status"),
                format!("{} is not an HTTP status", f.status),
            )
        })?;
    let (numerator, denominator) = match &f.ratio {
        None => (1, 1),
        Some(r) if r.denominator == 0 => {
            return Err(invalid(
                format!("{field}.ratio.denominator"),
                "must not be zero",
            ));
        }
        Some(r) => (r.numerator.min(r.denominator), r.denominator),
    };
    let message = if f.message.is_empty() {
        "failure injected by the route"
    } else {
        &f.message
    };
    Ok(FailureInjector {
        status,
        message: message.into(),
        numerator,
        denominator,
    })
}

fn retry(r: &route::Retry) -> Result<RetryPolicy, InvalidField> {
    let status_ranges = r
        .conditions
        .as_ref()
        .map(|c| &c.status_ranges[..])
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            status_range(
                s.start,
                s.end,
                &format!("retry.conditions.status_ranges[{i}]"),
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(RetryPolicy {
        max_retries: r.max_retries,
        max_request_bytes: usize::try_from(r.max_request_bytes).unwrap_or(usize::MAX),
        status_ranges,
        timeout: opt_duration(r.timeout, "retry.timeout")?,
        backoff: match &r.backoff {
            None => DEFAULT_RETRY_BACKOFF,
            Some(b) => backoff(b, "retry.backoff")?,
        },
    })
}

fn status_range(start: u32, end: u32, field: &str) -> Result<RangeInclusive<u16>, InvalidField> {
    let ok = |s: u32| (100..=599).contains(&s);
    if !ok(start) || !ok(end) || start > end {
        return Err(invalid(
            field,
            format!("{start}-{end} is not a range of HTTP statuses"),
        ));
    }
    // Both fit: checked to be at most 599.
    Ok(start as u16..=end as u16)
}

fn backoff(b: &api::ExponentialBackoff, field: &str) -> Result<ExponentialBackoff, InvalidField> {
    let min = opt_duration(b.min_backoff, &format!("{field}.min_backoff"))?.unwrap_or_default();
    let max = opt_duration(b.max_backoff, &format!("{field}.max_backoff"))?.unwrap_or(min);
    ExponentialBackoff::new(min, max, f64::from(b.jitter_ratio)).map_err(|e| invalid(field, e))
}

fn failure_accrual(a: &api::FailureAccrual, key: &str) -> Option<FailureAccrual> {
    use api::failure_accrual::Kind;
    let (max_failures, b, field) = match a.kind.as_ref()? {
        Kind::ConsecutiveFailures(c) => {
            (c.max_failures, c.backoff.as_ref(), "consecutive_failures")
        }
        Kind::Unified(u) => {
            if u.success_rate_threshold > 0.0 {
                tracing::warn!(
                    target = key,
                    "failure_accrual.unified.success_rate_threshold is not supported; only max_consecutive_failures applies"
                );
            }
            (u.max_consecutive_failures, u.backoff.as_ref(), "unified")
        }
    };
    if max_failures == 0 {
        return None;
    }
    let field = format!("failure_accrual.{field}.backoff");
    let checked = b
        .ok_or_else(|| invalid(&field, "missing"))
        .and_then(|b| backoff(b, &field));
    match checked {
        Ok(backoff) => Some(FailureAccrual {
            max_failures,
            backoff,
        }),
        Err(error) => {
            tracing::warn!(target = key, %error, "failure accrual is off: its settings are invalid");
            None
        }
    }
}

fn opt_duration(
    d: Option<prost_types::Duration>,
    field: &str,
) -> Result<Option<Duration>, InvalidField> {
    d.map(|d| {
        Duration::try_from(d).map_err(|_| {
            invalid(
                field,
                format!(
                    "{}s {}ns is not a non-negative duration",
                    d.seconds, d.nanos
                ),
            )
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests;
