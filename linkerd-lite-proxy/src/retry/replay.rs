//! Request bodies that can be sent again: the first try streams the client's body
//! as it arrives and keeps a copy of each chunk (and the trailers); a retry replays
//! the copy, then continues with whatever the client has not sent yet. A body that
//! outgrows the limit stops being copied and can no longer be retried.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http::BoxError;

/// The body of a request the proxy sends to an endpoint: the client's body as is,
/// or a replayable one on routes with retries.
#[derive(Debug)]
pub enum ReqBody<B = Incoming> {
    /// Passed through untouched.
    Plain(B),
    /// Copied as it streams, for retries.
    Replay(ReplayBody<B>),
}

impl From<Incoming> for ReqBody {
    fn from(body: Incoming) -> Self {
        Self::Plain(body)
    }
}

impl<B> HttpBody for ReqBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Replay(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Plain(b) => b.is_end_stream(),
            Self::Replay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Plain(b) => b.size_hint(),
            Self::Replay(b) => b.size_hint(),
        }
    }
}

/// Why a replayed body could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("request body can no longer be replayed: it outgrew the retry limit or failed")]
pub struct NotReplayable;

#[derive(Debug)]
struct State<B> {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    /// The client's body while no reader holds it.
    body: Option<B>,
    /// The client's body has ended: the copy is complete.
    done: bool,
    /// The copy is incomplete (too large, or the client's body failed).
    broken: bool,
    /// A reader waiting for the client's body to be handed back.
    waiting: Option<Waker>,
}

#[derive(Debug)]
struct Shared<B> {
    state: Mutex<State<B>>,
    limit: usize,
}

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One reader of a replayable body; each try gets its own.
#[derive(Debug)]
pub struct ReplayBody<B = Incoming> {
    shared: Arc<Shared<B>>,
    /// The client's body, while this reader is the one reading it.
    held: Option<B>,
    /// The next copied chunk to replay.
    next: usize,
    trailers_sent: bool,
}

impl<B> ReplayBody<B> {
    /// A body copying up to `limit` bytes of `body` for replays.
    pub fn new(body: B, limit: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                chunks: Vec::new(),
                len: 0,
                trailers: None,
                body: Some(body),
                done: false,
                broken: false,
                waiting: None,
            }),
            limit,
        });
        Self::reader(shared)
    }

    fn reader(shared: Arc<Shared<B>>) -> Self {
        Self {
            shared,
            held: None,
            next: 0,
            trailers_sent: false,
        }
    }

    /// A new reader from the start, or `None` when the copy is incomplete.
    pub fn try_clone(&self) -> Option<Self> {
        if self.shared.lock().broken {
            return None;
        }
        Some(Self::reader(self.shared.clone()))
    }

    /// Replays copied frames; `None` when caught up with the copy.
    fn replay(&mut self, st: &State<B>) -> Option<Option<Frame<Bytes>>> {
        if let Some(c) = st.chunks.get(self.next) {
            self.next += 1;
            return Some(Some(Frame::data(c.clone())));
        }
        if !st.done {
            return None;
        }
        if !self.trailers_sent
            && let Some(t) = &st.trailers
        {
            self.trailers_sent = true;
            return Some(Some(Frame::trailers(t.clone())));
        }
        Some(None)
    }

    /// Keeps a copy of a frame just read from the client's body.
    fn copy(&mut self, st: &mut State<B>, frame: &Frame<Bytes>) {
        if let Some(data) = frame.data_ref() {
            if st.broken {
                return;
            }
            if st.len + data.len() > self.shared.limit {
                st.broken = true;
                st.chunks = Vec::new();
                return;
            }
            st.len += data.len();
            st.chunks.push(data.clone());
            self.next = st.chunks.len();
        } else if let Some(t) = frame.trailers_ref() {
            // Trailers end a body: the copy is complete even if nobody polls again.
            st.trailers = Some(t.clone());
            st.done = true;
            self.trailers_sent = true;
        }
    }
}

impl<B> HttpBody for ReplayBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.held.is_none() {
            let shared = this.shared.clone();
            let mut st = shared.lock();
            if !st.broken
                && let Some(frame) = this.replay(&st)
            {
                return Poll::Ready(frame.map(Ok));
            }
            match st.body.take() {
                Some(body) => this.held = Some(body),
                None if st.broken => return Poll::Ready(Some(Err(NotReplayable.into()))),
                None => {
                    // An earlier try still holds the client's body; it hands it back
                    // when hyper drops that try's request.
                    st.waiting = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let Some(body) = this.held.as_mut() else {
            return Poll::Ready(Some(Err(NotReplayable.into())));
        };
        let res = std::task::ready!(Pin::new(body).poll_frame(cx));
        let shared = this.shared.clone();
        let mut st = shared.lock();
        match res {
            Some(Ok(frame)) => {
                this.copy(&mut st, &frame);
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                st.broken = true;
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                st.done = true;
                this.held = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(b) = &self.held {
            return b.is_end_stream();
        }
        let st = self.shared.lock();
        if st.broken || self.next < st.chunks.len() {
            return false;
        }
        if st.done {
            return self.trailers_sent || st.trailers.is_none();
        }
        st.body.as_ref().is_some_and(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.held {
            return b.size_hint();
        }
        let st = self.shared.lock();
        let copied: usize = st.chunks.iter().skip(self.next).map(Bytes::len).sum();
        let copied = copied as u64;
        if st.done {
            return SizeHint::with_exact(copied);
        }
        match &st.body {
            Some(b) => {
                let rest = b.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(copied + rest.lower());
                if let Some(upper) = rest.upper() {
                    h.set_upper(copied + upper);
                }
                h
            }
            None => {
                let mut h = SizeHint::new();
                h.set_lower(copied);
                h
            }
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        let Some(body) = self.held.take() else {
            return;
        };
        let mut st = self.shared.lock();
        // A broken copy cannot be resumed by another reader; drop the body.
        if !st.broken {
            st.body = Some(body);
        }
        if let Some(w) = st.waiting.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = StreamBody<mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>>;

    fn client_body() -> (
        mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>,
        Frames,
    ) {
        let (tx, rx) = mpsc::unbounded();
        (tx, StreamBody::new(rx))
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    fn trailers() -> Result<Frame<Bytes>, BoxError> {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        Ok(Frame::trailers(t))
    }

    /// Reads a body to the end: its data and its trailers.
    async fn read<B>(body: B) -> (String, Option<HeaderMap>)
    where
        B: HttpBody<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let c = body.collect().await.unwrap();
        let trailers = c.trailers().cloned();
        (String::from_utf8(c.to_bytes().to_vec()).unwrap(), trailers)
    }

    #[tokio::test]
    async fn a_retry_replays_the_body_and_its_trailers() {
        let (tx, body) = client_body();
        for f in [data("hello "), data("world"), trailers()] {
            tx.unbounded_send(f).unwrap();
        }
        drop(tx);
        let first = ReplayBody::new(body, 64);
        let retry = first.try_clone().unwrap();
        let (text, t) = read(first).await;
        assert_eq!(text, "hello world");
        assert_eq!(t.unwrap()["grpc-status"], "0");
        assert_eq!(retry.size_hint().exact(), Some(11));
        let third = retry.try_clone().unwrap();
        let (text, t) = read(retry).await;
        assert_eq!(text, "hello world");
        assert_eq!(t.unwrap()["grpc-status"], "0");
        assert_eq!(read(third).await.0, "hello world");
    }

    #[tokio::test]
    async fn trailers_are_replayed_even_if_the_first_try_stops_reading_at_them() {
        let (tx, body) = client_body();
        for f in [data("x"), trailers()] {
            tx.unbounded_send(f).unwrap();
        }
        let mut first = ReplayBody::new(body, 64);
        assert!(first.frame().await.unwrap().unwrap().is_data());
        assert!(first.frame().await.unwrap().unwrap().is_trailers());
        // Like hyper, stop polling after the trailers; the client never closes.
        let retry = first.try_clone().unwrap();
        drop(first);
        let (text, t) = read(retry).await;
        assert_eq!(text, "x");
        assert_eq!(t.unwrap()["grpc-status"], "0");
        drop(tx);
    }

    #[tokio::test]
    async fn a_retry_sent_mid_body_replays_then_continues_with_the_client() {
        let (tx, body) = client_body();
        tx.unbounded_send(data("ab")).unwrap();
        let mut first = ReplayBody::new(body, 64);
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        let retry = first.try_clone().unwrap();
        // The retry waits for the client's body until the first try lets go of it.
        let reading = tokio::spawn(read(retry));
        tokio::task::yield_now().await;
        assert!(!reading.is_finished());
        drop(first);
        tx.unbounded_send(data("cd")).unwrap();
        drop(tx);
        assert_eq!(reading.await.unwrap().0, "abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_not_replayable() {
        let (tx, body) = client_body();
        let mut first = ReplayBody::new(body, 4);
        let early = first.try_clone().unwrap();
        tx.unbounded_send(data("abc")).unwrap();
        tx.unbounded_send(data("de")).unwrap();
        drop(tx);
        // The first try still sends the whole body.
        let mut got = Vec::new();
        while let Some(f) = first.frame().await {
            got.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        assert_eq!(got, b"abcde");
        assert!(first.try_clone().is_none());
        // A reader made before the body outgrew the limit fails rather than send a
        // truncated body.
        drop(first);
        let mut early = early;
        assert!(early.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn empty_bodies_end_at_once() {
        let body = http_body_util::Empty::<Bytes>::new();
        let first = ReplayBody::new(body, 0);
        assert!(first.is_end_stream());
        let retry = first.try_clone().unwrap();
        drop(first);
        assert!(retry.is_end_stream());
        assert_eq!(read(retry).await.0, "");
    }
}
