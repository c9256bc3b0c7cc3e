//! Inbound authorizations: which clients an `Authz` of the proxy API admits
//! (networks with exceptions, and anyone, any mTLS client, or named identities and
//! identity suffixes), compiled once per policy update.

use std::{net::IpAddr, sync::Arc};

use linkerd2_proxy_api::{
    inbound::{self as api, authn::Permit as ApiPermit, authn::permit_mesh_tls::Clients},
    meta,
    net::IpNetwork,
};

use crate::{metrics::ResourceLabels, route::RouteError};

/// Why a policy from the control plane could not be compiled; names the field,
/// e.g. `authorizations[1].authentication: missing`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A route match or host did not compile.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Anything else.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl PolicyError {
    pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn missing(field: impl Into<String>) -> Self {
        Self::invalid(field, "missing")
    }

    /// The same error with `prefix` prepended to its field.
    #[must_use]
    pub(super) fn within(self, prefix: &str) -> Self {
        match self {
            Self::Route(e) => Self::Route(e.within(prefix)),
            Self::Invalid { field, reason } => Self::Invalid {
                field: if field.starts_with('[') {
                    format!("{prefix}{field}")
                } else {
                    format!("{prefix}.{field}")
                },
                reason,
            },
        }
    }
}

/// A network with exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Net {
    net: (IpAddr, u8),
    except: Box<[(IpAddr, u8)]>,
}

fn in_net(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn network(n: &IpNetwork) -> Result<(IpAddr, u8), PolicyError> {
    let ip = n.ip.ok_or_else(|| PolicyError::missing("ip"))?;
    let ip =
        IpAddr::try_from(ip).map_err(|e| PolicyError::invalid("ip", format!("not an IP: {e}")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match u8::try_from(n.prefix_len) {
        Ok(len) if len <= max => Ok((ip, len)),
        _ => Err(PolicyError::invalid(
            "prefix_len",
            format!("{} is longer than {max} bits", n.prefix_len),
        )),
    }
}

/// Who an authorization admits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Permit {
    Anyone,
    AnyMeshTls,
    MeshTls {
        identities: Box<[Box<str>]>,
        /// Each suffix's labels, most significant last (`[ops, serviceaccount]`
        /// admits `*.ops.serviceaccount`); an empty one admits every identity.
        suffixes: Box<[Box<[Box<str>]>]>,
    },
}

/// One compiled authorization.
#[derive(Clone, Debug)]
pub(super) struct Authorization {
    /// Empty admits every network.
    networks: Box<[Net]>,
    permit: Permit,
    /// The authorization as metric labels.
    pub(super) labels: ResourceLabels,
}

impl Authorization {
    /// Admits anyone, or (`mtls`) any client with a verified identity; named for
    /// metrics as the default policy `name`.
    pub(super) fn default_policy(mtls: bool, name: &str) -> Self {
        Self {
            networks: Box::new([]),
            permit: if mtls {
                Permit::AnyMeshTls
            } else {
                Permit::Anyone
            },
            labels: default_labels(name),
        }
    }

    /// Compiles one `Authz`; errors are relative to it (`authentication: missing`).
    pub(super) fn from_proto(a: &api::Authz) -> Result<Self, PolicyError> {
        let networks = a
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let field = format!("networks[{i}]");
                let net = n
                    .net
                    .as_ref()
                    .ok_or_else(|| PolicyError::missing(format!("{field}.net")))
                    .and_then(|n| network(n).map_err(|e| e.within(&format!("{field}.net"))))?;
                let except = n
                    .except
                    .iter()
                    .enumerate()
                    .map(|(j, e)| network(e).map_err(|e| e.within(&format!("{field}.except[{j}]"))))
                    .collect::<Result<_, _>>()?;
                Ok(Net { net, except })
            })
            .collect::<Result<_, PolicyError>>()?;
        let authn = a
            .authentication
            .as_ref()
            .ok_or_else(|| PolicyError::missing("authentication"))?;
        let permit = match authn
            .permit
            .as_ref()
            .ok_or_else(|| PolicyError::missing("authentication.permit"))?
        {
            ApiPermit::Unauthenticated(_) => Permit::Anyone,
            ApiPermit::MeshTls(m) => match m
                .clients
                .as_ref()
                .ok_or_else(|| PolicyError::missing("authentication.permit.meshTLS.clients"))?
            {
                Clients::Unauthenticated(_) => Permit::AnyMeshTls,
                Clients::Identities(ids) => Permit::MeshTls {
                    identities: ids
                        .identities
                        .iter()
                        .map(|i| i.name.as_str().into())
                        .collect(),
                    suffixes: ids
                        .suffixes
                        .iter()
                        .map(|s| s.parts.iter().map(|p| p.as_str().into()).collect())
                        .collect(),
                },
            },
        };
        Ok(Self {
            networks,
            permit,
            labels: labels(a.metadata.as_ref(), &a.labels),
        })
    }

    /// Whether a client at `ip`, with the verified identity `client_id` if any, is
    /// admitted. Allocates nothing.
    pub(super) fn admits(&self, ip: IpAddr, client_id: Option<&str>) -> bool {
        let net_ok = self.networks.is_empty()
            || self
                .networks
                .iter()
                .any(|n| in_net(ip, n.net) && !n.except.iter().any(|e| in_net(ip, *e)));
        net_ok
            && match (&self.permit, client_id) {
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
                    identities.iter().any(|i| **i == *id)
                        || suffixes.iter().any(|s| has_suffix(id, s))
                }
            }
    }
}

/// Whether the dotted name `id` ends with the labels `parts` (whole labels only).
fn has_suffix(id: &str, parts: &[Box<str>]) -> bool {
    let mut labels = id.rsplit('.');
    parts
        .iter()
        .rev()
        .all(|p| labels.next().is_some_and(|l| l == &**p))
}

/// Metric labels of a default (implicit) resource.
pub(super) fn default_labels(name: &str) -> ResourceLabels {
    ResourceLabels {
        group: Arc::from(""),
        kind: Arc::from("default"),
        name: Arc::from(name),
    }
}

/// Metric labels from a resource's metadata, or else its (deprecated) labels map.
pub(super) fn labels(
    metadata: Option<&meta::Metadata>,
    map: &std::collections::HashMap<String, String>,
) -> ResourceLabels {
    match metadata.and_then(|m| m.kind.as_ref()) {
        Some(meta::metadata::Kind::Default(name)) => default_labels(name),
        Some(meta::metadata::Kind::Resource(r)) => ResourceLabels {
            group: Arc::from(r.group.as_str()),
            kind: Arc::from(r.kind.to_ascii_lowercase()),
            name: Arc::from(r.name.as_str()),
        },
        None => {
            let get = |k: &str| Arc::from(map.get(k).map_or("", String::as_str));
            ResourceLabels {
                group: get("group"),
                kind: get("kind"),
                name: get("name"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::authn::{PermitMeshTls, PermitUnauthenticated, permit_mesh_tls};

    const APP: &str = "app.shop.serviceaccount.identity.linkerd-lite.cluster.local";
    const EVIL: &str = "app.evil.serviceaccount.identity.linkerd-lite.cluster.local";

    fn net(ip: [u8; 4], len: u32) -> IpNetwork {
        IpNetwork {
            ip: Some(IpAddr::from(ip).into()),
            prefix_len: len,
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

    #[test]
    fn identities_and_suffixes_admit_only_named_clients() {
        let ids = permit_mesh_tls::PermitClientIdentities {
            identities: vec![api::Identity { name: APP.into() }],
            suffixes: vec![api::IdentitySuffix {
                parts: vec!["ops".into(), "serviceaccount".into()],
            }],
        };
        let a = Authorization::from_proto(&authz(
            vec![],
            ApiPermit::MeshTls(PermitMeshTls {
                clients: Some(Clients::Identities(ids)),
            }),
        ))
        .unwrap();
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(a.admits(ip, Some(APP)));
        assert!(!a.admits(ip, Some(EVIL)));
        assert!(!a.admits(ip, None), "plaintext refused");
        assert!(a.admits(ip, Some("x.ops.serviceaccount")));
        assert!(
            !a.admits(ip, Some("x.devops.serviceaccount")),
            "whole labels"
        );
        assert!(!a.admits(
            ip,
            Some("x.ops.serviceaccount.identity.linkerd-lite.cluster.local")
        ));
        let all: Box<[Box<str>]> = Box::new([]);
        assert!(has_suffix("anything.at.all", &all));
    }

    #[test]
    fn networks_and_exceptions_limit_unauthenticated_clients() {
        let network = api::Network {
            net: Some(net([10, 0, 0, 0], 8)),
            except: vec![net([10, 1, 0, 0], 16)],
        };
        let a = Authorization::from_proto(&authz(
            vec![network],
            ApiPermit::Unauthenticated(PermitUnauthenticated {}),
        ))
        .unwrap();
        assert!(a.admits(IpAddr::from([10, 2, 3, 4]), None));
        assert!(!a.admits(IpAddr::from([10, 1, 3, 4]), None), "excepted");
        assert!(!a.admits(IpAddr::from([192, 168, 0, 1]), None), "outside");
        let everyone = Authorization::from_proto(&authz(
            vec![api::Network {
                net: Some(net([0, 0, 0, 0], 0)),
                except: vec![],
            }],
            ApiPermit::MeshTls(PermitMeshTls {
                clients: Some(Clients::Unauthenticated(PermitUnauthenticated {})),
            }),
        ))
        .unwrap();
        assert!(everyone.admits(IpAddr::from([192, 168, 0, 1]), Some(EVIL)));
        assert!(!everyone.admits(IpAddr::from([192, 168, 0, 1]), None));
    }

    #[test]
    fn malformed_authorizations_name_the_field() {
        let anyone = ApiPermit::Unauthenticated(PermitUnauthenticated {});
        let cases: Vec<(api::Authz, &str)> = vec![
            (api::Authz::default(), "authentication: missing"),
            (
                api::Authz {
                    authentication: Some(api::Authn { permit: None }),
                    ..Default::default()
                },
                "authentication.permit: missing",
            ),
            (
                authz(vec![], ApiPermit::MeshTls(PermitMeshTls { clients: None })),
                "authentication.permit.meshTLS.clients: missing",
            ),
            (
                authz(
                    vec![api::Network {
                        net: None,
                        except: vec![],
                    }],
                    anyone.clone(),
                ),
                "networks[0].net: missing",
            ),
            (
                authz(
                    vec![api::Network {
                        net: Some(net([10, 0, 0, 0], 8)),
                        except: vec![net([10, 1, 0, 0], 33)],
                    }],
                    anyone,
                ),
                "networks[0].except[0].prefix_len: 33 is longer than 32 bits",
            ),
        ];
        for (a, want) in cases {
            let err = Authorization::from_proto(&a).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn metric_labels_prefer_metadata() {
        let resource = meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "access.smi-spec.io".into(),
                kind: "TrafficTarget".into(),
                name: "web-readers".into(),
                ..Default::default()
            })),
        };
        let l = labels(Some(&resource), &Default::default());
        assert_eq!(
            (&*l.group, &*l.kind, &*l.name),
            ("access.smi-spec.io", "traffictarget", "web-readers")
        );
        let map = [("kind".to_string(), "default".to_string())].into();
        let l = labels(None, &map);
        assert_eq!((&*l.kind, &*l.name), ("default", ""));
    }
}
