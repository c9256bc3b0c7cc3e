//! `InboundServerPolicies.GetPort/WatchPort`: a pod port's protocol and
//! authorizations.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use linkerd2_proxy_api::{inbound as api, meta, net};
use tonic::{Request, Response, Status};

use super::target::parse_workload;
use super::{BoxStream, DETECT_TIMEOUT, Discover, duration, invalid};
use crate::index::InboundWatch;
use crate::index::answers::{Authz, AuthzOrigin, Clients, InboundProtocol, InboundServer};
use crate::metrics::Metrics;

const GET_PORT: &str = "InboundServerPolicies.GetPort";
const WATCH_PORT: &str = "InboundServerPolicies.WatchPort";

/// The `InboundServerPolicies` service.
#[derive(Debug)]
pub struct InboundService<D> {
    discover: Arc<D>,
    metrics: Metrics,
}

impl<D> InboundService<D> {
    /// A service answering from `discover`.
    pub fn new(discover: Arc<D>, metrics: Metrics) -> Self {
        Self { discover, metrics }
    }
}

impl<D: Discover> InboundService<D> {
    fn lookup(&self, spec: api::PortSpec, rpc: &'static str) -> Result<InboundWatch, Status> {
        let key = parse_workload(&spec.workload, spec.port)
            .map_err(|e| invalid(&self.metrics, rpc, e))?;
        let rx = self.discover.watch_inbound(key.clone());
        if rx.borrow().is_none() {
            return Err(Status::not_found(format!(
                "pod {}/{} is not known",
                key.namespace, key.pod
            )));
        }
        Ok(rx)
    }
}

#[tonic::async_trait]
impl<D: Discover> api::inbound_server_policies_server::InboundServerPolicies for InboundService<D> {
    type WatchPortStream = BoxStream<api::Server>;

    async fn get_port(&self, req: Request<api::PortSpec>) -> Result<Response<api::Server>, Status> {
        let rx = self.lookup(req.into_inner(), GET_PORT)?;
        let server = rx.borrow().clone();
        let server = server.ok_or_else(|| Status::not_found("pod is not known"))?;
        self.metrics.sent(GET_PORT);
        Ok(Response::new(to_proto(&server)))
    }

    async fn watch_port(
        &self,
        req: Request<api::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let rx = self.lookup(req.into_inner(), WATCH_PORT)?;
        // The pod went away: end the stream so the proxy falls back.
        Ok(Response::new(super::policy_stream(
            rx,
            self.metrics.clone(),
            WATCH_PORT,
            "pod was deleted",
            to_proto,
        )))
    }
}

/// Turns an inbound server into the proxy API's message.
pub(crate) fn to_proto(server: &InboundServer) -> api::Server {
    use api::proxy_protocol::{Detect, Http1, Http2, Kind, Opaque};
    let routes: Vec<api::HttpRoute> = server
        .http_routes
        .iter()
        .map(|r| api::HttpRoute {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default(r.name.clone())),
            }),
            hosts: Vec::new(),
            authorizations: r.authorizations.iter().map(authz).collect(),
            rules: vec![api::http_route::Rule {
                matches: r.matches.iter().map(super::outbound::http_match).collect(),
                filters: Vec::new(),
            }],
        })
        .collect();
    let kind = match server.protocol {
        InboundProtocol::Detect => Kind::Detect(Detect {
            timeout: Some(duration(DETECT_TIMEOUT)),
            http_routes: routes,
            http_local_rate_limit: None,
        }),
        InboundProtocol::Http1 => Kind::Http1(Http1 {
            routes,
            local_rate_limit: None,
        }),
        InboundProtocol::Http2 => Kind::Http2(Http2 {
            routes,
            local_rate_limit: None,
        }),
        InboundProtocol::Opaque => Kind::Opaque(Opaque {}),
    };
    api::Server {
        protocol: Some(api::ProxyProtocol { kind: Some(kind) }),
        server_ips: server.server_ips.iter().map(|ip| (*ip).into()).collect(),
        authorizations: server.authorizations.iter().map(authz).collect(),
        labels: server
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn authz(a: &Authz) -> api::Authz {
    use api::authn::permit_mesh_tls::{Clients as C, PermitClientIdentities};
    use api::authn::{Permit, PermitMeshTls, PermitUnauthenticated};
    let permit = match &a.clients {
        Clients::Unauthenticated => Permit::Unauthenticated(PermitUnauthenticated {}),
        Clients::AnyMeshTls => Permit::MeshTls(PermitMeshTls {
            clients: Some(C::Identities(PermitClientIdentities {
                identities: Vec::new(),
                // An empty suffix matches every identity.
                suffixes: vec![api::IdentitySuffix { parts: Vec::new() }],
            })),
        }),
        Clients::Identities(ids) => Permit::MeshTls(PermitMeshTls {
            clients: Some(C::Identities(PermitClientIdentities {
                identities: ids
                    .iter()
                    .map(|name| api::Identity { name: name.clone() })
                    .collect(),
                suffixes: Vec::new(),
            })),
        }),
    };
    let (metadata, labels) = match &a.origin {
        AuthzOrigin::Default(name) => (
            meta::metadata::Kind::Default((*name).to_string()),
            HashMap::from([
                ("kind".to_string(), "default".to_string()),
                ("name".to_string(), (*name).to_string()),
            ]),
        ),
        AuthzOrigin::TrafficTarget { namespace, name } => (
            meta::metadata::Kind::Resource(meta::Resource {
                group: "access.smi-spec.io".to_string(),
                kind: "TrafficTarget".to_string(),
                name: name.clone(),
                namespace: namespace.clone(),
                section: String::new(),
                port: 0,
            }),
            HashMap::from([
                ("kind".to_string(), "traffictarget".to_string()),
                ("name".to_string(), name.clone()),
            ]),
        ),
    };
    let any = |ip: IpAddr| api::Network {
        net: Some(net::IpNetwork::from((ip, 0u8))),
        except: Vec::new(),
    };
    api::Authz {
        networks: vec![
            any(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            any(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ],
        authentication: Some(api::Authn {
            permit: Some(permit),
        }),
        labels,
        metadata: Some(meta::Metadata {
            kind: Some(metadata),
        }),
    }
}
