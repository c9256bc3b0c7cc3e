//! `await-ready`: polls the proxy's admin `/ready` until it answers 200 or a timeout
//! passes. Used as a `postStart` hook so the application container starts only once
//! its proxy has a certificate.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

/// Why the proxy was not seen ready.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("proxy at {url} was not ready within {}; last attempt: {last}", humantime::format_duration(*.timeout))]
pub struct NotReady {
    /// The URL polled.
    pub url: String,
    /// How long it was polled.
    pub timeout: Duration,
    /// What the last attempt saw (a status or a connection error).
    pub last: String,
}

/// The `/ready` URL for an admin server bound on `admin`: an unspecified bind
/// address (`0.0.0.0`, `::`) is reached over loopback.
pub fn ready_url(admin: SocketAddr) -> (SocketAddr, String) {
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, admin.port());
    (addr, format!("http://{addr}/ready"))
}

/// Polls `/ready` on the admin server bound at `admin` every `interval` until it
/// answers 200 (returning how long that took) or `timeout` passes.
pub async fn await_ready(
    admin: SocketAddr,
    timeout: Duration,
    interval: Duration,
) -> Result<Duration, NotReady> {
    let (addr, url) = ready_url(admin);
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(remaining.min(Duration::from_secs(2)), probe(addr));
        let last = match attempt.await {
            Ok(Ok(StatusCode::OK)) => return Ok(start.elapsed()),
            Ok(Ok(status)) => format!("status {status}"),
            Ok(Err(e)) => e,
            Err(_) => "no answer".to_string(),
        };
        tracing::debug!(%url, %last, "proxy not ready yet");
        let now = Instant::now();
        if now + interval > deadline {
            return Err(NotReady { url, timeout, last });
        }
        tokio::time::sleep(interval).await;
    }
}

/// One `GET /ready`; the error is a short description for the final message.
async fn probe(addr: SocketAddr) -> Result<StatusCode, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get("/ready")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let rsp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(rsp.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_admin_addresses_are_polled_over_loopback() {
        let (a, url) = ready_url("0.0.0.0:4191".parse().unwrap());
        assert_eq!(a, "127.0.0.1:4191".parse::<SocketAddr>().unwrap());
        assert_eq!(url, "http://127.0.0.1:4191/ready");
        let (a, _) = ready_url("[::]:4191".parse().unwrap());
        assert_eq!(a, "[::1]:4191".parse::<SocketAddr>().unwrap());
        let (a, _) = ready_url("127.0.0.2:9".parse().unwrap());
        assert_eq!(a, "127.0.0.2:9".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn the_error_names_the_url_the_timeout_and_the_last_answer() {
        let e = NotReady {
            url: "http://127.0.0.1:4191/ready".into(),
            timeout: Duration::from_secs(120),
            last: "status 503 Service Unavailable".into(),
        };
        assert_eq!(
            e.to_string(),
            "proxy at http://127.0.0.1:4191/ready was not ready within 2m; \
             last attempt: status 503 Service Unavailable"
        );
    }
}
