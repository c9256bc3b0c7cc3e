//! Protocol detection: HTTP/2 preface, HTTP/1 request line, TLS ClientHello, or opaque.
//!
//! Detection reads into a buffer that the caller replays with
//! [`PrefixedIo`](crate::io::PrefixedIo), so nothing is lost whatever the verdict.

use std::{io, time::Duration};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface a client sends first.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest prefix read while detecting; a longer HTTP/1 request line is treated as
/// opaque (and the HTTP server's own limit would reject it anyway).
const MAX_DETECT_BYTES: usize = 16 * 1024;

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// Anything else, forwarded as bytes.
    Opaque,
}

/// Classifies the bytes read so far; `None` means more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return None;
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => Some(if is_request_line(&buf[..end]) {
            Protocol::Http1
        } else {
            Protocol::Opaque
        }),
        None if buf.len() >= MAX_DETECT_BYTES => Some(Protocol::Opaque),
        None if could_be_request_line(buf) => None,
        None => Some(Protocol::Opaque),
    }
}

fn is_method(m: &[u8]) -> bool {
    !m.is_empty() && m.len() <= 20 && m.iter().all(|b| b.is_ascii_uppercase() || *b == b'-')
}

fn is_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_method(method) && !target.is_empty() && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

fn could_be_request_line(buf: &[u8]) -> bool {
    match buf.iter().position(|&b| b == b' ') {
        Some(sp) => is_method(&buf[..sp]),
        None => buf.len() <= 20 && buf.iter().all(|b| b.is_ascii_uppercase() || *b == b'-'),
    }
}

/// Reads from `io` into `buf` until the protocol is known. A stream that sends
/// nothing within `timeout`, or closes, is opaque.
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    timeout: Duration,
) -> io::Result<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(p) = classify(buf) {
            return Ok(p);
        }
        buf.reserve(1024);
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_elapsed) => return Ok(Protocol::Opaque),
            Ok(Ok(0)) => return Ok(Protocol::Opaque),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// What the first bytes of a connection say about TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS handshake.
    NotTls,
    /// A TLS record whose ClientHello is not complete yet.
    Incomplete,
    /// A ClientHello, with its SNI if it has one.
    Tls {
        /// The server name the client asked for.
        sni: Option<String>,
    },
}

/// Parses a TLS ClientHello far enough to read its server name.
pub fn parse_client_hello(buf: &[u8]) -> Hello {
    const HANDSHAKE: u8 = 0x16;
    if buf.is_empty() {
        return Hello::Incomplete;
    }
    if buf[0] != HANDSHAKE || (buf.len() > 1 && buf[1] != 0x03) {
        return Hello::NotTls;
    }
    if buf.len() < 5 {
        return Hello::Incomplete;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + record_len {
        return Hello::Incomplete;
    }
    let record = &buf[5..5 + record_len];
    Hello::Tls {
        sni: client_hello_sni(record),
    }
}

fn client_hello_sni(hs: &[u8]) -> Option<String> {
    let mut r = Reader(hs);
    if r.u8()? != 0x01 {
        return None;
    }
    let _len = r.take(3)?;
    let _version = r.take(2)?;
    let _random = r.take(32)?;
    let sid = usize::from(r.u8()?);
    r.take(sid)?;
    let suites = r.u16()?;
    r.take(suites)?;
    let comp = usize::from(r.u8()?);
    r.take(comp)?;
    let ext_len = r.u16()?;
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = exts.u16()?;
        let data = exts.take(len)?;
        if ty != 0 {
            continue;
        }
        let mut list = Reader(data);
        let list_len = list.u16()?;
        let mut names = Reader(list.take(list_len)?);
        while !names.0.is_empty() {
            let kind = names.u8()?;
            let len = names.u16()?;
            let name = names.take(len)?;
            if kind == 0 {
                return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
            }
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_prefaces_and_request_lines() {
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(
            classify(b"CONNECT a:443 HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"POST /x HTT"), None);
        assert_eq!(classify(b"GET / HTTP/3.0\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"\x00\x01binary"), Some(Protocol::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1\r\n"), Some(Protocol::Opaque));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Some(Protocol::Opaque)
        );
        let long = vec![b'A'; 30];
        assert_eq!(classify(&long), Some(Protocol::Opaque));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_opaque_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let start = tokio::time::Instant::now();
        let mut buf = BytesMut::new();
        let p = detect(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(p, Protocol::Opaque);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_line_split_across_reads_is_http1() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let p = detect(&mut server, &mut buf, Duration::from_secs(10)).await;
            (p.unwrap(), buf)
        });
        client.write_all(b"GET /a HT").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.write_all(b"TP/1.1\r\n").await.unwrap();
        let (p, buf) = task.await.unwrap();
        assert_eq!(p, Protocol::Http1);
        assert_eq!(&buf[..], b"GET /a HTTP/1.1\r\n");
    }

    fn hello_with_sni(name: &str) -> Vec<u8> {
        let mut sni = vec![];
        let n = name.as_bytes();
        sni.extend(((n.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend((n.len() as u16).to_be_bytes());
        sni.extend(n);
        let mut exts = vec![0, 0];
        exts.extend((sni.len() as u16).to_be_bytes());
        exts.extend(sni);
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![0x01, 0];
        hs.extend((body.len() as u16).to_be_bytes());
        hs.extend(body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn reads_sni_from_a_client_hello() {
        let hello = hello_with_sni("Web.shop.serviceaccount.identity.linkerd-lite.cluster.local");
        assert_eq!(
            parse_client_hello(&hello),
            Hello::Tls {
                sni: Some("web.shop.serviceaccount.identity.linkerd-lite.cluster.local".into())
            }
        );
        assert_eq!(parse_client_hello(&hello[..20]), Hello::Incomplete);
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1"), Hello::NotTls);
        let mut garbage = hello.clone();
        garbage.truncate(12);
        garbage[3] = 0;
        garbage[4] = 7;
        assert_eq!(parse_client_hello(&garbage), Hello::Tls { sni: None });
    }
}
