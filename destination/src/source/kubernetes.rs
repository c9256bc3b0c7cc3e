//! The Kubernetes source: kube-runtime watchers feeding the index.
//!
//! Services, EndpointSlices and Pods are watched as typed `k8s-openapi` objects. SMI
//! kinds and Gateway API HTTPRoute are watched as dynamic objects and converted by the
//! same code as the files source ([`crate::k8s::from_value`]). The API server serves one
//! object under every version of a CRD, so each kind is watched once, at the newest
//! version of its group that the cluster serves (found from `GET /apis` at start).
//!
//! Each watcher re-lists after errors (including `410 Gone`) with kube-runtime's default
//! backoff, and a re-list replaces that kind in the index atomically. An object that
//! cannot be converted is skipped with a warning naming it; the rest keep flowing.
//! The index is marked synced once every watcher has listed once.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::index::Index;
use crate::index::objects::{Change, Kind, Object, ObjectRef};
use crate::k8s::{self, ConvertError};
use crate::metrics::Metrics;

/// A dynamically watched kind: its group, the versions that define it (newest first),
/// its plural and its kind in the index.
struct DynKind {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    index_kind: Kind,
}

const DYN_KINDS: &[DynKind] = &[
    DynKind {
        group: "split.smi-spec.io",
        versions: &["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"],
        kind: "TrafficSplit",
        plural: "trafficsplits",
        index_kind: Kind::TrafficSplit,
    },
    DynKind {
        group: "specs.smi-spec.io",
        versions: &["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"],
        kind: "HTTPRouteGroup",
        plural: "httproutegroups",
        index_kind: Kind::HttpRouteGroup,
    },
    DynKind {
        group: "specs.smi-spec.io",
        versions: &["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"],
        kind: "TCPRoute",
        plural: "tcproutes",
        index_kind: Kind::TcpRoute,
    },
    DynKind {
        group: "specs.smi-spec.io",
        versions: &["v1alpha4"],
        kind: "UDPRoute",
        plural: "udproutes",
        index_kind: Kind::UdpRoute,
    },
    DynKind {
        group: "access.smi-spec.io",
        versions: &["v1alpha3", "v1alpha2", "v1alpha1"],
        kind: "TrafficTarget",
        plural: "traffictargets",
        index_kind: Kind::TrafficTarget,
    },
    DynKind {
        group: "gateway.networking.k8s.io",
        versions: &["v1", "v1beta1"],
        kind: "HTTPRoute",
        plural: "httproutes",
        index_kind: Kind::HttpRoute,
    },
];

/// The Kubernetes source.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    index: Arc<Index>,
    metrics: Metrics,
}

impl Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource").finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source reading through `client` into `index`.
    pub fn new(client: Client, index: Arc<Index>, metrics: Metrics) -> Self {
        Self {
            client,
            index,
            metrics,
        }
    }

    /// Discovers the served SMI and Gateway API versions, then runs every watcher
    /// forever.
    pub async fn run(self) {
        let served = self.discover().await;
        let dyn_kinds: Vec<ApiResource> = DYN_KINDS
            .iter()
            .filter_map(|k| {
                let version = k
                    .versions
                    .iter()
                    .find(|v| served.contains(&format!("{}/{v}", k.group)));
                match version {
                    Some(v) => Some(ApiResource::from_gvk_with_plural(
                        &GroupVersionKind::gvk(k.group, v, k.kind),
                        k.plural,
                    )),
                    None => {
                        tracing::info!(
                            kind = k.kind,
                            group = k.group,
                            "not served by this cluster; not watched"
                        );
                        None
                    }
                }
            })
            .collect();
        let remaining = Arc::new(AtomicUsize::new(3 + dyn_kinds.len()));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().watch_typed::<core::Service>(
            Kind::Service,
            remaining.clone(),
            |s| k8s::service(s).map(|s| Some(Object::Service(s))),
        ));
        tasks.spawn(self.clone().watch_typed::<discovery::EndpointSlice>(
            Kind::EndpointSlice,
            remaining.clone(),
            |s| k8s::endpoint_slice(s).map(|s| Some(Object::EndpointSlice(s))),
        ));
        tasks.spawn(
            self.clone()
                .watch_typed::<core::Pod>(Kind::Pod, remaining.clone(), |p| {
                    k8s::pod(p).map(|p| Some(Object::Pod(p)))
                }),
        );
        for ar in dyn_kinds {
            tasks.spawn(self.clone().watch_dynamic(ar, remaining.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// The `group/version`s the API server serves, retrying until it answers.
    async fn discover(&self) -> Vec<String> {
        let mut delay = DISCOVERY_FIRST_RETRY;
        loop {
            match self.client.list_api_groups().await {
                Ok(groups) => {
                    return groups
                        .groups
                        .iter()
                        .flat_map(|g| g.versions.iter().map(|v| v.group_version.clone()))
                        .collect();
                }
                Err(error) => {
                    self.metrics.error("kubernetes", "discovery");
                    tracing::warn!(error = %crate::error_chain(&error), retry_in = ?delay, "API discovery failed");
                    tokio::time::sleep(delay).await;
                    delay = next_retry(delay);
                }
            }
        }
    }

    async fn watch_typed<K>(
        self,
        kind: Kind,
        remaining: Arc<AtomicUsize>,
        convert: impl Fn(&K) -> Result<Option<Object>, ConvertError> + Send + 'static,
    ) where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        self.consume(stream, kind, remaining, convert).await;
    }

    async fn watch_dynamic(self, ar: ApiResource, remaining: Arc<AtomicUsize>) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let kind = DYN_KINDS
            .iter()
            .find(|k| k.kind == ar.kind)
            .map_or(Kind::TrafficSplit, |k| k.index_kind);
        let convert = move |obj: &DynamicObject| {
            let mut value = serde_json::to_value(obj).map_err(|source| ConvertError::Schema {
                kind: kind.as_str(),
                object: key(obj.meta()),
                source,
            })?;
            // List items may come without their type; the converters need it.
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), ar.api_version.clone().into());
                map.insert("kind".into(), ar.kind.clone().into());
            }
            k8s::from_value(value, "default")
        };
        self.consume(stream, kind, remaining, convert).await;
    }

    async fn consume<K: Resource>(
        self,
        stream: impl futures::Stream<Item = Result<Event<K>, watcher::Error>>,
        kind: Kind,
        remaining: Arc<AtomicUsize>,
        convert: impl Fn(&K) -> Result<Option<Object>, ConvertError>,
    ) {
        let mut stream = std::pin::pin!(stream);
        let mut buffer: Vec<Object> = Vec::new();
        let mut synced = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(obj)) => {
                    if let Ok(Some(o)) = self.convert(kind, &obj, &convert) {
                        buffer.push(o);
                    }
                }
                Ok(Event::InitDone) => {
                    self.index.replace_kind(kind, std::mem::take(&mut buffer));
                    tracing::debug!(kind = kind.as_str(), "listed");
                    if !synced {
                        synced = true;
                        if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                            tracing::info!("every watcher has listed; ready");
                            self.index.mark_synced();
                        }
                    }
                }
                Ok(Event::Apply(obj)) => match self.convert(kind, &obj, &convert) {
                    Ok(Some(o)) => self.index.apply([Change::Upsert(o)]),
                    // Not ours any more (e.g. an HTTPRoute moved to a Gateway).
                    Ok(None) => self
                        .index
                        .apply([Change::Delete(object_ref(kind, obj.meta()))]),
                    // Invalid: the last good version keeps serving.
                    Err(()) => {}
                },
                Ok(Event::Delete(obj)) => {
                    self.index
                        .apply([Change::Delete(object_ref(kind, obj.meta()))]);
                }
                Err(error) => {
                    self.metrics.error("kubernetes", "watch");
                    tracing::warn!(kind = kind.as_str(), error = %crate::error_chain(&error), "watch failed; re-listing after backoff");
                }
            }
        }
    }

    /// Converts an object; an invalid one is reported (and answered with `Err`).
    fn convert<K: Resource>(
        &self,
        kind: Kind,
        obj: &K,
        convert: &impl Fn(&K) -> Result<Option<Object>, ConvertError>,
    ) -> Result<Option<Object>, ()> {
        match convert(obj) {
            Ok(o) => Ok(o),
            Err(error) => {
                self.metrics.error("kubernetes", "invalid_object");
                tracing::warn!(
                    kind = kind.as_str(),
                    object = %key(obj.meta()),
                    error = %crate::error_chain(&error),
                    "skipping invalid object"
                );
                Err(())
            }
        }
    }
}

/// The first wait after a failed discovery.
const DISCOVERY_FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between discovery attempts.
const DISCOVERY_MAX_RETRY: Duration = Duration::from_secs(30);

/// Doubles a retry delay, up to [`DISCOVERY_MAX_RETRY`].
fn next_retry(delay: Duration) -> Duration {
    (delay * 2).min(DISCOVERY_MAX_RETRY)
}

fn key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("?")
    )
}

fn object_ref(kind: Kind, meta: &kube::api::ObjectMeta) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// The RBAC rules the Kubernetes source needs, as `(apiGroups, resources, verbs)`.
pub const RBAC_RULES: &[(&str, &[&str], &[&str])] = &[
    ("", &["services", "pods"], &["get", "list", "watch"]),
    (
        "discovery.k8s.io",
        &["endpointslices"],
        &["get", "list", "watch"],
    ),
    (
        "split.smi-spec.io",
        &["trafficsplits"],
        &["get", "list", "watch"],
    ),
    (
        "specs.smi-spec.io",
        &["httproutegroups", "tcproutes", "udproutes"],
        &["get", "list", "watch"],
    ),
    (
        "access.smi-spec.io",
        &["traffictargets"],
        &["get", "list", "watch"],
    ),
    (
        "gateway.networking.k8s.io",
        &["httproutes"],
        &["get", "list", "watch"],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_retries_back_off_to_a_cap() {
        let mut delays = vec![DISCOVERY_FIRST_RETRY];
        for _ in 0..8 {
            delays.push(next_retry(*delays.last().unwrap()));
        }
        let secs: Vec<f64> = delays.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
    }

    #[test]
    fn every_watched_kind_has_rbac() {
        for k in DYN_KINDS {
            assert!(
                RBAC_RULES
                    .iter()
                    .any(|(g, res, _)| *g == k.group && res.contains(&k.plural)),
                "{} lacks an RBAC rule",
                k.kind
            );
        }
    }
}
