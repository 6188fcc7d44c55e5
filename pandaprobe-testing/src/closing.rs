//! Closing a connection after a `500` the way the real server does: the whole response is
//! sent, without a `Connection: close` header, then the socket is closed.
//!
//! hyper writes `Connection: close` itself when it is asked to stop keeping a connection
//! alive before the response head goes out, so the close is done below hyper instead: the
//! response body arms a [`CloseSignal`] once hyper has taken all of it, and the next completed
//! flush of the socket (every byte written) makes [`ClosingIo`] report end of input, which
//! ends the connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared by a connection's response bodies and its socket.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    armed: AtomicBool,
}

impl CloseSignal {
    fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }
}

/// A response body; one that closes the connection arms the signal when hyper drops it,
/// which it does right after buffering the last frame (or the head, for an empty body).
#[derive(Debug)]
pub(crate) struct ReplyBody {
    inner: Full<Bytes>,
    close: Option<Arc<CloseSignal>>,
}

impl ReplyBody {
    pub(crate) fn new(inner: Full<Bytes>, close: Option<Arc<CloseSignal>>) -> Self {
        ReplyBody { inner, close }
    }
}

impl Drop for ReplyBody {
    fn drop(&mut self) {
        if let Some(signal) = &self.close {
            signal.arm();
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that reports end of input once the signal is armed and a flush completed, and
/// refuses to write after that.
#[derive(Debug)]
pub(crate) struct ClosingIo<T> {
    inner: T,
    signal: Arc<CloseSignal>,
    closing: bool,
}

impl<T> ClosingIo<T> {
    pub(crate) fn new(inner: T, signal: Arc<CloseSignal>) -> Self {
        ClosingIo {
            inner,
            signal,
            closing: false,
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "closed after a 500")
}

impl<T: AsyncRead + Unpin> AsyncRead for ClosingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closing {
            // Nothing read: end of input.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClosingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closing {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closing {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) && !self.closing && self.signal.is_armed() {
            self.closing = true;
            // hyper may not read again on its own: make sure it looks.
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn reads_end_after_an_armed_flush() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (near, mut far) = tokio::io::duplex(64);
            let signal = Arc::new(CloseSignal::default());
            let mut io = ClosingIo::new(near, Arc::clone(&signal));
            far.write_all(b"x").await.expect("io");
            let mut byte = [0u8; 1];
            assert_eq!(io.read(&mut byte).await.ok(), Some(1));

            io.write_all(b"answer").await.expect("io");
            io.flush().await.expect("io");
            far.write_all(b"y").await.expect("io");
            assert_eq!(io.read(&mut byte).await.ok(), Some(1), "not armed yet");

            drop(ReplyBody::new(
                Full::new(Bytes::new()),
                Some(Arc::clone(&signal)),
            ));
            assert!(signal.is_armed());
            io.flush().await.expect("io");
            far.write_all(b"z").await.expect("io");
            assert_eq!(io.read(&mut byte).await.ok(), Some(0), "end of input");
            assert!(io.write_all(b"more").await.is_err());
        });
    }

    #[test]
    fn a_body_without_signal_arms_nothing() {
        let signal = Arc::new(CloseSignal::default());
        drop(ReplyBody::new(Full::new(Bytes::from_static(b"ok")), None));
        assert!(!signal.is_armed());
    }
}
