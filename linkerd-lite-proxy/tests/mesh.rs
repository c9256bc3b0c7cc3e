//! Client → outbound proxy → inbound proxy → server, over mTLS, on loopback. The
//! proxies run in-process (the library's `Proxy`) with certificates from a test CA;
//! discovery comes from a scripted destination service over real gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use linkerd_lite_proxy::env::{Config, DefaultPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A meshed pair: the client-side proxy `client` (identity `APP_ID`) discovers
/// through `dst`; the server-side proxy `server` (identity `WEB_ID`) fronts apps.
struct Mesh {
    dst: TestDestination,
    client: RunningProxy,
    server: RunningProxy,
}

impl Mesh {
    async fn new(tweak_server: impl FnOnce(&mut Config)) -> Self {
        let ca = TestCa::new();
        let dst = TestDestination::default();
        let dst_addr = dst.spawn().await;
        let mut server_cfg = test_config();
        server_cfg.destination_addr = Some(dst_addr.to_string());
        tweak_server(&mut server_cfg);
        let server = start_proxy(server_cfg, Some(ca.issue(WEB_ID))).await;
        let client_cfg = Config {
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

    /// Announces `app` as the meshed endpoint of `authority`, behind the server proxy.
    fn route(&self, authority: &str, app: SocketAddr, pod: &str) {
        let ep = Ep::meshed(app, WEB_ID, self.server.addrs.inbound.port(), pod);
        self.dst.set(authority, vec![ep]);
    }
}

#[tokio::test]
async fn http1_over_mtls_carries_the_client_identity_and_strips_spoofs() {
    let mesh = Mesh::new(|_| {}).await;
    let app = app_server("web", Duration::ZERO).await;
    mesh.route("web.test:80", app, "web-0");

    let mut c = H1::connect(mesh.client.addrs.outbound).await;
    for _ in 0..3 {
        let r = c
            .get(
                "web.test",
                "/hello",
                &[(
                    "l5d-client-id",
                    "admin.evil.serviceaccount.identity.linkerd-lite.cluster.local",
                )],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body, "web /hello ");
        assert_eq!(r.header("x-client-id"), APP_ID, "spoofed header replaced");
        assert_eq!(r.header("x-version"), "HTTP/1.1", "app sees HTTP/1 again");
    }

    let client_metrics = metrics(mesh.client.addrs.admin).await;
    assert!(
        client_metrics.contains(&format!(
            "request_total{{direction=\"outbound\",authority=\"web.test:80\",tls=\"true\",server_id=\"{WEB_ID}\",dst_namespace=\"shop\",dst_pod=\"web-0\"}} 3"
        )),
        "{client_metrics}"
    );
    assert!(client_metrics.contains("status_code=\"200\",classification=\"success\"} 3"));
    // More HTTP/1 clients share the one multiplexed HTTP/2 connection between the
    // proxies.
    for _ in 0..3 {
        let mut other = H1::connect(mesh.client.addrs.outbound).await;
        assert_eq!(other.get("web.test", "/", &[]).await.status, StatusCode::OK);
    }
    let server_metrics = metrics(mesh.server.addrs.admin).await;
    assert!(
        server_metrics.contains(&format!(
            "tcp_open_total{{direction=\"inbound\",peer=\"src\",tls=\"true\",client_id=\"{APP_ID}\"}} 1"
        )),
        "{server_metrics}"
    );
}

#[tokio::test]
async fn http2_over_mtls() {
    let mesh = Mesh::new(|_| {}).await;
    let app = app_server("web", Duration::ZERO).await;
    mesh.route("web.test:80", app, "web-0");

    let mut h2 = h2(mesh.client.addrs.outbound).await;
    let req = Request::post("http://web.test/echo")
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    let r = read(h2.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "web /echo ping");
    assert_eq!(r.header("x-version"), "HTTP/2.0");
    assert_eq!(r.header("x-client-id"), APP_ID);
}

#[tokio::test]
async fn grpc_server_streaming_with_trailers() {
    use linkerd2_proxy_api::destination::{
        GetDestination, destination_client::DestinationClient, update,
    };

    let mesh = Mesh::new(|_| {}).await;
    // The application is itself a gRPC server: another scripted destination service.
    let grpc_app = TestDestination::default();
    let grpc_addr = grpc_app.spawn().await;
    let backend = app_server("x", Duration::ZERO).await;
    grpc_app.set("svc.test:80", vec![Ep::plain(backend, "a")]);
    mesh.route("grpc.test:8086", grpc_addr, "grpc-0");

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.client.addrs.outbound))
            .unwrap()
            .origin("http://grpc.test:8086".parse().unwrap())
            .connect()
            .await
            .unwrap();
    let mut client = DestinationClient::new(channel);
    let get = |path: &str| GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    };
    let mut stream = client.get(get("svc.test:80")).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.update, Some(update::Update::Add(_))));
    // A change on the server streams through both proxies.
    grpc_app.set("svc.test:80", vec![]);
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(next.update, Some(update::Update::Remove(_))),
        "{next:?}"
    );

    // Statuses after messages travel in trailers, and classify the response.
    let mut ok = client.get(get("finite")).await.unwrap().into_inner();
    assert!(ok.message().await.unwrap().is_some());
    assert!(
        ok.message().await.unwrap().is_none(),
        "ends with grpc-status 0"
    );
    let mut failing = client
        .get(get("fail-after-one"))
        .await
        .unwrap()
        .into_inner();
    assert!(failing.message().await.unwrap().is_some());
    let err = failing.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "gone away");
    // A trailers-only error.
    let err = client.get_profile(get("svc.test:80")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(err.message(), "profiles are not scripted");

    let m = metrics(mesh.client.addrs.admin).await;
    let count = |class: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with("response_total{") && l.contains("grpc.test:8086"))
            .filter(|l| l.contains(&format!("classification=\"{class}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count("success"), 1, "{m}");
    assert_eq!(count("failure"), 2, "{m}");
}

#[tokio::test]
async fn websocket_style_upgrade_passes_through() {
    let mesh = Mesh::new(|_| {}).await;
    let app = app_server("web", Duration::ZERO).await;
    mesh.route("web.test:80", app, "web-0");

    let mut c = H1::connect(mesh.client.addrs.outbound).await;
    let req = Request::get("/chat")
        .header("host", "web.test")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = c.send(req).await;
    assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let up = hyper::upgrade::on(rsp).await.unwrap();
    let mut io = TokioIo::new(up);
    io.write_all(b"ping over the upgraded connection")
        .await
        .unwrap();
    let mut buf = [0u8; 33];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over the upgraded connection");
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

#[tokio::test]
async fn raw_tcp_over_mtls_without_detection_delay() {
    // The server proxy would stall a silent client for 10s if it detected.
    let mesh = Mesh::new(|c| c.detect_timeout = Duration::from_secs(10)).await;
    let smtp = speaks_first_server().await;
    mesh.route("mail.test:25", smtp, "mail-0");

    let start = tokio::time::Instant::now();
    let mut io = connect_tunnel(mesh.client.addrs.outbound, "mail.test:25").await;
    let mut greeting = [0u8; 11];
    io.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    io.write_all(b"HELO x\r\n").await.unwrap();
    let mut echo = [0u8; 8];
    io.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"HELO x\r\n");

    let m = metrics(mesh.server.addrs.admin).await;
    assert!(m.contains(&format!("tcp_open_total{{direction=\"inbound\",peer=\"src\",tls=\"true\",client_id=\"{APP_ID}\"}}")), "{m}");
}

#[tokio::test]
async fn server_speaks_first_on_an_opaque_port_is_not_delayed() {
    let smtp = speaks_first_server().await;
    let mut cfg = test_config();
    cfg.detect_timeout = Duration::from_secs(10);
    cfg.inbound_default_port = Some(smtp.port());
    cfg.inbound_opaque_ports = [smtp.port()].into();
    let proxy = start_proxy(cfg, None).await;
    let start = tokio::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addrs.inbound)
        .await
        .unwrap();
    let mut greeting = [0u8; 11];
    tcp.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn server_speaks_first_on_a_detected_port_waits_for_the_detect_timeout() {
    let smtp = speaks_first_server().await;
    let mut cfg = test_config();
    cfg.detect_timeout = Duration::from_millis(300);
    cfg.inbound_default_port = Some(smtp.port());
    cfg.inbound_opaque_ports = Default::default();
    let proxy = start_proxy(cfg, None).await;
    let start = tokio::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addrs.inbound)
        .await
        .unwrap();
    let mut greeting = [0u8; 11];
    tcp.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "why opaque ports exist"
    );
}

#[tokio::test]
async fn plaintext_from_an_unmeshed_client_works_under_the_default_policy() {
    let app = app_server("web", Duration::ZERO).await;
    let mut cfg = test_config();
    cfg.inbound_default_port = Some(app.port());
    let ca = TestCa::new();
    let proxy = start_proxy(cfg, Some(ca.issue(WEB_ID))).await;
    let mut c = H1::connect(proxy.addrs.inbound).await;
    let r = c.get("web", "/", &[("l5d-client-id", APP_ID)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("x-client-id"),
        "none",
        "unauthenticated spoof removed"
    );
}

#[tokio::test]
async fn all_authenticated_policy_refuses_plaintext_but_not_mtls() {
    let app = app_server("web", Duration::ZERO).await;
    let mesh = Mesh::new(|c| {
        c.default_policy = DefaultPolicy::AllAuthenticated;
        c.inbound_default_port = Some(app.port());
    })
    .await;
    mesh.route("web.test:80", app, "web-0");
    let mut plain = H1::connect(mesh.server.addrs.inbound).await;
    let r = plain.get("web", "/", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("l5d-proxy-error"), "client is not authorized");
    let mut meshed = H1::connect(mesh.client.addrs.outbound).await;
    let r = meshed.get("web.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn endpoints_change_live_and_empty_sets_fail_fast() {
    let mesh = Mesh::new(|_| {}).await;
    let a = app_server("a", Duration::ZERO).await;
    let b = app_server("b", Duration::ZERO).await;
    mesh.dst.set("web.test:80", vec![Ep::plain(a, "a")]);
    let mut c = H1::connect(mesh.client.addrs.outbound).await;
    assert_eq!(c.get("web.test", "/", &[]).await.header("x-server"), "a");

    mesh.dst.set("web.test:80", vec![Ep::plain(b, "b")]);
    assert_eventually!(
        c.get("web.test", "/", &[]).await.header("x-server") == "b",
        Duration::from_secs(5),
        "traffic never moved to b"
    );
    for _ in 0..5 {
        assert_eq!(c.get("web.test", "/", &[]).await.header("x-server"), "b");
    }

    mesh.dst.set("web.test:80", vec![]);
    assert_eventually!(
        c.get("web.test", "/", &[]).await.status == StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(5),
        "an empty endpoint set never failed fast"
    );
    let r = c.get("web.test", "/", &[]).await;
    assert_eq!(r.header("l5d-proxy-error"), "no endpoints available");
}

#[tokio::test]
async fn p2c_sends_more_traffic_to_the_faster_endpoint() {
    let mesh = Mesh::new(|_| {}).await;
    let fast = app_server("fast", Duration::ZERO).await;
    let slow = app_server("slow", Duration::from_millis(25)).await;
    mesh.dst.set(
        "web.test:80",
        vec![Ep::plain(fast, "fast"), Ep::plain(slow, "slow")],
    );
    let outbound = mesh.client.addrs.outbound;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = H1::connect(outbound).await;
                let mut fast = 0;
                for _ in 0..50 {
                    if c.get("web.test", "/", &[]).await.header("x-server") == "fast" {
                        fast += 1;
                    }
                }
                fast
            })
        })
        .collect();
    let mut fast_total = 0;
    for w in workers {
        fast_total += w.await.unwrap();
    }
    let share = f64::from(fast_total) / 200.0;
    assert!(share > 0.8, "fast endpoint share {share:.2}");
}

#[tokio::test]
async fn unknown_targets_are_forwarded_directly() {
    let mesh = Mesh::new(|_| {}).await;
    let app = app_server("direct", Duration::ZERO).await;
    let mut c = H1::connect(mesh.client.addrs.outbound).await;
    let r = c.get(&app.to_string(), "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-server"), "direct");
    assert!(mesh.dst.lookups.lock().unwrap().contains(&app.to_string()));
}

#[tokio::test]
async fn unreachable_endpoints_answer_502_with_a_reason() {
    let mesh = Mesh::new(|_| {}).await;
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    mesh.dst
        .set("gone.test:80", vec![Ep::plain(closed, "gone")]);
    let mut c = H1::connect(mesh.client.addrs.outbound).await;
    let r = c.get("gone.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("l5d-proxy-error"), "connection to endpoint failed");
    // The client connection survives the error.
    let r = c.get("gone.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn oversized_heads_are_refused_and_slow_clients_cut_off() {
    let mut cfg = test_config();
    cfg.max_header_bytes = 8192;
    cfg.header_read_timeout = Duration::from_millis(300);
    let proxy = start_proxy(cfg, None).await;

    let mut tcp = tokio::net::TcpStream::connect(proxy.addrs.outbound)
        .await
        .unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    tcp.write_all(big.as_bytes()).await.unwrap();
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    let mut slow = tokio::net::TcpStream::connect(proxy.addrs.outbound)
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut out = vec![];
    let res = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut out)).await;
    assert!(res.is_ok(), "slow client was never cut off");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let app = app_server("slow", Duration::from_millis(500)).await;
    let proxy = start_proxy(test_config(), None).await;
    let mut c = H1::connect(proxy.addrs.outbound).await;
    let host = app.to_string();
    let inflight = tokio::spawn(async move { c.get(&host, "/", &[]).await.status });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.shutdown.cancel();
    assert_eq!(inflight.await.unwrap(), StatusCode::OK);
    assert!(proxy.task.await.unwrap(), "drained within the grace period");
    assert!(
        tokio::net::TcpStream::connect(proxy.addrs.outbound)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn idle_targets_are_dropped() {
    let mut cfg = test_config();
    cfg.cache_idle_timeout = Duration::from_millis(200);
    let proxy = start_proxy(cfg, None).await;
    let app = app_server("web", Duration::ZERO).await;
    {
        let mut c = H1::connect(proxy.addrs.outbound).await;
        assert_eq!(
            c.get(&app.to_string(), "/", &[]).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(proxy.outbound.cached_targets(), 1);
    assert_eventually!(
        proxy.outbound.cached_targets() == 0,
        Duration::from_secs(5),
        "idle target was never dropped"
    );
}

fn server_policy(
    opaque: bool,
    permit: linkerd2_proxy_api::inbound::authn::Permit,
) -> linkerd2_proxy_api::inbound::Server {
    use linkerd2_proxy_api::inbound as api;
    api::Server {
        protocol: Some(api::ProxyProtocol {
            kind: Some(if opaque {
                api::proxy_protocol::Kind::Opaque(api::proxy_protocol::Opaque {})
            } else {
                api::proxy_protocol::Kind::Detect(Default::default())
            }),
        }),
        authorizations: vec![api::Authz {
            authentication: Some(api::Authn {
                permit: Some(permit),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn port_policy_admits_only_the_named_identities() {
    use linkerd2_proxy_api::inbound::{self as api, authn::permit_mesh_tls::Clients};
    let app = app_server("web", Duration::ZERO).await;
    let mesh = Mesh::new(|c| {
        c.inbound_workload = Some(r#"{"ns":"shop","pod":"web-0"}"#.into());
        c.inbound_default_port = Some(app.port());
    })
    .await;
    let only_app = |name: &str| {
        api::authn::Permit::MeshTls(api::authn::PermitMeshTls {
            clients: Some(Clients::Identities(
                api::authn::permit_mesh_tls::PermitClientIdentities {
                    identities: vec![api::Identity { name: name.into() }],
                    suffixes: vec![],
                },
            )),
        })
    };
    mesh.dst
        .set_policy(app.port(), server_policy(false, only_app(APP_ID)));
    mesh.route("web.test:80", app, "web-0");

    let mut plain = H1::connect(mesh.server.addrs.inbound).await;
    let r = plain.get("web", "/", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "default would have allowed this"
    );
    let mut meshed = H1::connect(mesh.client.addrs.outbound).await;
    let r = meshed.get("web.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header("x-client-id"), APP_ID);

    // A second app port whose policy names someone else refuses the same client.
    let other = app_server("other", Duration::ZERO).await;
    mesh.dst
        .set_policy(other.port(), server_policy(false, only_app(WEB_ID)));
    mesh.route("other.test:80", other, "other-0");
    let r = meshed.get("other.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_opaque_port_policy_skips_detection() {
    use linkerd2_proxy_api::inbound::{self as api};
    let smtp = speaks_first_server().await;
    let mesh = Mesh::new(|c| {
        c.inbound_workload = Some(r#"{"ns":"shop","pod":"web-0"}"#.into());
        c.inbound_default_port = Some(smtp.port());
        c.inbound_opaque_ports = Default::default();
        c.detect_timeout = Duration::from_secs(10);
    })
    .await;
    let anyone = api::authn::Permit::Unauthenticated(api::authn::PermitUnauthenticated {});
    mesh.dst
        .set_policy(smtp.port(), server_policy(true, anyone));
    let start = tokio::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(mesh.server.addrs.inbound)
        .await
        .unwrap();
    let mut greeting = [0u8; 11];
    tcp.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn slow_responses_time_out_with_504() {
    let app = app_server("slow", Duration::from_millis(500)).await;
    let mut cfg = test_config();
    cfg.response_timeout = Some(Duration::from_millis(100));
    let proxy = start_proxy(cfg, None).await;
    let mut c = H1::connect(proxy.addrs.outbound).await;
    let r = c.get(&app.to_string(), "/", &[]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.header("l5d-proxy-error"), "response timed out");
}
