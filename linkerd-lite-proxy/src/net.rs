//! Socket helpers.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The destination a connection had before iptables redirected it
/// (`SO_ORIGINAL_DST`), if it was redirected.
pub fn original_dst(tcp: &TcpStream) -> Option<SocketAddr> {
    let sock = SockRef::from(tcp);
    let local = tcp.local_addr().ok()?;
    let addr = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    addr.ok()?.as_socket()
}
