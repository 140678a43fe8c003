//! The connection's byte stream, watching the server's first frame: a connection
//! counts as up only once the server's HTTP/2 SETTINGS have arrived (as grpc-go
//! decides), not when hyper's handshake has written the client's preface.
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::connector::BoxIo;

pub(super) const NOT_HTTP2: &str =
    "the server's first frame is not HTTP/2 SETTINGS (not an HTTP/2 server?)";

/// The connection's byte stream, watching the first 9 bytes the server sends: the
/// header of its first frame, which RFC 9113 §3.4 requires to be a SETTINGS frame
/// (type 0x4, no ACK flag, stream 0). Reports once, then only passes bytes through.
pub(crate) struct FirstFrame {
    io: BoxIo,
    watch: Option<Box<Watch>>,
}

struct Watch {
    header: [u8; 9],
    filled: usize,
    seen: oneshot::Sender<bool>,
}

impl FirstFrame {
    pub(super) fn watch(io: BoxIo) -> (Self, oneshot::Receiver<bool>) {
        let (seen, rx) = oneshot::channel();
        let watch = Watch {
            header: [0; 9],
            filled: 0,
            seen,
        };
        (
            Self {
                io,
                watch: Some(Box::new(watch)),
            },
            rx,
        )
    }

    fn observe(&mut self, read: &[u8]) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        let n = read.len().min(w.header.len() - w.filled);
        w.header[w.filled..w.filled + n].copy_from_slice(&read[..n]);
        w.filled += n;
        if w.filled == w.header.len()
            && let Some(w) = self.watch.take()
        {
            let h = w.header;
            let length = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let settings =
                h[3] == 0x4 && h[4] & 0x1 == 0 && stream == 0 && length.is_multiple_of(6);
            // The receiver is gone once the connection is up; nothing to tell then.
            let _ = w.seen.send(settings);
        }
    }
}

impl AsyncRead for FirstFrame {
    fn poll_read(
        self: Pin<&mut Self>,
        task: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(task, buf);
        if this.watch.is_some() && matches!(polled, Poll::Ready(Ok(()))) {
            this.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for FirstFrame {
    fn poll_write(
        self: Pin<&mut Self>,
        task: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(task, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        task: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(task, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(task)
    }

    fn poll_shutdown(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(task)
    }
}
