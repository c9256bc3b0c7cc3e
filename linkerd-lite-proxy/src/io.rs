//! Byte-stream adaptors: replaying bytes read during detection, counting bytes for
//! metrics, and a boxed stream type for erasing TLS versus plaintext.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A bidirectional byte stream that can be boxed.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed stream: plaintext or TLS, prefixed or not.
pub type BoxIo = Box<dyn Io>;

pin_project! {
    /// A stream that first yields `prefix` (bytes already read while peeking), then
    /// the rest of `inner`.
    #[derive(Debug)]
    pub struct PrefixedIo<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> PrefixedIo<T> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: impl Into<Bytes>, inner: T) -> Self {
        Self {
            prefix: prefix.into(),
            inner,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project! {
    /// A stream that adds every byte read and written to two counters.
    #[derive(Debug)]
    pub struct CountingIo<T> {
        #[pin]
        inner: T,
        read: Counter,
        write: Counter,
    }
}

impl<T> CountingIo<T> {
    /// Counts `inner`'s traffic into `read` and `write`.
    pub fn new(inner: T, read: Counter, write: Counter) -> Self {
        Self { inner, read, write }
    }
}

impl<T: AsyncRead> AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read.inc_by(n as u64);
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for CountingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.write.inc_by(n as u64);
        }
        res
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.write.inc_by(n as u64);
        }
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_replayed_before_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), b);
        let mut s = String::new();
        io.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    #[tokio::test]
    async fn bytes_are_counted_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let (r, w) = (Counter::default(), Counter::default());
        let mut io = CountingIo::new(a, r.clone(), w.clone());
        io.write_all(b"12345").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!((r.get(), w.get()), (3, 5));
    }
}
