//! Per-route inbound authorization, end to end: a client proxy (identity `APP_ID`)
//! and a server proxy (identity `WEB_ID`) over mTLS on loopback, with the server's
//! policy scripted over real `InboundServerPolicies.WatchPort` gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::{
    http_route::{self as hr, path_match},
    http_types::HttpMethod,
    inbound::{
        self as api,
        authn::{Permit, PermitMeshTls, PermitUnauthenticated, permit_mesh_tls},
        proxy_protocol::Kind,
    },
    meta,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WORKLOAD: &str = r#"{"ns":"shop","pod":"web-0"}"#;

struct Mesh {
    dst: TestDestination,
    client: RunningProxy,
    server: RunningProxy,
}

impl Mesh {
    /// A meshed pair; the server proxy watches its policy for `WORKLOAD` and sends
    /// plaintext connections (which carry no transport header) to `app`.
    async fn new(app: SocketAddr) -> Self {
        let ca = TestCa::new();
        let dst = TestDestination::default();
        let dst_addr = dst.spawn().await;
        let mut server_cfg = test_config();
        server_cfg.destination_addr = Some(dst_addr.to_string());
        server_cfg.inbound_workload = Some(WORKLOAD.into());
        server_cfg.inbound_default_port = Some(app.port());
        let server = start_proxy(server_cfg, Some(ca.issue(WEB_ID))).await;
        let client_cfg = linkerd_lite_proxy::env::Config {
            destination_addr: Some(dst_addr.to_string()),
            ..test_config()
        };
        let client = start_proxy(client_cfg, Some(ca.issue(APP_ID))).await;
        Self {
            dst,
            client,
            server,
        }
    }

    /// Announces `app` as `authority`'s meshed endpoint behind the server proxy.
    fn route(&self, authority: &str, app: SocketAddr, pod: &str) {
        let ep = Ep::meshed(app, WEB_ID, self.server.addrs.inbound.port(), pod);
        self.dst.set(authority, vec![ep]);
    }

    /// A plaintext (unauthenticated) HTTP/1 connection straight to the server
    /// proxy's inbound listener (so, to the default port's application).
    async fn plain(&self) -> H1 {
        H1::connect(self.server.addrs.inbound).await
    }
}

// === policy builders ===

fn identities(names: &[&str]) -> api::Authz {
    authz(
        names.join(","),
        Permit::MeshTls(PermitMeshTls {
            clients: Some(permit_mesh_tls::Clients::Identities(
                permit_mesh_tls::PermitClientIdentities {
                    identities: names
                        .iter()
                        .map(|n| api::Identity { name: (*n).into() })
                        .collect(),
                    suffixes: vec![],
                },
            )),
        }),
    )
}

fn anyone() -> api::Authz {
    authz(
        "anyone".into(),
        Permit::Unauthenticated(PermitUnauthenticated {}),
    )
}

fn authz(name: String, permit: Permit) -> api::Authz {
    api::Authz {
        authentication: Some(api::Authn {
            permit: Some(permit),
        }),
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "access.smi-spec.io".into(),
                kind: "TrafficTarget".into(),
                name,
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

fn prefix(p: &str) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

fn get(m: hr::HttpRouteMatch) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        method: Some(HttpMethod::from(Method::GET)),
        ..m
    }
}

fn route(name: &str, matches: Vec<hr::HttpRouteMatch>, authz: Vec<api::Authz>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default(name.into())),
        }),
        hosts: vec![],
        authorizations: authz,
        rules: vec![api::http_route::Rule {
            matches,
            filters: vec![],
        }],
    }
}

fn server(kind: Kind, authz: Vec<api::Authz>) -> api::Server {
    api::Server {
        protocol: Some(api::ProxyProtocol { kind: Some(kind) }),
        authorizations: authz,
        ..Default::default()
    }
}

fn detect(routes: Vec<api::HttpRoute>, authz: Vec<api::Authz>) -> api::Server {
    server(
        Kind::Detect(api::proxy_protocol::Detect {
            http_routes: routes,
            ..Default::default()
        }),
        authz,
    )
}

/// Like the destination's answer to a TrafficTarget admitting `APP_ID` to
/// `GET /api` only and anyone to `/public`: no server-level authorization, a
/// default route admitting nobody, and one route per rule.
fn api_for_app_only() -> api::Server {
    detect(
        vec![
            route("default", vec![prefix("/")], vec![]),
            route(
                "traffictarget:api",
                vec![get(prefix("/api"))],
                vec![identities(&[APP_ID])],
            ),
            route(
                "traffictarget:public",
                vec![prefix("/public")],
                vec![anyone()],
            ),
        ],
        vec![],
    )
}

// === tests ===

#[tokio::test]
async fn a_client_admitted_to_one_route_is_refused_on_the_others() {
    let app = app_server("web", Duration::ZERO).await;
    let mesh = Mesh::new(app).await;
    mesh.dst.set_policy(app.port(), api_for_app_only());
    mesh.route("web.test:80", app, "web-0");

    let mut c = H1::connect(mesh.client.addrs.outbound).await;
    let r = c.get("web.test", "/api/books", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "web /api/books ");
    assert_eq!(r.header("x-client-id"), APP_ID);

    for (method, path) in [(Method::GET, "/admin"), (Method::POST, "/api/books")] {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", "web.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = read(c.send(req).await).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(r.header("l5d-proxy-error"), "client is not authorized");
        assert!(
            !r.headers.contains_key("x-server"),
            "the application never saw it"
        );
    }

    let m = metrics(mesh.server.addrs.admin).await;
    let port = app.port();
    for want in [
        format!(
            r#"inbound_http_authz_allow_total{{target_port="{port}",route_group="",route_kind="default",route_name="traffictarget:api",authz_group="access.smi-spec.io",authz_kind="traffictarget",authz_name="{APP_ID}"}} 1"#
        ),
        format!(
            r#"inbound_http_authz_deny_total{{target_port="{port}",route_group="",route_kind="default",route_name="default"}} 2"#
        ),
    ] {
        assert!(m.contains(&want), "missing {want} in\n{m}");
    }
}

#[tokio::test]
async fn unauthenticated_clients_reach_open_routes_but_not_mtls_ones() {
    let app = app_server("web", Duration::ZERO).await;
    let mesh = Mesh::new(app).await;
    mesh.dst.set_policy(app.port(), api_for_app_only());
    mesh.route("web.test:80", app, "web-0");

    // The connection is not refused up front although the server-level
    // authorizations are empty: a route admits unauthenticated clients.
    let mut plain = mesh.plain().await;
    let host = format!("127.0.0.1:{}", app.port());
    let r = plain.get(&host, "/api/books", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "route needs mTLS");
    let r = plain.get(&host, "/public/index.html", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header("x-client-id"), "none");
}

#[tokio::test]
async fn a_request_no_route_matches_gets_404() {
    let app = app_server("web", Duration::ZERO).await;
    let mesh = Mesh::new(app).await;
    let only_api = detect(
        vec![route("api", vec![prefix("/api")], vec![anyone()])],
        vec![anyone()],
    );
    mesh.dst.set_policy(app.port(), only_api);
    mesh.route("web.test:80", app, "web-0");

    let mut c = H1::connect(mesh.client.addrs.outbound).await;
    assert_eq!(c.get("web.test", "/api", &[]).await.status, StatusCode::OK);
    let r = c.get("web.test", "/apix", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("l5d-proxy-error"), "no route found for request");
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_request_on_an_open_connection() {
    let app = app_server("web", Duration::ZERO).await;
    let mesh = Mesh::new(app).await;
    mesh.dst.set_policy(app.port(), api_for_app_only());
    mesh.route("web.test:80", app, "web-0");
    let host = format!("127.0.0.1:{}", app.port());

    let mut plain = mesh.plain().await;
    let r = plain.get(&host, "/api", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Open the API route to everyone: the same connection's next requests pass.
    let open = detect(
        vec![
            route("default", vec![prefix("/")], vec![]),
            route("api", vec![get(prefix("/api"))], vec![anyone()]),
        ],
        vec![],
    );
    mesh.dst.set_policy(app.port(), open);
    assert_eventually!(
        plain.get(&host, "/api", &[]).await.status == StatusCode::OK,
        Duration::from_secs(5),
        "the open connection never saw the new policy"
    );

    // And back.
    mesh.dst.set_policy(app.port(), api_for_app_only());
    assert_eventually!(
        plain.get(&host, "/api", &[]).await.status == StatusCode::FORBIDDEN,
        Duration::from_secs(5),
        "the open connection never saw the policy revoked"
    );
}

#[tokio::test]
async fn opaque_connections_use_the_server_level_authorizations() {
    let smtp = speaks_first_server().await;
    let mesh = Mesh::new(smtp).await;
    mesh.route("mail.test:25", smtp, "mail-0");
    // HTTP routes admit anyone, but TCP is up to the server-level authorizations.
    let routes = || vec![route("all", vec![prefix("/")], vec![anyone()])];
    mesh.dst
        .set_policy(smtp.port(), detect(routes(), vec![identities(&[WEB_ID])]));

    let mut io = connect_tunnel(mesh.client.addrs.outbound, "mail.test:25").await;
    let mut buf = [0u8; 11];
    let refused = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(refused, Ok(0) | Err(_)),
        "APP_ID is not admitted at the server level: {refused:?}"
    );

    mesh.dst
        .set_policy(smtp.port(), detect(routes(), vec![identities(&[APP_ID])]));
    assert_eventually!(
        {
            let mut io = connect_tunnel(mesh.client.addrs.outbound, "mail.test:25").await;
            let mut greeting = [0u8; 11];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut greeting)).await,
                Ok(Ok(_))
            ) && &greeting == b"220 ready\r\n"
                && io.write_all(b"HELO\r\n").await.is_ok()
        },
        Duration::from_secs(5),
        "APP_ID was never admitted to the opaque port"
    );

    // An opaque port whose policy admits nobody closes a plaintext client too.
    let plain_smtp = speaks_first_server().await;
    let opaque = server(Kind::Opaque(api::proxy_protocol::Opaque {}), vec![]);
    let mut cfg = test_config();
    cfg.destination_addr = Some(mesh.dst.spawn().await.to_string());
    cfg.inbound_workload = Some(WORKLOAD.into());
    cfg.inbound_default_port = Some(plain_smtp.port());
    mesh.dst.set_policy(plain_smtp.port(), opaque);
    let proxy = start_proxy(cfg, None).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addrs.inbound)
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TokioIo<hyper::upgrade::Upgraded> {
    let mut c = H1::connect(proxy).await;
    let req = Request::connect(authority)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = c.send(req).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    TokioIo::new(hyper::upgrade::on(rsp).await.unwrap())
}
