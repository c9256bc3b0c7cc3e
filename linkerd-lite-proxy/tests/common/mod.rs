//! Shared test fixtures: a CA, a scripted destination service, application servers,
//! in-process proxies and small HTTP clients. Everything runs on real loopback
//! sockets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod apps;
pub mod policy;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd_lite_proxy::{
    env::Config,
    proxy::{Addrs, Proxy},
    tls::{StaticTls, TlsProvider},
};
use linkerd2_proxy_api::{
    destination::{
        self as api, destination_server::Destination, destination_server::DestinationServer,
        protocol_hint, update,
    },
    inbound::{
        self, inbound_server_policies_server::InboundServerPolicies,
        inbound_server_policies_server::InboundServerPoliciesServer,
    },
    net::TcpAddress,
    outbound::{
        self as outbound_api, outbound_policies_server::OutboundPolicies,
        outbound_policies_server::OutboundPoliciesServer, traffic_spec,
    },
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Polls `cond` until it holds or `timeout` passes.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $timeout;
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

pub const WEB_ID: &str = "web.shop.serviceaccount.identity.linkerd-lite.cluster.local";
pub const APP_ID: &str = "app.shop.serviceaccount.identity.linkerd-lite.cluster.local";

// === CA ===

pub struct TestCa {
    pub cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "identity.linkerd-lite.cluster.local");
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }

    pub fn issue(&self, name: &str) -> Arc<dyn TlsProvider> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        Arc::new(StaticTls::new(name, vec![cert.der().clone()], key, self.roots()).unwrap())
    }
}

// === Destination ===

/// One endpoint as the scripted destination announces it.
#[derive(Clone, Debug)]
pub struct Ep {
    pub addr: SocketAddr,
    pub identity: Option<String>,
    pub inbound_port: Option<u16>,
    pub pod: String,
    pub opaque: bool,
}

impl Ep {
    pub fn plain(addr: SocketAddr, pod: &str) -> Self {
        Self {
            addr,
            identity: None,
            inbound_port: None,
            pod: pod.into(),
            opaque: false,
        }
    }

    /// A plain endpoint whose traffic discovery marks as opaque.
    pub fn opaque(addr: SocketAddr, pod: &str) -> Self {
        Self {
            opaque: true,
            ..Self::plain(addr, pod)
        }
    }

    pub fn meshed(addr: SocketAddr, identity: &str, inbound_port: u16, pod: &str) -> Self {
        Self {
            addr,
            identity: Some(identity.into()),
            inbound_port: Some(inbound_port),
            pod: pod.into(),
            opaque: false,
        }
    }

    fn tcp(&self) -> TcpAddress {
        TcpAddress {
            ip: Some(self.addr.ip().into()),
            port: u32::from(self.addr.port()),
        }
    }

    fn weighted(&self) -> api::WeightedAddr {
        api::WeightedAddr {
            addr: Some(self.tcp()),
            weight: 10_000,
            metric_labels: [("pod".to_string(), self.pod.clone())].into(),
            tls_identity: self.identity.as_ref().map(|name| api::TlsIdentity {
                server_name: Some(api::tls_identity::DnsLikeIdentity { name: name.clone() }),
                strategy: Some(api::tls_identity::Strategy::DnsLikeIdentity(
                    api::tls_identity::DnsLikeIdentity { name: name.clone() },
                )),
            }),
            protocol_hint: if self.opaque {
                Some(api::ProtocolHint {
                    opaque_transport: None,
                    protocol: Some(protocol_hint::Protocol::Opaque(protocol_hint::Opaque {})),
                })
            } else {
                self.identity.as_ref().map(|_| api::ProtocolHint {
                    opaque_transport: self.inbound_port.map(|p| protocol_hint::OpaqueTransport {
                        inbound_port: u32::from(p),
                    }),
                    protocol: Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
                })
            },
            ..Default::default()
        }
    }
}

/// A scripted profile: `(authority, weight)` backends and a retry budget.
type Split = (Vec<(String, u32)>, Option<api::RetryBudget>);

/// A destination service whose answers the test scripts.
#[derive(Clone, Default)]
pub struct TestDestination {
    sets: Arc<Mutex<HashMap<String, watch::Sender<Vec<Ep>>>>>,
    policies: Arc<Mutex<HashMap<u32, watch::Sender<inbound::Server>>>>,
    pub lookups: Arc<Mutex<Vec<String>>>,
    splits: Arc<Mutex<HashMap<String, watch::Sender<Split>>>>,
    /// `GetProfile` streams currently open.
    pub profile_streams: Arc<std::sync::atomic::AtomicUsize>,
    outbound: Arc<Mutex<HashMap<String, watch::Sender<outbound_api::OutboundPolicy>>>>,
    /// `OutboundPolicies.Watch` calls, by target (authority or `ip:port`).
    pub policy_watches: Arc<Mutex<Vec<String>>>,
    /// `OutboundPolicies.Watch` streams currently open.
    pub policy_streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestDestination {
    /// Sets `path`'s endpoints; open streams receive the difference.
    pub fn set(&self, path: &str, eps: Vec<Ep>) {
        let mut sets = self.sets.lock().unwrap();
        match sets.get(path) {
            Some(tx) => {
                tx.send_replace(eps);
            }
            None => {
                sets.insert(path.to_string(), watch::channel(eps).0);
            }
        }
    }

    /// Sets `path`'s profile to a traffic split over `(authority, weight)` backends;
    /// open profile streams receive the new profile. Paths without a split answer
    /// `GetProfile` with `Unimplemented`.
    pub fn set_split(&self, path: &str, backends: &[(&str, u32)]) {
        let backends: Vec<_> = backends.iter().map(|(a, w)| (a.to_string(), *w)).collect();
        let mut splits = self.splits.lock().unwrap();
        match splits.get(path) {
            Some(tx) => {
                tx.send_modify(|s| s.0 = backends);
            }
            None => {
                splits.insert(path.to_string(), watch::channel((backends, None)).0);
            }
        }
    }

    /// Sets the retry budget of `path`'s profile (creating a profile without a
    /// split if there is none).
    pub fn set_retry_budget(&self, path: &str, ratio: f32, min_per_second: u32, ttl: Duration) {
        let budget = api::RetryBudget {
            retry_ratio: ratio,
            min_retries_per_second: min_per_second,
            ttl: Some(ttl.try_into().unwrap()),
        };
        let mut splits = self.splits.lock().unwrap();
        match splits.get(path) {
            Some(tx) => {
                tx.send_modify(|s| s.1 = Some(budget));
            }
            None => {
                splits.insert(path.to_string(), watch::channel((vec![], Some(budget))).0);
            }
        }
    }

    /// Sets the outbound policy of `target` (an authority or `ip:port`); open
    /// `OutboundPolicies.Watch` streams receive it. Unscripted targets answer
    /// `NotFound`, as the real destination does for non-Services.
    pub fn set_outbound(&self, target: &str, policy: outbound_api::OutboundPolicy) {
        let mut policies = self.outbound.lock().unwrap();
        match policies.get(target) {
            Some(tx) => {
                tx.send_replace(policy);
            }
            None => {
                policies.insert(target.to_string(), watch::channel(policy).0);
            }
        }
    }

    /// How many `OutboundPolicies.Watch` streams are open.
    pub fn open_policy_streams(&self) -> usize {
        self.policy_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many `GetProfile` streams are open.
    pub fn open_profile_streams(&self) -> usize {
        self.profile_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets the inbound policy of `port` (for any workload); open `WatchPort`
    /// streams receive the new policy.
    pub fn set_policy(&self, port: u16, server: inbound::Server) {
        let mut policies = self.policies.lock().unwrap();
        match policies.get(&u32::from(port)) {
            Some(tx) => {
                tx.send_replace(server);
            }
            None => {
                policies.insert(u32::from(port), watch::channel(server).0);
            }
        }
    }

    /// Serves on a fresh loopback port.
    pub async fn spawn(&self) -> SocketAddr {
        self.spawn_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves on `addr`.
    pub async fn spawn_on(&self, addr: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = DestinationServer::new(self.clone());
        let policy = InboundServerPoliciesServer::new(self.clone());
        let outbound = OutboundPoliciesServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .add_service(policy)
                .add_service(outbound)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

#[tonic::async_trait]
impl Destination for TestDestination {
    type GetStream = ReceiverStream<Result<api::Update, tonic::Status>>;
    type GetProfileStream = ReceiverStream<Result<api::DestinationProfile, tonic::Status>>;

    async fn get(
        &self,
        req: tonic::Request<api::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        let path = req.into_inner().path;
        self.lookups.lock().unwrap().push(path.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // Finite streams, ending with OK or an error status in the trailers.
        if path == "finite" || path == "fail-after-one" {
            let ne = update::Update::NoEndpoints(api::NoEndpoints { exists: true });
            tx.send(Ok(api::Update { update: Some(ne) })).await.unwrap();
            if path == "fail-after-one" {
                tx.send(Err(tonic::Status::unavailable("gone away")))
                    .await
                    .unwrap();
            }
            return Ok(tonic::Response::new(ReceiverStream::new(rx)));
        }
        let watch = self.sets.lock().unwrap().get(&path).map(|s| s.subscribe());
        tokio::spawn(async move {
            let Some(mut watch) = watch else {
                let ne = update::Update::NoEndpoints(api::NoEndpoints { exists: false });
                let _ = tx.send(Ok(api::Update { update: Some(ne) })).await;
                tx.closed().await;
                return;
            };
            let mut prev: Vec<Ep> = vec![];
            loop {
                let cur = watch.borrow_and_update().clone();
                let removed: Vec<_> = prev
                    .iter()
                    .filter(|p| !cur.iter().any(|c| c.addr == p.addr))
                    .map(Ep::tcp)
                    .collect();
                if !removed.is_empty() {
                    let up = update::Update::Remove(api::AddrSet { addrs: removed });
                    if tx.send(Ok(api::Update { update: Some(up) })).await.is_err() {
                        return;
                    }
                }
                let added: Vec<_> = cur
                    .iter()
                    .filter(|c| !prev.iter().any(|p| p.addr == c.addr))
                    .map(Ep::weighted)
                    .collect();
                let up = if cur.is_empty() {
                    Some(update::Update::NoEndpoints(api::NoEndpoints {
                        exists: true,
                    }))
                } else if !added.is_empty() {
                    Some(update::Update::Add(api::WeightedAddrSet {
                        addrs: added,
                        metric_labels: [("namespace".to_string(), "shop".to_string())].into(),
                    }))
                } else {
                    None
                };
                if let Some(up) = up
                    && tx.send(Ok(api::Update { update: Some(up) })).await.is_err()
                {
                    return;
                }
                prev = cur;
                tokio::select! {
                    r = watch.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    async fn get_profile(
        &self,
        req: tonic::Request<api::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        use std::sync::atomic::Ordering;
        let path = req.into_inner().path;
        let watch = self
            .splits
            .lock()
            .unwrap()
            .get(&path)
            .map(|s| s.subscribe());
        let Some(mut watch) = watch else {
            return Err(tonic::Status::unimplemented("profiles are not scripted"));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let open = self.profile_streams.clone();
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            loop {
                let (backends, retry_budget) = watch.borrow_and_update().clone();
                let profile = api::DestinationProfile {
                    fully_qualified_name: path.clone(),
                    retry_budget,
                    dst_overrides: backends
                        .into_iter()
                        .map(|(authority, weight)| api::WeightedDst {
                            authority,
                            weight,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                if tx.send(Ok(profile)).await.is_err() {
                    break;
                }
                tokio::select! {
                    r = watch.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl OutboundPolicies for TestDestination {
    type WatchStream = ReceiverStream<Result<outbound_api::OutboundPolicy, tonic::Status>>;

    async fn get(
        &self,
        _req: tonic::Request<outbound_api::TrafficSpec>,
    ) -> Result<tonic::Response<outbound_api::OutboundPolicy>, tonic::Status> {
        Err(tonic::Status::unimplemented("only watch is scripted"))
    }

    async fn watch(
        &self,
        req: tonic::Request<outbound_api::TrafficSpec>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        use std::sync::atomic::Ordering;
        let target = match req.into_inner().target {
            Some(traffic_spec::Target::Authority(a)) => a,
            Some(traffic_spec::Target::Addr(a)) => {
                let ip = std::net::IpAddr::try_from(a.ip.unwrap()).unwrap();
                SocketAddr::new(ip, a.port as u16).to_string()
            }
            None => return Err(tonic::Status::invalid_argument("no target")),
        };
        self.policy_watches.lock().unwrap().push(target.clone());
        let watch = self
            .outbound
            .lock()
            .unwrap()
            .get(&target)
            .map(|s| s.subscribe());
        let Some(watch) = watch else {
            return Err(tonic::Status::not_found("not a scripted service"));
        };
        let open = self.policy_streams.clone();
        open.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(stream_watch(watch, move || {
            open.fetch_sub(1, Ordering::SeqCst);
        })))
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for TestDestination {
    type WatchPortStream = ReceiverStream<Result<inbound::Server, tonic::Status>>;

    async fn get_port(
        &self,
        _req: tonic::Request<inbound::PortSpec>,
    ) -> Result<tonic::Response<inbound::Server>, tonic::Status> {
        Err(tonic::Status::unimplemented("only watch_port is scripted"))
    }

    async fn watch_port(
        &self,
        req: tonic::Request<inbound::PortSpec>,
    ) -> Result<tonic::Response<Self::WatchPortStream>, tonic::Status> {
        let spec = req.into_inner();
        assert_eq!(spec.workload, r#"{"ns":"shop","pod":"web-0"}"#);
        let watch = self
            .policies
            .lock()
            .unwrap()
            .get(&spec.port)
            .map(|tx| tx.subscribe());
        let watch = watch.ok_or_else(|| tonic::Status::not_found("no server"))?;
        Ok(tonic::Response::new(stream_watch(watch, || {})))
    }
}

/// Streams a scripted watch's current value and every change until either side
/// goes away; then calls `done`.
fn stream_watch<T: Clone + Send + Sync + 'static>(
    mut watch: watch::Receiver<T>,
    done: impl FnOnce() + Send + 'static,
) -> ReceiverStream<Result<T, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let value = watch.borrow_and_update().clone();
            if tx.send(Ok(value)).await.is_err() {
                break;
            }
            tokio::select! {
                r = watch.changed() => if r.is_err() { break },
                _ = tx.closed() => break,
            }
        }
        done();
    });
    ReceiverStream::new(rx)
}

// === Application servers ===

/// An HTTP/1 + HTTP/2 application that reports what it saw. `delay` slows every
/// response.
pub async fn app_server(name: &'static str, delay: Duration) -> SocketAddr {
    app_server_on(SocketAddr::from(([127, 0, 0, 1], 0)), name, delay).await
}

/// [`app_server`] on a given address.
pub async fn app_server_on(addr: SocketAddr, name: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle_app(name, delay, req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn handle_app(
    name: &'static str,
    delay: Duration,
    mut req: Request<Incoming>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>, Infallible> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let client_id = req
        .headers()
        .get("l5d-client-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| "none".into());
    let version = format!("{:?}", req.version());
    if req.headers().get("upgrade").is_some_and(|u| u == "echo") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let rsp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
            .unwrap();
        return Ok(rsp);
    }
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = format!("{name} {path} {}", String::from_utf8_lossy(&body));
    let rsp = Response::builder()
        .header("x-server", name)
        .header("x-version", version)
        .header("x-client-id", client_id)
        .body(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed())
        .unwrap();
    Ok(rsp)
}

// === Proxies ===

/// A configuration with every listener on a fresh loopback port and short timeouts.
pub fn test_config() -> Config {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Config {
        outbound_addr: any,
        inbound_addr: any,
        admin_addr: any,
        detect_timeout: Duration::from_secs(2),
        failfast_timeout: Duration::from_secs(1),
        shutdown_grace_period: Duration::from_secs(2),
        ..Config::default()
    }
}

pub struct RunningProxy {
    pub addrs: Addrs,
    pub outbound: Arc<linkerd_lite_proxy::outbound::Outbound>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<bool>,
}

pub async fn start_proxy(config: Config, tls: Option<Arc<dyn TlsProvider>>) -> RunningProxy {
    let proxy = Proxy::bind(config, tls, Box::new(|| true)).await.unwrap();
    let addrs = proxy.addrs();
    let shutdown = proxy.shutdown_token();
    let outbound = proxy.outbound();
    let task = tokio::spawn(proxy.run());
    RunningProxy {
        addrs,
        outbound,
        shutdown,
        task,
    }
}

// === Clients ===

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// A keep-alive HTTP/1 client connection to `addr`.
pub struct H1 {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        Self { send }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        self.send.ready().await.unwrap();
        self.send.send_request(req).await.unwrap()
    }

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let rsp = self.send(b.body(Full::new(Bytes::new())).unwrap()).await;
        read(rsp).await
    }
}

pub async fn read(rsp: Response<Incoming>) -> Reply {
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// Fetches the admin server's `/metrics` page.
pub async fn metrics(admin: SocketAddr) -> String {
    let mut c = H1::connect(admin).await;
    c.get("localhost", "/metrics", &[]).await.body
}

/// A TCP server that greets first ("220 ready"), then echoes.
pub async fn speaks_first_server() -> SocketAddr {
    speaks_first_server_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// [`speaks_first_server`] on `addr`.
pub async fn speaks_first_server_on(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = tcp.write_all(b"220 ready\r\n").await;
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}
