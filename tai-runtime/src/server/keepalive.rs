//! Keepalive enforcement (gRFC A8): a client that pings too often is told
//! GOAWAY ENHANCE_YOUR_CALM with debug data `too_many_pings`, and cut off.
//!
//! Neither hyper nor h2 can refuse pings (h2 answers every one), so the police
//! sits under them, on the connection's bytes: it reads the frame headers going
//! both ways ([`Frames`]) and judges each PING the client sends as grpc-go does.
//! A ping is *bad* when it comes sooner than [`KeepalivePolicy::min_time`] after
//! the previous one, or sooner than two hours while the connection has no call
//! in flight (unless [`KeepalivePolicy::permit_without_calls`]). The first ping
//! after the server sent DATA or HEADERS is always fine and clears the count:
//! clients measure bandwidth with pings when data comes (BDP pings). The third
//! bad ping in a row ends the connection: the GOAWAY is written between two of
//! hyper's own frames (h2 has no API for a GOAWAY's debug data), the socket is
//! half-closed, and hyper sees the connection end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::frames::{Frames, Http2};

/// How often a client may ping (gRFC A8's server-side `PERMIT_KEEPALIVE_TIME`
/// and `PERMIT_KEEPALIVE_WITHOUT_CALLS`).
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::server::KeepalivePolicy;
///
/// // Clients that ping every 30 s, even when idle, are welcome.
/// let policy = KeepalivePolicy::DEFAULT
///     .min_time(Duration::from_secs(30))
///     .permit_without_calls(true);
/// # let _ = policy;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepalivePolicy {
    min_time: Duration,
    permit_without_calls: bool,
}

/// With no call in flight and no permission, pings are held to gRPC core's
/// two hours.
const IDLE_MIN_TIME: Duration = Duration::from_secs(2 * 60 * 60);

/// Bad pings tolerated in a row, as in grpc-go and gRPC core.
const MAX_STRIKES: u32 = 2;

impl KeepalivePolicy {
    /// gRPC's defaults: one ping per 5 minutes, none while idle.
    pub const DEFAULT: Self = Self {
        min_time: Duration::from_secs(5 * 60),
        permit_without_calls: false,
    };

    /// The least time between two pings of a client.
    pub const fn min_time(mut self, min_time: Duration) -> Self {
        self.min_time = min_time;
        self
    }

    /// Whether a connection with no call in flight may ping every `min_time` too
    /// (otherwise every two hours).
    pub const fn permit_without_calls(mut self, permit: bool) -> Self {
        self.permit_without_calls = permit;
        self
    }
}

impl Default for KeepalivePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A connection's bytes under the keepalive police.
pub(crate) struct Policed<Io> {
    io: Io,
    /// `None`: pings are not judged.
    policy: Option<KeepalivePolicy>,
    /// Calls in flight on this connection.
    calls: Arc<AtomicUsize>,
    judge: Judge,
    inbound: Frames<Http2>,
    outbound: Frames<Http2>,
    /// The highest stream the client opened, for the GOAWAY.
    last_stream: u32,
    /// A GOAWAY still to write.
    goaway: Vec<u8>,
    closed: bool,
}

/// The ping count of one connection.
#[derive(Debug, Default)]
struct Judge {
    last_ping: Option<Instant>,
    strikes: u32,
    /// The server sent DATA or HEADERS since the last ping.
    sent: bool,
}

impl Judge {
    /// Whether this ping, now, is one too many.
    fn too_many(&mut self, policy: &KeepalivePolicy, idle: bool) -> bool {
        let now = Instant::now();
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.sent) {
            self.strikes = 0;
            return false;
        }
        let min_time = if idle && !policy.permit_without_calls {
            IDLE_MIN_TIME
        } else {
            policy.min_time
        };
        if last.is_some_and(|last| now < last + min_time) {
            self.strikes += 1;
        }
        self.strikes > MAX_STRIKES
    }
}

impl<Io> Policed<Io> {
    pub(crate) fn new(io: Io, policy: Option<KeepalivePolicy>, calls: Arc<AtomicUsize>) -> Self {
        Self {
            io,
            policy,
            calls,
            judge: Judge::default(),
            // The client's connection preface: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
            inbound: Frames::after(24),
            outbound: Frames::new(),
            last_stream: 0,
            goaway: Vec::new(),
            closed: false,
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        let Some(policy) = &self.policy else { return };
        let (judge, calls, last_stream) = (&mut self.judge, &self.calls, &mut self.last_stream);
        let mut calm = true;
        self.inbound.feed(bytes, |header| {
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
            match header[3] {
                HEADERS => *last_stream = (*last_stream).max(stream & 0x7fff_ffff),
                PING if header[4] & ACK == 0 => {
                    let idle = calls.load(Ordering::Relaxed) == 0;
                    calm &= !judge.too_many(policy, idle);
                }
                _ => {}
            }
            true
        });
        if !calm && self.goaway.is_empty() {
            tracing::debug!("a client pinged too often: GOAWAY too_many_pings");
            self.goaway = goaway(self.last_stream);
        }
    }

    fn wrote(&mut self, bytes: &[u8]) {
        if self.policy.is_none() {
            return;
        }
        let judge = &mut self.judge;
        self.outbound.feed(bytes, |header| {
            if matches!(header[3], DATA | HEADERS) {
                judge.sent = true;
            }
            true
        });
    }
}

/// GOAWAY ENHANCE_YOUR_CALM `too_many_pings` (RFC 9113 §6.8).
fn goaway(last_stream: u32) -> Vec<u8> {
    const DEBUG: &[u8] = b"too_many_pings";
    let mut frame = Vec::with_capacity(9 + 8 + DEBUG.len());
    frame.extend_from_slice(&(8 + DEBUG.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&last_stream.to_be_bytes());
    frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frame.extend_from_slice(DEBUG);
    frame
}

impl<Io: AsyncWrite + Unpin> Policed<Io> {
    /// Writes a pending GOAWAY if hyper is between frames; then the connection
    /// is closed for hyper. `Ready(Ok(false))`: nothing to write.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.goaway.is_empty() || !self.outbound.at_boundary() {
            return Poll::Ready(Ok(false));
        }
        while !self.goaway.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.goaway))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.goaway.drain(..n);
        }
        std::task::ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
        self.closed = true;
        Poll::Ready(Ok(true))
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "connection closed: the client pinged too often",
    )
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncRead for Policed<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed || std::task::ready!(this.poll_goaway(cx))? {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let (_, read) = buf.filled().split_at(before);
        this.read(read);
        Poll::Ready(Ok(()))
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Policed<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed || std::task::ready!(this.poll_goaway(cx))? {
            return Poll::Ready(Err(closed()));
        }
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.wrote(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed || std::task::ready!(this.poll_goaway(cx))? {
            return Poll::Ready(Err(closed()));
        }
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for buf in bufs {
            let seen = left.min(buf.len());
            this.wrote(&buf[..seen]);
            left -= seen;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_third_bad_ping_in_a_row_is_too_many_and_data_clears_the_count() {
        let policy = KeepalivePolicy::DEFAULT;
        let mut judge = Judge::default();
        let second = Duration::from_secs(1);
        assert!(!judge.too_many(&policy, false), "the first ping is fine");
        for _ in 0..2 {
            tokio::time::advance(second).await;
            assert!(!judge.too_many(&policy, false));
        }
        judge.sent = true;
        tokio::time::advance(second).await;
        assert!(!judge.too_many(&policy, false), "data came: count cleared");
        assert_eq!(judge.strikes, 0);
        for _ in 0..2 {
            tokio::time::advance(second).await;
            assert!(!judge.too_many(&policy, false));
        }
        tokio::time::advance(second).await;
        assert!(judge.too_many(&policy, false));
    }

    #[tokio::test(start_paused = true)]
    async fn pings_at_the_allowed_pace_are_fine_idle_pings_need_permission() {
        let policy = KeepalivePolicy::DEFAULT.min_time(Duration::from_secs(10));
        let mut busy = Judge::default();
        let mut idle = Judge::default();
        let mut permitted = Judge::default();
        let mut idle_strikes = false;
        for _ in 0..5 {
            assert!(!busy.too_many(&policy, false));
            assert!(!permitted.too_many(&policy.permit_without_calls(true), true));
            idle_strikes |= idle.too_many(&policy, true);
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        assert!(idle_strikes, "idle pings every 10 s are too many");
    }

    #[test]
    fn the_goaway_frame_is_well_formed() {
        let frame = goaway(7);
        assert_eq!(&frame[..9], &[0, 0, 22, GOAWAY, 0, 0, 0, 0, 0]);
        assert_eq!(&frame[9..13], &7u32.to_be_bytes());
        assert_eq!(&frame[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert_eq!(&frame[17..], b"too_many_pings");
    }
}
