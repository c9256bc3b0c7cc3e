//! Connections to one endpoint: TCP, optionally mTLS with a transport header.

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::net::TcpStream;

use crate::{
    io::{BoxIo, CountingIo},
    metrics::{Metrics, TcpLabels},
    tls::{self, TlsProvider, TransportHeader},
};

/// Where a connector opens its TCP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A socket address.
    Addr(SocketAddr),
    /// A `host:port` resolved at connect time (local-mode fallback).
    Name(Arc<str>),
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => a.fmt(f),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("connecting to {dest}")]
    Io {
        /// The destination.
        dest: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("connecting to {dest} timed out")]
    Timeout {
        /// The destination.
        dest: String,
    },
    /// The name resolved to no address.
    #[error("{dest} resolved to no address")]
    NoAddress {
        /// The destination.
        dest: String,
    },
    /// The proxy has no certificate yet.
    #[error("no tls certificate yet for connecting to {dest}")]
    NoCertificate {
        /// The destination.
        dest: String,
    },
    /// The TLS handshake failed, e.g. the peer is not who discovery said.
    #[error("tls handshake with {dest} as {identity}")]
    Tls {
        /// The destination.
        dest: String,
        /// The identity required of the peer.
        identity: Arc<str>,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// mTLS settings of a connector.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    /// The proxy's TLS source.
    pub provider: Arc<dyn TlsProvider>,
    /// The identity the peer must present.
    pub identity: Arc<str>,
    /// The transport header to send, when connecting to the peer proxy's inbound port.
    pub header: Option<TransportHeader>,
}

/// Opens connections to one destination.
#[derive(Clone)]
pub struct Connector {
    dest: Dest,
    tls: Option<TlsTarget>,
    timeout: Duration,
    metrics: Option<(Metrics, TcpLabels)>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("dest", &self.dest)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Connector {
    /// A connector to `dest`, with mTLS when `tls` is set.
    pub fn new(dest: Dest, tls: Option<TlsTarget>, timeout: Duration) -> Self {
        Self {
            dest,
            tls,
            timeout,
            metrics: None,
        }
    }

    /// Counts this connector's connections under `labels`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics, labels: TcpLabels) -> Self {
        self.metrics = Some((metrics, labels));
        self
    }

    /// Whether connections are mTLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens one connection.
    pub async fn connect(&self) -> Result<BoxIo, ConnectError> {
        let dest = || self.dest.to_string();
        let tcp = tokio::time::timeout(self.timeout, async {
            match &self.dest {
                Dest::Addr(a) => TcpStream::connect(a).await,
                Dest::Name(n) => TcpStream::connect(&**n).await,
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout { dest: dest() })?
        .map_err(|source| match source.kind() {
            io::ErrorKind::InvalidInput => ConnectError::NoAddress { dest: dest() },
            _ => ConnectError::Io {
                dest: dest(),
                source,
            },
        })?;
        let _ = tcp.set_nodelay(true);
        let io: BoxIo = match &self.metrics {
            Some((m, labels)) => {
                let conn = m.tcp_conn(labels.clone());
                let counted = CountingIo::new(tcp, conn.read.clone(), conn.write.clone());
                Box::new(Tracked {
                    io: counted,
                    _conn: conn,
                })
            }
            None => Box::new(tcp),
        };
        let Some(t) = &self.tls else {
            return Ok(io);
        };
        let config = t
            .provider
            .client_config()
            .ok_or_else(|| ConnectError::NoCertificate { dest: dest() })?;
        let tls = tls::connect(io, &config, &t.identity, t.header.as_ref())
            .await
            .map_err(|source| ConnectError::Tls {
                dest: dest(),
                identity: t.identity.clone(),
                source,
            })?;
        Ok(Box::new(tls))
    }
}

pin_project_lite::pin_project! {
    /// A stream that keeps its connection metrics alive.
    struct Tracked<T> {
        #[pin]
        io: T,
        _conn: crate::metrics::TcpConn,
    }
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
