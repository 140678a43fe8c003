//! A request's HEADERS wait one poll for its DATA, so that a lone call goes out
//! in one write.
//!
//! h2 gives a new stream send capacity only once its connection task has opened
//! it, in the same poll that writes the stream's HEADERS; hyper's pipe for the
//! request body can queue the message only after that. So a call that starts
//! alone (nothing to coalesce it with, see [`coalesced`](super::coalesce)) was
//! written twice: HEADERS, then DATA, one `writev` each, and the server read and
//! woke twice. When what the connection is about to write is exactly one HEADERS
//! frame that does not end its stream (a request whose body follows), the write
//! is deferred once: the connection task wakes itself and yields, the pipe
//! (already woken by the capacity) queues the message, and the retried write
//! carries both. A write is never deferred twice in a row, so at worst a write
//! waits one extra poll of the connection task.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// HTTP/2 frame type HEADERS (RFC 9113 §6.2) and its flags.
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Whether `bytes` (about to be written, from their first byte) are exactly one
/// complete HEADERS frame that leaves its stream open for a body.
fn lone_open_headers(first: &[u8], total: usize) -> bool {
    let Some(h) = first.get(..9) else {
        return false;
    };
    let length = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    h[3] == HEADERS && h[4] & END_STREAM == 0 && h[4] & END_HEADERS != 0 && length + 9 == total
}

/// A connection's byte stream whose lone request HEADERS wait one poll for their
/// body; see the [module docs](self).
pub(crate) struct HeadersWithBody<Io> {
    io: Io,
    /// The last write was deferred: the next one goes out whatever it holds.
    deferred: bool,
}

impl<Io> HeadersWithBody<Io> {
    pub(crate) fn new(io: Io) -> Self {
        Self {
            io,
            deferred: false,
        }
    }

    /// Whether to defer a write of `first` (its first buffer) and `total` bytes.
    fn defer(&mut self, task: &mut Context<'_>, first: &[u8], total: usize) -> bool {
        if std::mem::take(&mut self.deferred) || !lone_open_headers(first, total) {
            return false;
        }
        self.deferred = true;
        task.waker().wake_by_ref();
        true
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for HeadersWithBody<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        task: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(task, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for HeadersWithBody<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        task: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.defer(task, buf, buf.len()) {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_write(task, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        task: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let total = bufs.iter().map(|b| b.len()).sum();
        if this.defer(task, first, total) {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_write_vectored(task, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(task)
    }

    fn poll_shutdown(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `kind` with `flags` and `length` bytes of payload.
    fn frame(kind: u8, flags: u8, length: usize) -> Vec<u8> {
        let len = (length as u32).to_be_bytes();
        let mut bytes = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        bytes.resize(9 + length, 0);
        bytes
    }

    #[test]
    fn only_a_lone_headers_frame_leaving_its_stream_open_waits() {
        let open = frame(HEADERS, END_HEADERS, 20);
        assert!(lone_open_headers(&open, open.len()));
        // A request without a body: nothing will follow.
        let ended = frame(HEADERS, END_HEADERS | END_STREAM, 20);
        assert!(!lone_open_headers(&ended, ended.len()));
        // Its DATA is there already, or another call's frames are.
        let with_data = [open.clone(), frame(0x0, END_STREAM, 12)].concat();
        assert!(!lone_open_headers(&with_data, with_data.len()));
        // Not HEADERS (a SETTINGS ack), or too short to tell.
        let settings = frame(0x4, 0x1, 0);
        assert!(!lone_open_headers(&settings, settings.len()));
        assert!(!lone_open_headers(&open[..5], open.len()));
    }

    /// A deferred write wakes the task and goes out at the next try, whatever
    /// it holds then: never deferred twice in a row.
    #[test]
    fn a_write_is_deferred_once_then_goes_out() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut io = HeadersWithBody::new(client);
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = {
            struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
            impl std::task::Wake for Flag {
                fn wake(self: std::sync::Arc<Self>) {
                    self.0.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            std::task::Waker::from(std::sync::Arc::new(Flag(std::sync::Arc::clone(&woken))))
        };
        let mut task = Context::from_waker(&waker);
        let open = frame(HEADERS, END_HEADERS, 20);
        let first = Pin::new(&mut io).poll_write(&mut task, &open);
        assert!(first.is_pending());
        assert!(
            woken.load(std::sync::atomic::Ordering::SeqCst),
            "woke itself"
        );
        let second = Pin::new(&mut io).poll_write(&mut task, &open);
        assert!(matches!(second, Poll::Ready(Ok(n)) if n == open.len()));
        // The next call's lone HEADERS wait again.
        assert!(Pin::new(&mut io).poll_write(&mut task, &open).is_pending());
    }
}
