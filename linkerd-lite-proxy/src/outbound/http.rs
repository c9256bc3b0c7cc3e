//! The outbound HTTP service: route each request by its target's policy, or to its
//! target's balancer.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, uri::Authority};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use super::{Outbound, Target, accept::addr_key, routes, target::Plan, tcp};
use crate::{
    http::{Body, ProxyError, authority_of, boxed, client::Dest, is_grpc},
    retry::ReqBody,
};

/// Routes the requests of one accepted connection.
#[derive(Clone, Debug)]
pub struct OutboundHttp {
    outbound: Arc<Outbound>,
    orig: Option<SocketAddr>,
    /// The connection's last target: most connections talk to one.
    last: Arc<Mutex<Option<Arc<Target>>>>,
    tracker: TaskTracker,
}

impl OutboundHttp {
    /// A service for a connection with original destination `orig` (`None` in local
    /// mode).
    pub fn new(outbound: Arc<Outbound>, orig: Option<SocketAddr>, tracker: TaskTracker) -> Self {
        Self {
            outbound,
            orig,
            last: Arc::default(),
            tracker,
        }
    }

    fn target(&self, authority: &Authority) -> Arc<Target> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &*last
            && (self.orig.is_some() || &*t.key == authority.as_str())
        {
            t.touch(&self.outbound);
            return t.clone();
        }
        let t = match self.orig {
            Some(o) => self.outbound.target(&addr_key(o), || Dest::Addr(o)),
            None => self
                .outbound
                .target(authority.as_str(), || direct(authority)),
        };
        *last = Some(t.clone());
        t
    }

    async fn route(self, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        if req.method() == Method::CONNECT && self.orig.is_none() {
            return self.tunnel(req);
        }
        let authority = authority_of(&req)
            .or_else(|| self.orig.and_then(|o| o.to_string().parse().ok()))
            .ok_or(ProxyError::NoAuthority)?;
        let root = self.target(&authority);
        match self.outbound.plan(&root).await {
            Plan::Policy(policy) => {
                routes::send(&self.outbound, &root, &policy, req, &authority).await
            }
            Plan::Direct(target) => {
                let timeout = self.outbound.config.response_timeout;
                target
                    .send(req.map(ReqBody::from), &authority, timeout)
                    .await
            }
        }
    }

    /// Local mode `CONNECT host:port`: answer 200 and forward the tunnel as opaque
    /// TCP to the target.
    fn tunnel(self, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let authority = req
            .uri()
            .authority()
            .cloned()
            .ok_or(ProxyError::NoAuthority)?;
        let upgrade = hyper::upgrade::on(&mut req);
        let outbound = self.outbound.clone();
        self.tracker.spawn(async move {
            match upgrade.await {
                Ok(up) => {
                    let key = authority.as_str();
                    tcp::forward(
                        &outbound,
                        Box::new(TokioIo::new(up)),
                        key,
                        direct(&authority),
                    )
                    .await
                }
                Err(e) => tracing::debug!(error = %e, "connect tunnel was not established"),
            }
        });
        let mut rsp = Response::new(boxed(Empty::<Bytes>::new()));
        *rsp.status_mut() = StatusCode::OK;
        Ok(rsp)
    }
}

fn direct(authority: &Authority) -> Dest {
    match authority.as_str().parse::<SocketAddr>() {
        Ok(a) => Dest::Addr(a),
        Err(_) => Dest::Name(authority.as_str().into()),
    }
}

impl hyper::service::Service<Request<Incoming>> for OutboundHttp {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let grpc = is_grpc(&req);
            Ok(this
                .route(req)
                .await
                .unwrap_or_else(|e| e.into_response(grpc)))
        })
    }
}
