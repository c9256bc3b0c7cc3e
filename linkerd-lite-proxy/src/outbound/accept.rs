//! The outbound listener: read the original destination, detect the protocol, and
//! hand the connection to HTTP routing or opaque forwarding.

use std::{net::SocketAddr, sync::Arc};

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Outbound, http::OutboundHttp, tcp};
use crate::{
    detect::{self, Protocol},
    http::{self as proxy_http, client::Dest},
    io::{CountingIo, PrefixedIo},
    metrics::{Direction, TcpLabels},
    net::original_dst,
};

/// Accepts outbound connections until `shutdown`.
pub async fn serve(
    outbound: Arc<Outbound>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, _peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "outbound accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let ob = outbound.clone();
        let sd = shutdown.clone();
        let tr = tracker.clone();
        tracker.spawn(handle(ob, tcp, sd, tr));
    }
}

async fn handle(
    outbound: Arc<Outbound>,
    tcp: TcpStream,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    let orig = original_dst(&tcp).filter(|d| Some(*d) != local);
    let conn = outbound.metrics.tcp_conn(TcpLabels {
        direction: Direction::Outbound,
        peer: "src",
        tls: "no_identity",
        peer_id: None,
        authority: None,
    });
    let mut io = CountingIo::new(tcp, conn.read.clone(), conn.write.clone());

    if let Some(dst) = orig
        && is_opaque(&outbound, dst).await
    {
        return tcp::forward(&outbound, Box::new(io), &addr_key(dst), Dest::Addr(dst)).await;
    }
    let mut buf = BytesMut::with_capacity(1024);
    let protocol = match detect::detect(&mut io, &mut buf, outbound.config.detect_timeout).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "outbound connection failed during detection");
            return;
        }
    };
    let io = PrefixedIo::new(buf.freeze(), io);
    match (protocol, orig) {
        (Protocol::Opaque, Some(dst)) => {
            tcp::forward(&outbound, Box::new(io), &dst.to_string(), Dest::Addr(dst)).await
        }
        (Protocol::Opaque, None) => {
            tracing::debug!("opaque connection without an original destination; closing");
        }
        (proto, orig) => {
            let svc = OutboundHttp::new(outbound.clone(), orig, tracker);
            let limits = proxy_http::ServerLimits {
                header_read_timeout: outbound.config.header_read_timeout,
                max_header_bytes: outbound.config.max_header_bytes,
                http2_idle_timeout: outbound.config.http2_idle_timeout,
            };
            proxy_http::log_conn_result(proxy_http::serve(io, proto, svc, limits, shutdown).await);
        }
    }
    drop(conn);
}

/// Whether a redirected connection is opaque: its port is configured so, or
/// discovery hints that its endpoints are (e.g. a Service's opaque-ports annotation).
/// Waits briefly for the target's first discovery answer; a server that speaks first
/// then never waits for the detect timeout.
async fn is_opaque(outbound: &Outbound, dst: SocketAddr) -> bool {
    if outbound.config.outbound_opaque_ports.contains(&dst.port()) {
        return true;
    }
    let target = outbound.target(&addr_key(dst), || Dest::Addr(dst));
    target.balancer.resolved(DISCOVERY_WAIT).await;
    target.balancer.is_opaque()
}

/// How long a new redirected connection waits for discovery before detecting.
const DISCOVERY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The key of a target named by an original destination.
pub(super) fn addr_key(addr: SocketAddr) -> String {
    addr.to_string()
}
