//! The inbound HTTP service: strip spoofed identity headers, add the verified one,
//! undo HTTP/1-over-HTTP/2, and forward to the application.

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use http::{HeaderValue, Request, Response, Version, uri::Authority};
use hyper::body::Incoming;

use super::accept::Inbound;
use crate::{
    http::{Body, ORIG_PROTO_HEADER, ProxyError, authority_of, forward::EndpointClients, is_grpc},
    tls::CLIENT_ID_HEADER,
};

/// Serves the requests of one accepted connection.
#[derive(Clone, Debug)]
pub struct InboundHttp {
    inbound: Arc<Inbound>,
    app: Arc<EndpointClients>,
    client_id: Option<HeaderValue>,
    fallback_authority: Authority,
    authorized: bool,
}

impl InboundHttp {
    /// A service forwarding to `app`, for a client with `client_id`; when not
    /// `authorized` by the port's policy, every request is refused with 403.
    pub fn new(
        inbound: Arc<Inbound>,
        app: Arc<EndpointClients>,
        client_id: Option<&str>,
        port: u16,
        authorized: bool,
    ) -> Self {
        Self {
            authorized,
            inbound,
            app,
            client_id: client_id.and_then(|id| HeaderValue::from_str(id).ok()),
            fallback_authority: Authority::from_maybe_shared(format!("localhost:{port}"))
                .unwrap_or_else(|_| Authority::from_static("localhost")),
        }
    }

    async fn handle(self, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        if !self.authorized {
            return Err(ProxyError::Forbidden);
        }
        let headers = req.headers_mut();
        headers.remove(CLIENT_ID_HEADER);
        if let Some(id) = &self.client_id {
            headers.insert(CLIENT_ID_HEADER, id.clone());
        }
        if let Some(orig) = headers.remove(ORIG_PROTO_HEADER) {
            *req.version_mut() = if orig.as_bytes() == b"HTTP/1.0" {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
        }
        let authority = authority_of(&req).unwrap_or_else(|| self.fallback_authority.clone());
        self.app
            .forward(req, &authority, self.inbound.config.response_timeout)
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
