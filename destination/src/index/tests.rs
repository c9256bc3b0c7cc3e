//! Index tests with hand-built objects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smi_crds::model::{
    AccessRule, HeaderMatch, HttpMatch, HttpRouteGroup, PortRoute, RouteKind, RouteRef, RuleRef,
    ServiceAccountRef, Source, Split, SplitBackend,
};

use super::answers::*;
use super::objects::*;
use super::*;

fn source(ns: &str, name: &str, api: &str, created: &str) -> Source {
    Source {
        namespace: ns.into(),
        name: name.into(),
        api_version: api.into(),
        created: Some(created.into()),
    }
}

pub(crate) fn service(ns: &str, name: &str, ip: &str, port: u16) -> Service {
    Service {
        namespace: ns.into(),
        name: name.into(),
        cluster_ips: vec![ip.parse().unwrap()],
        ports: vec![ServicePort {
            name: Some("http".into()),
            port,
            app_protocol: None,
        }],
        opaque_ports: BTreeSet::new(),
        timeout: None,
        retryable: false,
        failure_accrual: None,
    }
}

pub(crate) fn slice(ns: &str, svc: &str, target_port: u16, pods: &[(&str, &str)]) -> EndpointSlice {
    EndpointSlice {
        namespace: ns.into(),
        name: format!("{svc}-abcde"),
        service: svc.into(),
        ports: vec![(Some("http".into()), target_port)],
        endpoints: pods
            .iter()
            .map(|(pod, ip)| SliceEndpoint {
                addresses: vec![ip.parse().unwrap()],
                ready: true,
                pod: Some((*pod).into()),
            })
            .collect(),
    }
}

pub(crate) fn pod(ns: &str, name: &str, ip: &str, sa: &str, meshed: bool) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        ips: vec![ip.parse().unwrap()],
        service_account: sa.into(),
        meshed,
        owner: Some(("deployment".into(), sa.into())),
        opaque_ports: BTreeSet::new(),
        port_protocols: BTreeMap::new(),
    }
}

fn split(name: &str, created: &str, root: &str, backends: &[(&str, u32)]) -> Split {
    Split {
        source: source("shop", name, "split.smi-spec.io/v1alpha4", created),
        root: root.into(),
        backends: backends
            .iter()
            .map(|(s, w)| SplitBackend {
                service: (*s).into(),
                weight_milli: *w,
            })
            .collect(),
        matches: vec![],
    }
}

fn index_with(objects: Vec<Object>) -> Index {
    let index = Index::new(IndexConfig::default());
    index.apply(objects.into_iter().map(Change::Upsert));
    index
}

/// A namespace `shop` with Services web (2 meshed pods), web-v2 (1 unmeshed pod) and
/// web-v3 (no endpoints).
fn shop() -> Vec<Object> {
    vec![
        Object::Service(service("shop", "web", "10.96.0.10", 80)),
        Object::Service(service("shop", "web-v2", "10.96.0.11", 80)),
        Object::Service(service("shop", "web-v3", "10.96.0.12", 80)),
        Object::EndpointSlice(slice(
            "shop",
            "web",
            8080,
            &[("web-1", "10.0.0.1"), ("web-2", "10.0.0.2")],
        )),
        Object::EndpointSlice(slice("shop", "web-v2", 8080, &[("web-v2-1", "10.0.0.3")])),
        Object::Pod(pod("shop", "web-1", "10.0.0.1", "web", true)),
        Object::Pod(pod("shop", "web-2", "10.0.0.2", "web", true)),
        Object::Pod(pod("shop", "web-v2-1", "10.0.0.3", "web-v2", false)),
    ]
}

fn svc_target(name: &str, port: u16) -> EndpointTarget {
    EndpointTarget::Service {
        namespace: "shop".into(),
        name: name.into(),
        port,
    }
}

fn outbound(index: &Index, name: &str) -> Arc<OutboundPolicy> {
    index
        .watch_outbound(ServicePortKey {
            namespace: "shop".into(),
            name: name.into(),
            port: 80,
        })
        .borrow()
        .clone()
        .expect("service exists")
}

fn weights(rule: &OutboundRule) -> Vec<(String, u32)> {
    rule.backends
        .iter()
        .map(|b| (b.service.clone(), b.weight))
        .collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// === endpoints ===

#[test]
fn endpoints_carry_identity_hint_and_labels_only_for_meshed_pods() {
    let index = index_with(shop());
    let set = index
        .watch_endpoints(svc_target("web", 80))
        .borrow()
        .clone();
    assert!(set.exists);
    assert_eq!(set.labels["service"], "web");
    let ep = &set.endpoints[&addr("10.0.0.1:8080")];
    assert_eq!(
        ep.identity.as_deref(),
        Some("web.shop.serviceaccount.identity.linkerd-lite.cluster.local")
    );
    assert_eq!(ep.hint, ProtocolHint::H2);
    assert_eq!(ep.labels["pod"], "web-1");
    assert_eq!(ep.labels["serviceaccount"], "web");
    assert_eq!(ep.labels["deployment"], "web");
    assert_eq!(ep.labels["namespace"], "shop");
    assert_eq!(set.endpoints.len(), 2);

    let v2 = index
        .watch_endpoints(svc_target("web-v2", 80))
        .borrow()
        .clone();
    let ep = &v2.endpoints[&addr("10.0.0.3:8080")];
    assert_eq!(ep.identity, None, "unmeshed pods have no identity");
    assert_eq!(ep.hint, ProtocolHint::Unknown);
}

#[test]
fn unknown_and_empty_services_are_told_apart() {
    let index = index_with(shop());
    let empty = index
        .watch_endpoints(svc_target("web-v3", 80))
        .borrow()
        .clone();
    assert!(empty.exists && empty.endpoints.is_empty());
    let unknown = index
        .watch_endpoints(svc_target("nope", 80))
        .borrow()
        .clone();
    assert!(!unknown.exists && unknown.endpoints.is_empty());
}

#[test]
fn unready_endpoints_and_unmatched_port_names_are_left_out() {
    let mut s = slice(
        "shop",
        "web",
        8080,
        &[("web-1", "10.0.0.1"), ("web-2", "10.0.0.2")],
    );
    s.endpoints[1].ready = false;
    let mut other = slice("shop", "web", 9090, &[("web-9", "10.0.0.9")]);
    other.name = "web-other".into();
    other.ports = vec![(Some("admin".into()), 9090)];
    let index = index_with(vec![
        Object::Service(service("shop", "web", "10.96.0.10", 80)),
        Object::EndpointSlice(s),
        Object::EndpointSlice(other),
    ]);
    let set = index
        .watch_endpoints(svc_target("web", 80))
        .borrow()
        .clone();
    let addrs: Vec<_> = set.endpoints.keys().copied().collect();
    assert_eq!(addrs, vec![addr("10.0.0.1:8080")]);
}

#[test]
fn cluster_ips_and_pod_ips_resolve() {
    let index = index_with(shop());
    let by_ip = index
        .watch_endpoints(EndpointTarget::Addr(addr("10.96.0.10:80")))
        .borrow()
        .clone();
    assert_eq!(by_ip.endpoints.len(), 2);
    let pod = index
        .watch_endpoints(EndpointTarget::Addr(addr("10.0.0.2:8080")))
        .borrow()
        .clone();
    assert_eq!(pod.endpoints.len(), 1);
    assert!(pod.endpoints[&addr("10.0.0.2:8080")].identity.is_some());
    let none = index
        .watch_endpoints(EndpointTarget::Addr(addr("192.0.2.1:80")))
        .borrow()
        .clone();
    assert!(!none.exists);
    assert_eq!(
        index
            .service_for_addr(addr("10.96.0.11:80"))
            .map(|k| k.name),
        Some("web-v2".to_string())
    );
}

#[test]
fn opaque_ports_hint_the_proxy_inbound_port() {
    let mut svc = service("shop", "db", "10.96.0.20", 5432);
    svc.opaque_ports.insert(5432);
    let index = index_with(vec![
        Object::Service(svc),
        Object::EndpointSlice(slice("shop", "db", 5432, &[("db-0", "10.0.1.1")])),
        Object::Pod(pod("shop", "db-0", "10.0.1.1", "db", true)),
    ]);
    let set = index
        .watch_endpoints(svc_target("db", 5432))
        .borrow()
        .clone();
    assert_eq!(
        set.endpoints[&addr("10.0.1.1:5432")].hint,
        ProtocolHint::Opaque { inbound_port: 4143 }
    );
    assert!(outbound_port(&index, "db", 5432).opaque);
}

fn outbound_port(index: &Index, name: &str, port: u16) -> Arc<OutboundPolicy> {
    index
        .watch_outbound(ServicePortKey {
            namespace: "shop".into(),
            name: name.into(),
            port,
        })
        .borrow()
        .clone()
        .expect("service exists")
}

// === watchers ===

#[test]
fn watchers_wake_only_when_their_answer_changes() {
    let index = index_with(shop());
    let mut web = index.watch_endpoints(svc_target("web", 80));
    let mut other_ns = index.watch_endpoints(EndpointTarget::Service {
        namespace: "other".into(),
        name: "web".into(),
        port: 80,
    });
    web.borrow_and_update();
    other_ns.borrow_and_update();

    // A change to another Service of the same namespace leaves web's answer alone.
    index.apply([Change::Upsert(Object::EndpointSlice(slice(
        "shop",
        "web-v3",
        8080,
        &[("x", "10.0.0.7")],
    )))]);
    assert!(!web.has_changed().unwrap());

    // Scaling web wakes its watcher, with the new endpoint.
    index.apply([Change::Upsert(Object::EndpointSlice(slice(
        "shop",
        "web",
        8080,
        &[
            ("web-1", "10.0.0.1"),
            ("web-2", "10.0.0.2"),
            ("web-3", "10.0.0.4"),
        ],
    )))]);
    assert!(web.has_changed().unwrap());
    assert_eq!(web.borrow_and_update().endpoints.len(), 3);
    assert!(!other_ns.has_changed().unwrap());
}

#[test]
fn a_slow_watcher_sees_only_the_latest_state() {
    let index = index_with(shop());
    let mut web = index.watch_endpoints(svc_target("web", 80));
    web.borrow_and_update();
    for n in 1..=5u8 {
        let pods: Vec<(String, String)> = (1..=n)
            .map(|i| (format!("p{i}"), format!("10.0.2.{i}")))
            .collect();
        let pods: Vec<(&str, &str)> = pods.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        index.apply([Change::Upsert(Object::EndpointSlice(slice(
            "shop", "web", 8080, &pods,
        )))]);
    }
    assert!(web.has_changed().unwrap());
    assert_eq!(web.borrow_and_update().endpoints.len(), 5);
    assert!(!web.has_changed().unwrap());
}

#[test]
fn dropped_watchers_are_forgotten_and_relists_remove_stale_objects() {
    let index = index_with(shop());
    drop(index.watch_endpoints(svc_target("web", 80)));
    assert_eq!(index.stats().endpoint_keys, 1);
    index.apply([Change::Delete(ObjectRef {
        kind: Kind::Pod,
        namespace: "shop".into(),
        name: "web-1".into(),
    })]);
    assert_eq!(index.stats().endpoint_keys, 0);

    let rx = index.watch_endpoints(svc_target("web-v2", 80));
    index.replace_kind(Kind::EndpointSlice, vec![]);
    assert!(rx.borrow().endpoints.is_empty());
    let count = |k| {
        index
            .stats()
            .objects
            .iter()
            .find(|(kind, _)| *kind == k)
            .map(|(_, n)| *n)
    };
    assert_eq!(count(Kind::EndpointSlice), Some(0));
    assert_eq!(count(Kind::Service), Some(3));
}

// === outbound ===

#[test]
fn a_service_without_routes_gets_a_default_route_to_itself() {
    let index = index_with(shop());
    let policy = outbound(&index, "web");
    assert_eq!(policy.authority, "web.shop.svc.cluster.local:80");
    assert_eq!(policy.routes.len(), 1);
    assert_eq!(policy.routes[0].origin, RouteOrigin::Default);
    assert_eq!(
        weights(&policy.routes[0].rules[0]),
        vec![("web".into(), 1000)]
    );
    assert_eq!(policy.failure_accrual, Some(DEFAULT_FAILURE_ACCRUAL));
    let unknown = index
        .watch_outbound(ServicePortKey {
            namespace: "shop".into(),
            name: "nope".into(),
            port: 80,
        })
        .borrow()
        .clone();
    assert!(unknown.is_none());
}

#[test]
fn split_weights_skip_zero_and_missing_backends() {
    let mut objects = shop();
    objects.push(Object::Split(split(
        "canary",
        "2024-01-01T00:00:00Z",
        "web",
        &[("web", 800), ("web-v2", 200), ("web-v3", 0), ("ghost", 100)],
    )));
    let index = index_with(objects);
    let policy = outbound(&index, "web");
    let rule = &policy.routes[0].rules[0];
    assert_eq!(
        weights(rule),
        vec![("web".into(), 800), ("web-v2".into(), 200)]
    );
    assert_eq!(
        rule.backends[1].authority,
        "web-v2.shop.svc.cluster.local:80"
    );
    assert_eq!(rule.matches, vec![match_all()]);
}

#[test]
fn all_zero_or_all_missing_splits_fall_back_to_the_root() {
    for backends in [
        vec![("web-v2", 0), ("web-v3", 0)],
        vec![("ghost", 500), ("phantom", 500)],
    ] {
        let mut objects = shop();
        objects.push(Object::Split(split(
            "s",
            "2024-01-01T00:00:00Z",
            "web",
            &backends,
        )));
        let policy = outbound(&index_with(objects), "web");
        assert_eq!(
            weights(&policy.routes[0].rules[0]),
            vec![("web".into(), 1000)],
            "{backends:?}"
        );
    }
}

#[test]
fn deleting_a_backend_service_removes_it_from_the_split() {
    let mut objects = shop();
    objects.push(Object::Split(split(
        "canary",
        "2024-01-01T00:00:00Z",
        "web",
        &[("web", 900), ("web-v2", 100)],
    )));
    let index = index_with(objects);
    let mut rx = index.watch_outbound(ServicePortKey {
        namespace: "shop".into(),
        name: "web".into(),
        port: 80,
    });
    rx.borrow_and_update();
    index.apply([Change::Delete(ObjectRef {
        kind: Kind::Service,
        namespace: "shop".into(),
        name: "web-v2".into(),
    })]);
    assert!(rx.has_changed().unwrap());
    let policy = rx.borrow_and_update().clone().unwrap();
    assert_eq!(
        weights(&policy.routes[0].rules[0]),
        vec![("web".into(), 900)]
    );
}

#[test]
fn the_oldest_split_of_a_root_wins() {
    let mut objects = shop();
    objects.push(Object::Split(split(
        "young",
        "2025-06-01T00:00:00Z",
        "web",
        &[("web-v2", 1000)],
    )));
    objects.push(Object::Split(split(
        "old",
        "2024-06-01T00:00:00Z",
        "web",
        &[("web", 1000)],
    )));
    let index = index_with(objects);
    let policy = outbound(&index, "web");
    assert_eq!(
        policy.routes[0].origin,
        RouteOrigin::TrafficSplit {
            namespace: "shop".into(),
            name: "old".into()
        }
    );
    // Deleting the winner hands the root to the next oldest.
    index.apply([Change::Delete(ObjectRef {
        kind: Kind::TrafficSplit,
        namespace: "shop".into(),
        name: "old".into(),
    })]);
    assert_eq!(
        weights(&outbound(&index, "web").routes[0].rules[0]),
        vec![("web-v2".into(), 1000)]
    );
}

fn group(name: &str, matches: Vec<HttpMatch>) -> HttpRouteGroup {
    HttpRouteGroup {
        source: source(
            "shop",
            name,
            "specs.smi-spec.io/v1alpha4",
            "2024-01-01T00:00:00Z",
        ),
        matches,
    }
}

fn http_match(name: &str, path: &str, methods: &[&str]) -> HttpMatch {
    HttpMatch {
        name: name.into(),
        path_regex: Some(path.into()),
        methods: methods.iter().map(|m| (*m).into()).collect(),
        headers: vec![HeaderMatch {
            name: "x-canary".into(),
            value_regex: "yes".into(),
        }],
    }
}

#[test]
fn split_matches_come_from_route_groups_and_the_rest_goes_to_the_root() {
    let mut objects = shop();
    let mut s = split("canary", "2024-01-01T00:00:00Z", "web", &[("web-v2", 1000)]);
    s.matches = vec![
        RouteRef {
            kind: RouteKind::HttpRouteGroup,
            name: "api".into(),
        },
        RouteRef {
            kind: RouteKind::HttpRouteGroup,
            name: "missing".into(),
        },
    ];
    objects.push(Object::Split(s));
    objects.push(Object::HttpRouteGroup(group(
        "api",
        vec![http_match("api", "/api/.*", &["GET", "POST"])],
    )));
    let policy = outbound(&index_with(objects), "web");
    let rules = &policy.routes[0].rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(weights(&rules[0]), vec![("web-v2".into(), 1000)]);
    let methods: Vec<_> = rules[0].matches.iter().map(|m| m.method.clone()).collect();
    assert_eq!(methods, vec![Some("GET".into()), Some("POST".into())]);
    assert_eq!(
        rules[0].matches[0].path,
        Some(PathMatch::Regex("^(?:/api/.*).*".into()))
    );
    assert_eq!(
        rules[0].matches[0].headers,
        vec![("x-canary".into(), ValueMatch::Regex("yes".into()))]
    );
    assert_eq!(rules[1].matches, vec![match_all()]);
    assert_eq!(weights(&rules[1]), vec![("web".into(), 1000)]);
}

fn http_route(
    name: &str,
    created: &str,
    parent: &str,
    port: Option<u16>,
    rules: Vec<RouteRule>,
) -> Route {
    Route {
        source: source("shop", name, "gateway.networking.k8s.io/v1", created),
        parents: vec![RouteParent {
            service: parent.into(),
            port,
        }],
        rules,
        retryable: None,
    }
}

#[test]
fn an_http_route_takes_precedence_over_a_traffic_split() {
    let mut objects = shop();
    objects.push(Object::Split(split(
        "canary",
        "2020-01-01T00:00:00Z",
        "web",
        &[("web-v2", 1000)],
    )));
    objects.push(Object::HttpRoute(http_route(
        "web-route",
        "2025-01-01T00:00:00Z",
        "web",
        Some(80),
        vec![RouteRule {
            matches: vec![RouteMatch {
                path: Some(PathMatch::Exact("/login".into())),
                ..RouteMatch::default()
            }],
            backends: vec![
                RouteBackend {
                    service: "web".into(),
                    port: None,
                    weight_milli: 500,
                },
                RouteBackend {
                    service: "web-v3".into(),
                    port: Some(8081),
                    weight_milli: 500,
                },
            ],
            timeout: Some(Duration::from_secs(3)),
        }],
    )));
    let index = index_with(objects);
    let policy = outbound(&index, "web");
    assert_eq!(policy.routes.len(), 1);
    assert_eq!(
        policy.routes[0].origin,
        RouteOrigin::HttpRoute {
            namespace: "shop".into(),
            name: "web-route".into()
        }
    );
    let rule = &policy.routes[0].rules[0];
    assert_eq!(
        weights(rule),
        vec![("web".into(), 500), ("web-v3".into(), 500)]
    );
    assert_eq!(
        rule.backends[1].authority,
        "web-v3.shop.svc.cluster.local:8081"
    );
    assert_eq!(rule.timeout, Some(Duration::from_secs(3)));

    // The route is bound to port 80: another port still follows the split.
    let mut svc = service("shop", "web", "10.96.0.10", 80);
    svc.ports.push(ServicePort {
        name: Some("alt".into()),
        port: 8000,
        app_protocol: None,
    });
    index.apply([Change::Upsert(Object::Service(svc))]);
    let other = outbound_port(&index, "web", 8000);
    assert!(matches!(
        other.routes[0].origin,
        RouteOrigin::TrafficSplit { .. }
    ));
}

#[test]
fn timeouts_retries_and_failure_accrual_come_from_annotations() {
    let mut svc = service("shop", "web", "10.96.0.10", 80);
    svc.timeout = Some(Duration::from_millis(1500));
    svc.retryable = true;
    svc.failure_accrual = Some(3);
    let mut no_accrual = service("shop", "web-v2", "10.96.0.11", 80);
    no_accrual.failure_accrual = Some(0);
    let mut route = http_route(
        "r",
        "2025-01-01T00:00:00Z",
        "web-v2",
        None,
        vec![RouteRule {
            matches: vec![],
            backends: vec![],
            timeout: None,
        }],
    );
    route.retryable = Some(true);
    let index = index_with(vec![
        Object::Service(svc),
        Object::Service(no_accrual),
        Object::HttpRoute(route),
    ]);
    let web = outbound(&index, "web");
    let rule = &web.routes[0].rules[0];
    assert_eq!(rule.timeout, Some(Duration::from_millis(1500)));
    assert!(rule.retry);
    assert_eq!(web.failure_accrual, Some(3));
    let v2 = outbound(&index, "web-v2");
    assert_eq!(v2.failure_accrual, None);
    assert!(
        v2.routes[0].rules[0].retry,
        "the route's annotation allows retries"
    );
    assert_eq!(
        weights(&v2.routes[0].rules[0]),
        vec![("web-v2".into(), 1000)],
        "no backendRefs: the parent"
    );
    assert_eq!(v2.routes[0].rules[0].matches, vec![match_all()]);
}

/// Every SMI version's TrafficSplit, as written by users, gives the same route table.
#[test]
fn every_smi_split_version_routes_alike() {
    let docs = [
        serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "canary", "namespace": "shop"},
            "spec": {"service": "web", "backends": [
                {"service": "web", "weight": "900m"}, {"service": "web-v2", "weight": "100m"}]}
        }),
        serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": "canary", "namespace": "shop"},
            "spec": {"service": "web", "backends": [
                {"service": "web", "weight": 90}, {"service": "web-v2", "weight": 10}]}
        }),
        serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha3", "kind": "TrafficSplit",
            "metadata": {"name": "canary", "namespace": "shop"},
            "spec": {"service": "web", "backends": [
                {"service": "web", "weight": 9}, {"service": "web-v2", "weight": 1}]}
        }),
        serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
            "metadata": {"name": "canary", "namespace": "shop"},
            "spec": {"service": "web", "backends": [
                {"service": "web", "weight": 900}, {"service": "web-v2", "weight": 100}]}
        }),
    ];
    for doc in docs {
        let version = doc["apiVersion"].clone();
        let obj = crate::k8s::from_value(doc, "default")
            .unwrap_or_else(|e| panic!("{version}: {e}"))
            .expect("an SMI object");
        let mut objects = shop();
        objects.push(obj);
        let policy = outbound(&index_with(objects), "web");
        assert_eq!(
            weights(&policy.routes[0].rules[0]),
            vec![("web".into(), 900), ("web-v2".into(), 100)],
            "{version}"
        );
    }
}

// === inbound ===

fn inbound(index: &Index, pod: &str, port: u16) -> Arc<InboundServer> {
    index
        .watch_inbound(PodPortKey {
            namespace: "shop".into(),
            pod: pod.into(),
            port,
        })
        .borrow()
        .clone()
        .expect("pod exists")
}

fn sa(ns: &str, name: &str) -> ServiceAccountRef {
    ServiceAccountRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn target(
    name: &str,
    dest: &str,
    port: Option<u16>,
    sources: &[&str],
    rules: Vec<RuleRef>,
) -> AccessRule {
    AccessRule {
        source: source(
            "shop",
            name,
            "access.smi-spec.io/v1alpha3",
            "2024-01-01T00:00:00Z",
        ),
        destination: sa("shop", dest),
        port,
        sources: sources.iter().map(|s| sa("shop", s)).collect(),
        rules,
    }
}

fn identity(sa: &str) -> String {
    format!("{sa}.shop.serviceaccount.identity.linkerd-lite.cluster.local")
}

#[test]
fn the_default_policy_applies_without_traffic_targets() {
    for (policy, expected) in [
        (
            DefaultPolicy::AllUnauthenticated,
            Some(Clients::Unauthenticated),
        ),
        (DefaultPolicy::AllAuthenticated, Some(Clients::AnyMeshTls)),
        (DefaultPolicy::Deny, None),
    ] {
        let index = Index::new(IndexConfig {
            default_policy: policy,
            ..IndexConfig::default()
        });
        index.apply(shop().into_iter().map(Change::Upsert));
        let server = inbound(&index, "web-1", 8080);
        assert_eq!(server.protocol, InboundProtocol::Detect);
        assert_eq!(
            server.server_ips,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let clients: Vec<_> = server
            .authorizations
            .iter()
            .map(|a| a.clients.clone())
            .collect();
        assert_eq!(
            clients,
            expected.clone().into_iter().collect::<Vec<_>>(),
            "{policy:?}"
        );
        assert_eq!(server.http_routes[0].authorizations, server.authorizations);
        assert_eq!(server.labels["name"], policy.as_str());
    }
}

#[test]
fn traffic_targets_replace_the_default_and_scope_to_routes_and_ports() {
    let mut objects = shop();
    objects.push(Object::AccessRule(target(
        "all-from-gateway",
        "web",
        None,
        &["gateway"],
        vec![],
    )));
    objects.push(Object::AccessRule(target(
        "api-from-frontend",
        "web",
        Some(8080),
        &["frontend"],
        vec![RuleRef {
            route: RouteRef {
                kind: RouteKind::HttpRouteGroup,
                name: "api".into(),
            },
            matches: vec!["read".into()],
        }],
    )));
    objects.push(Object::AccessRule(target(
        "metrics-from-prom",
        "web",
        None,
        &["prometheus"],
        vec![RuleRef {
            route: RouteRef {
                kind: RouteKind::TcpRoute,
                name: "metrics".into(),
            },
            matches: vec![],
        }],
    )));
    objects.push(Object::HttpRouteGroup(group(
        "api",
        vec![
            http_match("read", "/api/.*", &["GET"]),
            http_match("write", "/api/.*", &["POST"]),
        ],
    )));
    objects.push(Object::PortRoute(PortRoute {
        source: source(
            "shop",
            "metrics",
            "specs.smi-spec.io/v1alpha4",
            "2024-01-01T00:00:00Z",
        ),
        kind: RouteKind::TcpRoute,
        ports: vec![9100],
    }));
    let index = index_with(objects);

    let app = inbound(&index, "web-1", 8080);
    let ids = |authz: &[Authz]| -> Vec<String> {
        authz
            .iter()
            .flat_map(|a| match &a.clients {
                Clients::Identities(ids) => ids.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    assert_eq!(ids(&app.authorizations), vec![identity("gateway")]);
    assert_eq!(app.http_routes.len(), 2);
    let api = &app.http_routes[1];
    assert_eq!(api.matches.len(), 1, "only the `read` match is allowed");
    assert_eq!(api.name, "traffictarget:api-from-frontend");
    assert_eq!(api.matches[0].method.as_deref(), Some("GET"));
    assert_eq!(
        ids(&api.authorizations),
        vec![identity("frontend"), identity("gateway")]
    );

    let metrics = inbound(&index, "web-1", 9100);
    assert_eq!(
        ids(&metrics.authorizations),
        vec![identity("gateway"), identity("prometheus")]
    );
    assert_eq!(
        metrics.http_routes.len(),
        1,
        "the api target is bound to port 8080"
    );

    // A pod with another service account still gets the default policy.
    let other = inbound(&index, "web-v2-1", 8080);
    assert_eq!(other.authorizations[0].clients, Clients::Unauthenticated);
}

#[test]
fn inbound_protocols_follow_annotations_and_port_names() {
    let mut p = pod("shop", "web-1", "10.0.0.1", "web", true);
    p.opaque_ports.insert(5432);
    p.port_protocols.insert(8080, AppProtocol::Http1);
    p.port_protocols.insert(9090, AppProtocol::Http2);
    let index = index_with(vec![Object::Pod(p)]);
    assert_eq!(
        inbound(&index, "web-1", 5432).protocol,
        InboundProtocol::Opaque
    );
    assert_eq!(
        inbound(&index, "web-1", 8080).protocol,
        InboundProtocol::Http1
    );
    assert_eq!(
        inbound(&index, "web-1", 9090).protocol,
        InboundProtocol::Http2
    );
    assert_eq!(
        inbound(&index, "web-1", 7000).protocol,
        InboundProtocol::Detect
    );
    let unknown = index
        .watch_inbound(PodPortKey {
            namespace: "shop".into(),
            pod: "ghost".into(),
            port: 80,
        })
        .borrow()
        .clone();
    assert!(unknown.is_none());
}
