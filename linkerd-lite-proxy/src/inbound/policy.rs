//! Inbound policy per port, from `InboundServerPolicies.WatchPort`: which clients a
//! server admits (networks, mTLS identities or suffixes, or anyone) and whether its
//! traffic is opaque. Without a policy service (or a workload name), or until the
//! first answer, the configured default policy applies.
//!
//! Only server-level authorizations are enforced; per-route authorizations and rate
//! limits in the policy are not (yet).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use linkerd2_proxy_api::{
    inbound::{
        self as api, authn::Permit as ApiPermit, authn::permit_mesh_tls::Clients,
        inbound_server_policies_client::InboundServerPoliciesClient, proxy_protocol::Kind,
    },
    net::IpNetwork,
};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;

use crate::env::DefaultPolicy;

/// How long the first connection to a port waits for its policy before the default
/// applies.
const FIRST_POLICY_WAIT: Duration = Duration::from_secs(1);

/// A network with exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Net {
    net: (IpAddr, u8),
    except: Vec<(IpAddr, u8)>,
}

fn in_net(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn network(n: &IpNetwork) -> Option<(IpAddr, u8)> {
    let ip = IpAddr::try_from(n.ip?).ok()?;
    Some((ip, u8::try_from(n.prefix_len).ok()?))
}

/// Who an authorization admits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Permit {
    Anyone,
    AnyMeshTls,
    MeshTls {
        identities: Vec<String>,
        suffixes: Vec<Vec<String>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Authorization {
    networks: Vec<Net>,
    permit: Permit,
}

/// The policy of one inbound port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    /// Traffic on the port is opaque TCP: no protocol detection.
    pub opaque: bool,
    authorizations: Vec<Authorization>,
}

impl PortPolicy {
    /// The policy a default applies.
    pub fn from_default(default: DefaultPolicy) -> Self {
        let any = |permit| Authorization {
            networks: vec![],
            permit,
        };
        let authorizations = match default {
            DefaultPolicy::AllUnauthenticated => vec![any(Permit::Anyone)],
            DefaultPolicy::AllAuthenticated => vec![any(Permit::AnyMeshTls)],
            DefaultPolicy::Deny => vec![],
        };
        Self {
            opaque: false,
            authorizations,
        }
    }

    /// The policy a `Server` message describes; malformed authorizations admit
    /// nobody.
    pub fn from_server(server: &api::Server) -> Self {
        let opaque = matches!(
            server.protocol.as_ref().and_then(|p| p.kind.as_ref()),
            Some(Kind::Opaque(_))
        );
        let authorizations = server
            .authorizations
            .iter()
            .filter_map(authorization)
            .collect();
        Self {
            opaque,
            authorizations,
        }
    }

    /// Whether a client at `ip`, with the mTLS identity `client_id` if any, may
    /// connect.
    pub fn authorize(&self, ip: IpAddr, client_id: Option<&str>) -> bool {
        self.authorizations.iter().any(|a| {
            let net_ok = a.networks.is_empty()
                || a.networks
                    .iter()
                    .any(|n| in_net(ip, n.net) && !n.except.iter().any(|e| in_net(ip, *e)));
            net_ok
                && match (&a.permit, client_id) {
                    (Permit::Anyone, _) => true,
                    (_, None) => false,
                    (Permit::AnyMeshTls, Some(_)) => true,
                    (
                        Permit::MeshTls {
                            identities,
                            suffixes,
                        },
                        Some(id),
                    ) => {
                        identities.iter().any(|i| i == id)
                            || suffixes.iter().any(|s| has_suffix(id, s))
                    }
                }
        })
    }
}

fn has_suffix(id: &str, parts: &[String]) -> bool {
    if parts.is_empty() {
        return true;
    }
    let labels: Vec<&str> = id.split('.').collect();
    labels.len() >= parts.len()
        && labels[labels.len() - parts.len()..]
            .iter()
            .zip(parts)
            .all(|(a, b)| a == b)
}

fn authorization(a: &api::Authz) -> Option<Authorization> {
    let networks = a
        .networks
        .iter()
        .map(|n| {
            Some(Net {
                net: network(n.net.as_ref()?)?,
                except: n.except.iter().filter_map(network).collect(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let permit = match a.authentication.as_ref()?.permit.as_ref()? {
        ApiPermit::Unauthenticated(_) => Permit::Anyone,
        ApiPermit::MeshTls(m) => match m.clients.as_ref()? {
            Clients::Unauthenticated(_) => Permit::AnyMeshTls,
            Clients::Identities(ids) => Permit::MeshTls {
                identities: ids.identities.iter().map(|i| i.name.clone()).collect(),
                suffixes: ids.suffixes.iter().map(|s| s.parts.clone()).collect(),
            },
        },
    };
    Some(Authorization { networks, permit })
}

struct Watched {
    rx: watch::Receiver<Option<Arc<PortPolicy>>>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Inbound policies, watched per port.
pub struct Policies {
    client: Option<(InboundServerPoliciesClient<Channel>, String)>,
    default: Arc<PortPolicy>,
    ports: Mutex<HashMap<u16, Watched>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// Policies from the service on `channel` for `workload`; with either missing,
    /// always `default`.
    pub fn new(channel: Option<Channel>, workload: Option<String>, default: DefaultPolicy) -> Self {
        Self {
            client: channel
                .zip(workload)
                .map(|(c, w)| (InboundServerPoliciesClient::new(c), w)),
            default: Arc::new(PortPolicy::from_default(default)),
            ports: Mutex::default(),
        }
    }

    /// The current policy of `port`; the first call for a port starts watching it
    /// and waits briefly for the first answer.
    pub async fn get(&self, port: u16) -> Arc<PortPolicy> {
        let Some((client, workload)) = &self.client else {
            return self.default.clone();
        };
        let mut rx = {
            let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            ports
                .entry(port)
                .or_insert_with(|| {
                    let (tx, rx) = watch::channel(None);
                    let spec = api::PortSpec {
                        workload: workload.clone(),
                        port: u32::from(port),
                    };
                    let task = tokio::spawn(watch_port(client.clone(), spec, tx));
                    Watched {
                        rx,
                        _task: AbortOnDrop(task),
                    }
                })
                .rx
                .clone()
        };
        if rx.borrow().is_none() {
            let _ = tokio::time::timeout(FIRST_POLICY_WAIT, rx.wait_for(Option::is_some)).await;
        }
        let current = rx.borrow().clone();
        current.unwrap_or_else(|| self.default.clone())
    }
}

async fn watch_port(
    mut client: InboundServerPoliciesClient<Channel>,
    spec: api::PortSpec,
    tx: watch::Sender<Option<Arc<PortPolicy>>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.watch_port(spec.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                while let Ok(Some(server)) = stream.message().await {
                    backoff = Duration::from_millis(100);
                    tx.send_replace(Some(Arc::new(PortPolicy::from_server(&server))));
                }
            }
            Err(status) => {
                tracing::debug!(port = spec.port, %status, "inbound policy lookup failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::authn::{PermitMeshTls, PermitUnauthenticated, permit_mesh_tls};

    fn net(ip: [u8; 4], len: u32) -> IpNetwork {
        IpNetwork {
            ip: Some(IpAddr::from(ip).into()),
            prefix_len: len,
        }
    }

    fn server(authz: Vec<api::Authz>, opaque: bool) -> api::Server {
        api::Server {
            protocol: Some(api::ProxyProtocol {
                kind: Some(if opaque {
                    Kind::Opaque(api::proxy_protocol::Opaque {})
                } else {
                    Kind::Detect(Default::default())
                }),
            }),
            authorizations: authz,
            ..Default::default()
        }
    }

    fn authz(networks: Vec<api::Network>, permit: ApiPermit) -> api::Authz {
        api::Authz {
            networks,
            authentication: Some(api::Authn {
                permit: Some(permit),
            }),
            ..Default::default()
        }
    }

    const APP: &str = "app.shop.serviceaccount.identity.linkerd-lite.cluster.local";
    const EVIL: &str = "app.evil.serviceaccount.identity.linkerd-lite.cluster.local";

    #[test]
    fn identities_and_suffixes_admit_only_named_clients() {
        let ids = permit_mesh_tls::PermitClientIdentities {
            identities: vec![api::Identity { name: APP.into() }],
            suffixes: vec![api::IdentitySuffix {
                parts: vec!["ops".into(), "serviceaccount".into()],
            }],
        };
        let p = PortPolicy::from_server(&server(
            vec![authz(
                vec![],
                ApiPermit::MeshTls(PermitMeshTls {
                    clients: Some(Clients::Identities(ids)),
                }),
            )],
            true,
        ));
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(p.opaque);
        assert!(p.authorize(ip, Some(APP)));
        assert!(!p.authorize(ip, Some(EVIL)));
        assert!(!p.authorize(ip, None), "plaintext refused");
        assert!(!p.authorize(
            ip,
            Some("x.ops.serviceaccount.identity.linkerd-lite.cluster.local")
        ));
        assert!(has_suffix(
            "a.b.ops.serviceaccount",
            &["ops".into(), "serviceaccount".into()]
        ));
    }

    #[test]
    fn networks_and_exceptions_limit_unauthenticated_clients() {
        let network = api::Network {
            net: Some(net([10, 0, 0, 0], 8)),
            except: vec![net([10, 1, 0, 0], 16)],
        };
        let p = PortPolicy::from_server(&server(
            vec![authz(
                vec![network],
                ApiPermit::Unauthenticated(PermitUnauthenticated {}),
            )],
            false,
        ));
        assert!(!p.opaque);
        assert!(p.authorize(IpAddr::from([10, 2, 3, 4]), None));
        assert!(!p.authorize(IpAddr::from([10, 1, 3, 4]), None), "excepted");
        assert!(
            !p.authorize(IpAddr::from([192, 168, 0, 1]), None),
            "outside"
        );
    }

    #[test]
    fn defaults_and_empty_servers() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!(PortPolicy::from_default(DefaultPolicy::AllUnauthenticated).authorize(ip, None));
        let authn = PortPolicy::from_default(DefaultPolicy::AllAuthenticated);
        assert!(!authn.authorize(ip, None));
        assert!(authn.authorize(ip, Some(APP)));
        assert!(!PortPolicy::from_default(DefaultPolicy::Deny).authorize(ip, Some(APP)));
        assert!(!PortPolicy::from_server(&server(vec![], false)).authorize(ip, Some(APP)));
        // An authorization without authentication is malformed and admits nobody.
        let broken = api::Authz::default();
        assert!(!PortPolicy::from_server(&server(vec![broken], false)).authorize(ip, None));
    }
}
