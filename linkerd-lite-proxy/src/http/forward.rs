//! Sending one request to an endpoint: picking HTTP/1 or HTTP/2, carrying HTTP/1 over
//! HTTP/2 between proxies, bridging upgrades, and recording Linkerd's HTTP metrics.

use std::{sync::Arc, time::Duration};

use http::{
    HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
    uri::Authority,
};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use super::{
    Body, ORIG_PROTO_HEADER, ProxyError, boxed,
    classify::{ClassifyBody, Recorder, grpc_ok},
    client::Connector,
    pool::{Http1Pool, Http2Conn},
};
use crate::{
    metrics::{HttpLabels, Metrics},
    retry::ReqBody,
};

/// The clients and metric handles of one endpoint, built once when discovery adds it.
#[derive(Debug)]
pub struct EndpointClients {
    h1: Arc<Http1Pool>,
    h2: Http2Conn,
    /// Opens opaque connections to the endpoint.
    pub tcp: Connector,
    upgrade_h1: bool,
    requests: Counter,
    recorder: Arc<Recorder>,
}

impl EndpointClients {
    /// Clients over `h1`, `h2` and `tcp` connectors. With `upgrade_h1`, the peer is a
    /// proxy and HTTP/1 requests travel to it over HTTP/2.
    pub fn new(
        metrics: &Metrics,
        labels: HttpLabels,
        connectors: [Connector; 3],
        upgrade_h1: bool,
    ) -> Self {
        let [h1, h2, tcp] = connectors;
        Self {
            h1: Http1Pool::new(h1),
            h2: Http2Conn::new(h2),
            tcp,
            upgrade_h1,
            requests: metrics.requests.get_or_create_owned(&labels),
            recorder: Arc::new(Recorder::new(metrics, labels)),
        }
    }

    /// Sends `req` to the endpoint under `authority`.
    pub async fn forward(
        &self,
        req: Request<impl Into<ReqBody>>,
        authority: &Authority,
        timeout: Option<Duration>,
    ) -> Result<Response<Body>, ProxyError> {
        let mut req = req.map(Into::into);
        self.requests.inc();
        let start = Instant::now();
        let upgrade = is_upgrade(&req);
        let mut orig_version = None;
        let h2 = if upgrade {
            false
        } else if req.version() == Version::HTTP_2 {
            true
        } else if self.upgrade_h1 {
            let v = req.version();
            let proto = if v == Version::HTTP_10 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            };
            strip_hop_by_hop(req.headers_mut());
            req.headers_mut()
                .insert(ORIG_PROTO_HEADER, HeaderValue::from_static(proto));
            *req.version_mut() = Version::HTTP_2;
            orig_version = Some(v);
            true
        } else {
            strip_hop_by_hop(req.headers_mut());
            false
        };
        if h2 && let Some(uri) = absolute(req.uri(), authority) {
            *req.uri_mut() = uri;
        }
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let is_connect = req.method() == Method::CONNECT;

        let sent = async {
            if h2 {
                self.h2.send(req).await
            } else {
                self.h1.send(req, authority).await
            }
        };
        let res = match timeout {
            Some(t) => tokio::time::timeout(t, sent)
                .await
                .map_err(|_| ProxyError::Timeout)?,
            None => sent.await,
        };
        let mut rsp = match res {
            Ok(rsp) => rsp,
            Err(e) => {
                self.recorder.latency(0, false, start);
                self.recorder.response(0, false);
                return Err(e);
            }
        };
        let status = rsp.status();
        let http_ok = !status.is_server_error();
        let grpc_in_trailers =
            http_ok && is_grpc_response(&rsp) && grpc_ok(rsp.headers()).is_none();
        let success = http_ok && grpc_ok(rsp.headers()).unwrap_or(true);
        self.recorder.latency(status.as_u16(), success, start);
        if !grpc_in_trailers {
            self.recorder.response(status.as_u16(), success);
        }

        if let Some(v) = orig_version {
            rsp.headers_mut().remove(ORIG_PROTO_HEADER);
            *rsp.version_mut() = v;
        }
        let switched =
            status == StatusCode::SWITCHING_PROTOCOLS || (is_connect && status.is_success());
        if let (Some(client_upgrade), true) = (client_upgrade, switched) {
            let server_upgrade = hyper::upgrade::on(&mut rsp);
            tokio::spawn(async move {
                let (Ok(c), Ok(s)) = tokio::join!(client_upgrade, server_upgrade) else {
                    tracing::debug!("upgrade did not complete");
                    return;
                };
                let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            });
        }
        if grpc_in_trailers {
            let rec = self.recorder.clone();
            let code = status.as_u16();
            return Ok(rsp.map(|b| boxed(ClassifyBody::new(b, rec, code))));
        }
        Ok(rsp.map(boxed))
    }
}

fn is_grpc_response<B>(rsp: &Response<B>) -> bool {
    rsp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a request asks to switch protocols (WebSocket) or tunnel (CONNECT).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    if req.method() == Method::CONNECT {
        return true;
    }
    req.version() <= Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the headers that describe one hop only.
pub fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    if let header::Entry::Occupied(e) = h.entry(header::CONNECTION) {
        let (_, values) = e.remove_entry_mult();
        let values: Vec<HeaderValue> = values.collect();
        let named = values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for n in named {
            if let Ok(n) = HeaderName::from_bytes(n.trim().as_bytes()) {
                h.remove(n);
            }
        }
    }
    for n in [KEEP_ALIVE, PROXY_CONNECTION, header::UPGRADE] {
        h.remove(n);
    }
}

/// The absolute URI an HTTP/2 request needs, when `uri` lacks the scheme or the
/// authority.
fn absolute(uri: &Uri, authority: &Authority) -> Option<Uri> {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return None;
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_and_hop_by_hop_headers_are_recognised() {
        let ws = Request::get("/chat")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&ws));
        let plain = Request::get("/").header("upgrade", "h2c").body(()).unwrap();
        assert!(!is_upgrade(&plain));
        let mut h = http::HeaderMap::new();
        h.insert("connection", "x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-end", "2".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["x-end"]
        );
    }

    #[test]
    fn origin_form_uris_gain_the_authority() {
        let a: Authority = "web:80".parse().unwrap();
        let uri = absolute(&"/a?b=1".parse().unwrap(), &a).unwrap();
        assert_eq!(uri.to_string(), "http://web:80/a?b=1");
        assert!(absolute(&"http://x:1/".parse().unwrap(), &a).is_none());
    }
}
