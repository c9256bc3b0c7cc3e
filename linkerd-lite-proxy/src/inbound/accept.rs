//! The inbound listener: peek the ClientHello, terminate mTLS for our identity,
//! apply the port's policy, detect the protocol, and hand over to HTTP or opaque
//! forwarding.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use bytes::BytesMut;
use rustls::ServerConfig;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    http::InboundHttp,
    policy::{Policies, PortWatch},
};
use crate::{
    detect::{self, Hello, Protocol},
    env::Config,
    http::{
        self as proxy_http,
        client::{Connector, Dest},
        forward::EndpointClients,
    },
    io::{BoxIo, CountingIo, PrefixedIo},
    metrics::{Direction, HttpLabels, Metrics, TcpLabels},
    net::original_dst,
    tls::{self, SessionProtocol, TlsProvider},
};

type AppKey = (u16, Option<Arc<str>>);

/// Shared state of the inbound side.
#[derive(Debug)]
pub struct Inbound {
    pub(super) config: Arc<Config>,
    tls: Option<Arc<dyn TlsProvider>>,
    metrics: Metrics,
    policies: Policies,
    apps: Mutex<HashMap<AppKey, Arc<EndpointClients>>>,
    server_config: Mutex<Option<(Arc<ServerConfig>, Arc<ServerConfig>)>>,
}

impl Inbound {
    /// Builds the inbound side's shared state.
    pub fn new(
        config: Arc<Config>,
        tls: Option<Arc<dyn TlsProvider>>,
        metrics: Metrics,
        policies: Policies,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            tls,
            metrics,
            policies,
            apps: Mutex::default(),
            server_config: Mutex::default(),
        })
    }

    /// The provider's server configuration with the transport ALPN added, rebuilt only
    /// when the provider's changes (e.g. after a certificate renewal).
    fn server_config(&self) -> Option<Arc<ServerConfig>> {
        let current = self.tls.as_ref()?.server_config()?;
        let mut cache = self.server_config.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((src, built)) = &*cache
            && Arc::ptr_eq(src, &current)
        {
            return Some(built.clone());
        }
        let built = tls::with_transport_alpn(&current);
        *cache = Some((current, built.clone()));
        Some(built)
    }

    /// Clients to the application's `port`, labelled for `client_id`.
    fn app(&self, port: u16, client_id: Option<&str>) -> Arc<EndpointClients> {
        let key: AppKey = (port, client_id.map(Arc::from));
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = apps.get(&key) {
            return a.clone();
        }
        let tls = if client_id.is_some() {
            "true"
        } else {
            "no_identity"
        };
        let authority: Arc<str> = format!("127.0.0.1:{port}").into();
        let labels = HttpLabels {
            direction: Direction::Inbound,
            authority: authority.clone(),
            tls,
            peer_id: key.1.clone(),
            dst: Arc::from(Vec::new()),
        };
        let tcp_labels = TcpLabels {
            direction: Direction::Inbound,
            peer: "dst",
            tls: "no_identity",
            peer_id: None,
            authority: Some(authority),
        };
        let dest = Dest::Addr(SocketAddr::from(([127, 0, 0, 1], port)));
        let c = Connector::new(dest, None, self.config.connect_timeout)
            .with_metrics(self.metrics.clone(), tcp_labels);
        let clients = Arc::new(EndpointClients::new(
            &self.metrics,
            labels,
            [c.clone(), c.clone(), c],
            false,
        ));
        apps.insert(key, clients.clone());
        clients
    }
}

/// Accepts inbound connections until `shutdown`.
pub async fn serve(
    inbound: Arc<Inbound>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "inbound accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let ib = inbound.clone();
        let sd = shutdown.clone();
        tracker.spawn(async move {
            if let Err(reason) = handle(ib, tcp, sd).await {
                tracing::debug!(%peer, reason, "inbound connection closed");
            }
        });
    }
}

/// What the accept step learned about a connection.
struct Accepted {
    io: BoxIo,
    client_id: Option<String>,
    port: Option<u16>,
    /// Known without detection: from a transport header or an opaque port.
    protocol: Option<Protocol>,
}

async fn handle(
    inbound: Arc<Inbound>,
    tcp: TcpStream,
    shutdown: CancellationToken,
) -> Result<(), &'static str> {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    let peer_ip = tcp
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let orig_port = original_dst(&tcp)
        .filter(|d| Some(*d) != local)
        .map(|d| d.port());
    let cfg = &inbound.config;
    // A port known before the handshake may be opaque: then nothing is read first,
    // so a server that speaks first is not stalled.
    let known = orig_port.or(cfg.inbound_default_port);
    let early = match known {
        Some(p) => Some(inbound.policies.get(p).await),
        None => None,
    };
    let skip_peek = known.is_some_and(|p| cfg.inbound_opaque_ports.contains(&p))
        || early.as_ref().is_some_and(|p| p.current().opaque);
    let a = accept(&inbound, tcp, orig_port, skip_peek).await?;
    let port = a
        .port
        .or(cfg.inbound_default_port)
        .ok_or("no target port: no transport header, original destination or default port")?;
    let policy = match early {
        Some(p) if Some(port) == known => p,
        _ => inbound.policies.get(port).await,
    };
    let tls_label = if a.client_id.is_some() {
        "true"
    } else {
        "no_identity"
    };
    let conn = inbound.metrics.tcp_conn(TcpLabels {
        direction: Direction::Inbound,
        peer: "src",
        tls: tls_label,
        peer_id: a.client_id.as_deref().map(Arc::from),
        authority: None,
    });
    let mut io = CountingIo::new(a.io, conn.read.clone(), conn.write.clone());
    let opaque = policy.current().opaque;
    let conn_info = Conn {
        port,
        peer_ip,
        client_id: a.client_id,
        policy,
    };
    let protocol = match a.protocol {
        Some(p) => p,
        None if opaque || cfg.inbound_opaque_ports.contains(&port) => Protocol::Opaque,
        None => {
            let mut buf = BytesMut::with_capacity(1024);
            let p = detect::detect(&mut io, &mut buf, cfg.detect_timeout)
                .await
                .map_err(|_| "read failed during protocol detection")?;
            let inner: BoxIo = Box::new(PrefixedIo::new(buf.freeze(), io));
            return dispatch(&inbound, inner, p, conn_info, shutdown).await;
        }
    };
    dispatch(&inbound, Box::new(io), protocol, conn_info, shutdown).await
}

/// What the handshake learned about a connection, and its port's policy.
struct Conn {
    port: u16,
    peer_ip: IpAddr,
    client_id: Option<String>,
    policy: PortWatch,
}

async fn dispatch(
    inbound: &Arc<Inbound>,
    mut io: BoxIo,
    protocol: Protocol,
    conn: Conn,
    shutdown: CancellationToken,
) -> Result<(), &'static str> {
    let app = inbound.app(conn.port, conn.client_id.as_deref());
    if protocol == Protocol::Opaque {
        // Opaque traffic has no routes: the server-level authorizations decide,
        // once per connection. HTTP is checked per request, per route.
        let policy = conn.policy.current();
        if !policy.authorize(conn.peer_ip, conn.client_id.as_deref()) {
            return Err("client not authorized by the port's policy");
        }
        let mut upstream = app
            .tcp
            .connect()
            .await
            .map_err(|_| "connecting to the application failed")?;
        tokio::io::copy_bidirectional(&mut io, &mut upstream)
            .await
            .map_err(|_| "opaque connection ended with an error")?;
        return Ok(());
    }
    let svc = InboundHttp::new(
        inbound.clone(),
        app,
        conn.client_id.as_deref(),
        conn.peer_ip,
        conn.port,
        conn.policy,
    );
    let limits = proxy_http::ServerLimits {
        header_read_timeout: inbound.config.header_read_timeout,
        max_header_bytes: inbound.config.max_header_bytes,
        http2_idle_timeout: inbound.config.http2_idle_timeout,
    };
    proxy_http::log_conn_result(proxy_http::serve(io, protocol, svc, limits, shutdown).await);
    Ok(())
}

/// Peeks for a ClientHello and terminates TLS when it is for us.
async fn accept(
    inbound: &Inbound,
    mut tcp: TcpStream,
    orig_port: Option<u16>,
    skip_peek: bool,
) -> Result<Accepted, &'static str> {
    let cfg = &inbound.config;
    let plain = |io: BoxIo, protocol| Accepted {
        io,
        client_id: None,
        port: orig_port,
        protocol,
    };
    if skip_peek {
        return Ok(plain(Box::new(tcp), Some(Protocol::Opaque)));
    }
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + cfg.detect_timeout;
    let hello = loop {
        match detect::parse_client_hello(&buf) {
            Hello::Incomplete if buf.len() < 16 * 1024 + 5 => {}
            Hello::Incomplete => break Hello::Tls { sni: None },
            other => break other,
        }
        match tokio::time::timeout_at(deadline, tcp.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break Hello::NotTls,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err("read failed while peeking for tls"),
        }
    };
    let io = PrefixedIo::new(buf.freeze(), tcp);
    let ours = match (&hello, &inbound.tls) {
        (Hello::Tls { sni: Some(sni) }, Some(t)) => sni == t.local_name(),
        _ => false,
    };
    if !ours {
        let protocol = matches!(hello, Hello::Tls { .. }).then_some(Protocol::Opaque);
        return Ok(plain(Box::new(io), protocol));
    }
    let server = inbound
        .server_config()
        .ok_or("tls for this proxy arrived before it has a certificate")?;
    let (tls, client_id, header) = tls::accept(io, server)
        .await
        .map_err(|_| "tls handshake failed")?;
    let (port, protocol) = match header {
        Some(h) => (
            Some(h.port),
            Some(match h.protocol {
                None => Protocol::Opaque,
                Some(SessionProtocol::Http1) => Protocol::Http1,
                Some(SessionProtocol::Http2) => Protocol::Http2,
            }),
        ),
        None => (orig_port, None),
    };
    Ok(Accepted {
        io: Box::new(tls),
        client_id,
        port,
        protocol,
    })
}
