//! The inbound HTTP service: authorize each request by its route, strip spoofed
//! identity headers, add the verified one, undo HTTP/1-over-HTTP/2, and forward to
//! the application.

use std::{convert::Infallible, future::Future, net::IpAddr, pin::Pin, sync::Arc};

use http::{HeaderValue, Request, Response, Version, uri::Authority};
use hyper::body::Incoming;

use super::{accept::Inbound, policy::PortWatch};
use crate::{
    http::{Body, ORIG_PROTO_HEADER, ProxyError, authority_of, forward::EndpointClients, is_grpc},
    tls::CLIENT_ID_HEADER,
};

/// Serves the requests of one accepted connection.
#[derive(Clone, Debug)]
pub struct InboundHttp(Arc<Conn>);

/// What every request of a connection shares.
#[derive(Debug)]
struct Conn {
    inbound: Arc<Inbound>,
    app: Arc<EndpointClients>,
    client_id: Option<(Box<str>, HeaderValue)>,
    peer_ip: IpAddr,
    fallback_authority: Authority,
    policy: PortWatch,
}

impl InboundHttp {
    /// A service forwarding to `app` for a client at `peer_ip` with the verified
    /// `client_id`, each request authorized by the route it matches in `policy`'s
    /// current version.
    pub fn new(
        inbound: Arc<Inbound>,
        app: Arc<EndpointClients>,
        client_id: Option<&str>,
        peer_ip: IpAddr,
        port: u16,
        policy: PortWatch,
    ) -> Self {
        Self(Arc::new(Conn {
            inbound,
            app,
            client_id: client_id
                .and_then(|id| Some((Box::from(id), HeaderValue::from_str(id).ok()?))),
            peer_ip,
            fallback_authority: Authority::from_maybe_shared(format!("localhost:{port}"))
                .unwrap_or_else(|_| Authority::from_static("localhost")),
            policy,
        }))
    }

    async fn handle(self, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let conn = &*self.0;
        let client_id = conn.client_id.as_ref();
        conn.policy
            .current()
            .authorize_http(&req, conn.peer_ip, client_id.map(|(id, _)| &**id))?;
        let headers = req.headers_mut();
        headers.remove(CLIENT_ID_HEADER);
        if let Some((_, id)) = client_id {
            headers.insert(CLIENT_ID_HEADER, id.clone());
        }
        if let Some(orig) = headers.remove(ORIG_PROTO_HEADER) {
            *req.version_mut() = if orig.as_bytes() == b"HTTP/1.0" {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
        }
        let authority = authority_of(&req).unwrap_or_else(|| conn.fallback_authority.clone());
        conn.app
            .forward(req, &authority, conn.inbound.config.response_timeout)
            .await
    }
}

impl hyper::service::Service<Request<Incoming>> for InboundHttp {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let grpc = is_grpc(&req);
            Ok(this
                .handle(req)
                .await
                .unwrap_or_else(|e| e.into_response(grpc)))
        })
    }
}
