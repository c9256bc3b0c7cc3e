//! Prometheus metrics with Linkerd's names, so existing dashboards work.
//!
//! Label sets hold `Arc<str>`s built once per target, endpoint or connection; the hot
//! path clones reference counts and never formats or allocates label strings.
//!
//! prometheus-client was chosen over metrics-exporter-prometheus on cost; see the
//! README's metrics section for the measurement.

use std::{fmt::Write as _, sync::Arc};

use prometheus_client::{
    encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Which side of the proxy traffic is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the local application out.
    Outbound,
    /// From the network to the local application.
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// Labels shared by every HTTP metric of a target (and endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpLabels {
    /// Traffic direction.
    pub direction: Direction,
    /// The target authority.
    pub authority: Arc<str>,
    /// Whether the hop was mTLS: `true`, or the reason it was not.
    pub tls: &'static str,
    /// The peer's identity: `server_id` outbound, `client_id` inbound.
    pub peer_id: Option<Arc<str>>,
    /// The destination's metric labels, each already prefixed with `dst_`.
    pub dst: Arc<[(Arc<str>, Arc<str>)]>,
}

impl EncodeLabelSet for HttpLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("direction", self.direction.as_str()).encode(enc.encode_label())?;
        ("authority", &*self.authority).encode(enc.encode_label())?;
        ("tls", self.tls).encode(enc.encode_label())?;
        if let Some(id) = &self.peer_id {
            let key = match self.direction {
                Direction::Outbound => "server_id",
                Direction::Inbound => "client_id",
            };
            (key, &**id).encode(enc.encode_label())?;
        }
        for (k, v) in self.dst.iter() {
            (&**k, &**v).encode(enc.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of a response: the target's plus the status and its classification.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RspLabels {
    /// The target's labels.
    pub base: HttpLabels,
    /// HTTP status; 0 when no response was received.
    pub status_code: u16,
    /// `success` or `failure` (5xx, errors, or a non-zero gRPC status).
    pub success: bool,
}

impl EncodeLabelSet for RspLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.base.encode(enc)?;
        if self.status_code != 0 {
            ("status_code", self.status_code).encode(enc.encode_label())?;
        }
        let class = if self.success { "success" } else { "failure" };
        ("classification", class).encode(enc.encode_label())
    }
}

/// Labels of a transport connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    /// Traffic direction.
    pub direction: Direction,
    /// `src` for accepted connections, `dst` for connections the proxy opened.
    pub peer: &'static str,
    /// Whether the connection is mTLS: `true`, or the reason it is not.
    pub tls: &'static str,
    /// The peer's identity when known.
    pub peer_id: Option<Arc<str>>,
    /// The target authority for connections the proxy opened.
    pub authority: Option<Arc<str>>,
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("direction", self.direction.as_str()).encode(enc.encode_label())?;
        ("peer", self.peer).encode(enc.encode_label())?;
        ("tls", self.tls).encode(enc.encode_label())?;
        if let Some(id) = &self.peer_id {
            let key = if self.peer == "src" {
                "client_id"
            } else {
                "server_id"
            };
            (key, &**id).encode(enc.encode_label())?;
        }
        if let Some(a) = &self.authority {
            ("authority", &**a).encode(enc.encode_label())?;
        }
        Ok(())
    }
}

/// A policy resource as metric labels: `{prefix}_group`, `{prefix}_kind` and
/// `{prefix}_name`, e.g. a route or an authorization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceLabels {
    /// API group; empty for defaults.
    pub group: Arc<str>,
    /// Kind, e.g. `default` or `traffictarget`.
    pub kind: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

/// Labels of an inbound authorization decision on an HTTP request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthzLabels {
    /// The application port the request was for.
    pub target_port: u16,
    /// The route the request matched.
    pub route: ResourceLabels,
    /// The authorization that admitted it; `None` for denials.
    pub authz: Option<ResourceLabels>,
}

impl EncodeLabelSet for AuthzLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("target_port", self.target_port).encode(enc.encode_label())?;
        ("route_group", &*self.route.group).encode(enc.encode_label())?;
        ("route_kind", &*self.route.kind).encode(enc.encode_label())?;
        ("route_name", &*self.route.name).encode(enc.encode_label())?;
        if let Some(a) = &self.authz {
            ("authz_group", &*a.group).encode(enc.encode_label())?;
            ("authz_kind", &*a.kind).encode(enc.encode_label())?;
            ("authz_name", &*a.name).encode(enc.encode_label())?;
        }
        Ok(())
    }
}

/// Linkerd's latency buckets, in milliseconds.
const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS.iter().copied())
}

/// Every metric family the proxy exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `request_total`.
    pub requests: Family<HttpLabels, Counter>,
    /// `response_total`.
    pub responses: Family<RspLabels, Counter>,
    /// `response_latency_ms`.
    pub latency: Family<RspLabels, Histogram, fn() -> Histogram>,
    /// `tcp_open_total`.
    pub tcp_open: Family<TcpLabels, Counter>,
    /// `tcp_open_connections`.
    pub tcp_open_conns: Family<TcpLabels, Gauge>,
    /// `tcp_close_total`.
    pub tcp_close: Family<TcpLabels, Counter>,
    /// `tcp_read_bytes_total`.
    pub tcp_read: Family<TcpLabels, Counter>,
    /// `tcp_write_bytes_total`.
    pub tcp_write: Family<TcpLabels, Counter>,
    /// `inbound_http_authz_allow_total`.
    pub http_authz_allow: Family<AuthzLabels, Counter>,
    /// `inbound_http_authz_deny_total`.
    pub http_authz_deny: Family<AuthzLabels, Counter>,
    /// `outbound_http_route_*`.
    pub routes: crate::policy::RouteFamilies,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            tcp_open: Family::default(),
            tcp_open_conns: Family::default(),
            tcp_close: Family::default(),
            tcp_read: Family::default(),
            tcp_write: Family::default(),
            http_authz_allow: Family::default(),
            http_authz_deny: Family::default(),
            routes: Default::default(),
            registry: Arc::new(Registry::default()),
        };
        r.register("request", "HTTP requests sent", m.requests.clone());
        r.register("response", "HTTP responses received", m.responses.clone());
        r.register(
            "response_latency_ms",
            "Time until response headers, in milliseconds",
            m.latency.clone(),
        );
        r.register("tcp_open", "Connections opened", m.tcp_open.clone());
        r.register(
            "tcp_open_connections",
            "Connections currently open",
            m.tcp_open_conns.clone(),
        );
        r.register("tcp_close", "Connections closed", m.tcp_close.clone());
        r.register(
            "tcp_read_bytes",
            "Bytes read from peers",
            m.tcp_read.clone(),
        );
        r.register(
            "tcp_write_bytes",
            "Bytes written to peers",
            m.tcp_write.clone(),
        );
        r.register(
            "inbound_http_authz_allow",
            "Inbound HTTP requests an authorization admitted",
            m.http_authz_allow.clone(),
        );
        r.register(
            "inbound_http_authz_deny",
            "Inbound HTTP requests refused because no authorization of their route admitted the client",
            m.http_authz_deny.clone(),
        );
        m.routes.register(&mut r);
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }

    /// Records an opened connection; the returned guard records its close and keeps
    /// the byte counters at hand.
    pub fn tcp_conn(&self, labels: TcpLabels) -> TcpConn {
        self.tcp_open.get_or_create(&labels).inc();
        self.tcp_open_conns.get_or_create(&labels).inc();
        TcpConn {
            read: self.tcp_read.get_or_create_owned(&labels),
            write: self.tcp_write.get_or_create_owned(&labels),
            metrics: self.clone(),
            labels,
        }
    }
}

/// An open connection's metrics; records the close when dropped.
#[derive(Debug)]
pub struct TcpConn {
    /// Bytes read from the peer.
    pub read: Counter,
    /// Bytes written to the peer.
    pub write: Counter,
    metrics: Metrics,
    labels: TcpLabels,
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        self.metrics
            .tcp_open_conns
            .get_or_create(&self.labels)
            .dec();
        self.metrics.tcp_close.get_or_create(&self.labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_use_linkerds_names_and_labels() {
        let m = Metrics::new();
        let base = HttpLabels {
            direction: Direction::Outbound,
            authority: "web.shop.svc.cluster.local:80".into(),
            tls: "true",
            peer_id: Some("web.shop.serviceaccount.identity.linkerd-lite.cluster.local".into()),
            dst: vec![("dst_namespace".into(), "shop".into())].into(),
        };
        m.requests.get_or_create(&base).inc();
        let rsp = RspLabels {
            base,
            status_code: 503,
            success: false,
        };
        m.responses.get_or_create(&rsp).inc();
        m.latency.get_or_create(&rsp).observe(2.5);
        drop(m.tcp_conn(TcpLabels {
            direction: Direction::Inbound,
            peer: "src",
            tls: "no_identity",
            peer_id: None,
            authority: None,
        }));
        let text = m.encode();
        for want in [
            "request_total{direction=\"outbound\",authority=\"web.shop.svc.cluster.local:80\",tls=\"true\",server_id=\"web.shop.serviceaccount.identity.linkerd-lite.cluster.local\",dst_namespace=\"shop\"} 1",
            "response_total{direction=\"outbound\"",
            "status_code=\"503\",classification=\"failure\"} 1",
            "response_latency_ms_bucket{",
            "tcp_open_total{direction=\"inbound\",peer=\"src\",tls=\"no_identity\"} 1",
            "tcp_close_total{direction=\"inbound\",peer=\"src\",tls=\"no_identity\"} 1",
            "tcp_open_connections{direction=\"inbound\",peer=\"src\",tls=\"no_identity\"} 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
