//! One HTTP/2 connection to an endpoint, kept alive by its own driver task.
//!
//! tonic's reconnecting channel reports ready while its endpoint is down and cannot
//! configure its reconnect backoff (tonic#1231, #1254). Here the driver owns the
//! connection and publishes exactly what it is doing: `Connecting` while it
//! dials, `Ready` only while a live HTTP/2 connection exists, `TransientFailure`
//! while it waits out its backoff, `Idle` after the idle timeout until a call
//! wants it again. Calls read that state (one atomic load) and never pick a
//! connection that is not `Ready`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::coalesce::{Coalescing, coalesced};
use super::connectivity::ConnectivityState;
use super::connector::SharedConnector;
use super::first_frame::{FirstFrame, NOT_HTTP2};
use super::headers_with_body::HeadersWithBody;
use super::request::RequestBody;
use crate::config::{ConnectionConfig, KeepaliveConfig};
use crate::metrics::EndpointMetrics;

pub(crate) type Sender = SendRequest<RequestBody>;

use crate::BoxError;

/// A connection slot and what its driver publishes about it.
pub(crate) struct Connection {
    sender: ArcSwapOption<Sender>,
    state: AtomicU8,
    pub(crate) in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last call's end, for the idle timeout.
    last_active: AtomicU64,
    epoch: Instant,
    demand: Notify,
    drained: Notify,
    last_error: Mutex<Option<String>>,
    /// Connection attempts made (for tests and statistics).
    pub(crate) attempts: AtomicU64,
}

impl Connection {
    pub(crate) fn new() -> Self {
        Self {
            sender: ArcSwapOption::empty(),
            // The driver starts dialling at once: a new channel connects eagerly
            // (without blocking its builder) so the first call rarely waits.
            state: AtomicU8::new(ConnectivityState::Connecting.to_u8()),
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            epoch: Instant::now(),
            demand: Notify::new(),
            drained: Notify::new(),
            last_error: Mutex::new(None),
            attempts: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> ConnectivityState {
        ConnectivityState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The sender, if the connection is ready.
    pub(crate) fn sender(&self) -> Option<Sender> {
        self.sender.load().as_deref().cloned()
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        crate::sync::lock(&self.last_error).clone()
    }

    /// Asks an idle connection to connect.
    pub(crate) fn want(&self) {
        if self.state() == ConnectivityState::Idle {
            self.demand.notify_waiters();
        }
    }

    /// A call on this connection ended; `true` if it was the last in flight.
    pub(crate) fn call_ended(&self) -> bool {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active.store(ms, Ordering::Relaxed);
        let drained = self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1;
        if drained {
            self.drained.notify_waiters();
        }
        drained
    }

    /// A send on this connection failed before anything was sent: the connection is
    /// going away; stop picking it now rather than when the driver notices.
    pub(crate) fn mark_broken(&self, changed: &watch::Sender<u64>) {
        self.sender.store(None);
        if self.state() == ConnectivityState::Ready {
            self.set_state(ConnectivityState::TransientFailure, changed);
        }
    }

    fn set_state(&self, state: ConnectivityState, changed: &watch::Sender<u64>) {
        let previous = self.state.swap(state.to_u8(), Ordering::AcqRel);
        if previous != state.to_u8() {
            changed.send_modify(|v| *v += 1);
        }
    }

    fn fail(&self, error: String, changed: &watch::Sender<u64>) {
        tracing::debug!(%error, "connection failed");
        *crate::sync::lock(&self.last_error) = Some(error);
        self.set_state(ConnectivityState::TransientFailure, changed);
    }
}

/// Everything a driver needs, shared by the connections of a channel.
pub(crate) struct DriverContext {
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) connector: SharedConnector,
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) jitter: Arc<super::rng::Rng>,
}

/// How a live connection ended.
enum Ended {
    Closed(Option<hyper::Error>),
    Idle,
    Shutdown,
}

/// Dials, serves and re-dials one connection until `shutdown` says stop; then
/// drains its calls in flight before closing.
pub(crate) async fn drive(
    conn: Arc<Connection>,
    address: String,
    keepalive: Arc<KeepaliveTime>,
    cx: Arc<DriverContext>,
    metrics: EndpointMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::clone(&cx.config);
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        conn.set_state(ConnectivityState::Connecting, &cx.changed);
        conn.attempts.fetch_add(1, Ordering::Relaxed);
        // One connect timeout covers the dial, the HTTP/2 handshake and the wait for
        // the server's SETTINGS.
        let keepalive_time = keepalive.get();
        let started = Instant::now();
        let dialed = tokio::select! {
            r = tokio::time::timeout(cfg.connect_timeout, dial(&cx, &conn, &address, keepalive_time)) => r,
            _ = shutdown.changed() => break,
        };
        let (sender, mut connection) = match dialed {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                metrics.connect_failures.inc();
                conn.fail(format!("{address}: {e}"), &cx.changed);
                if !backoff(&cx, &metrics, &mut failures, &mut shutdown).await {
                    break;
                }
                continue;
            }
            Err(_) => {
                metrics.connect_failures.inc();
                conn.fail(
                    format!(
                        "{address}: connect timed out after {:?} (no HTTP/2 SETTINGS from the server)",
                        cfg.connect_timeout
                    ),
                    &cx.changed,
                );
                if !backoff(&cx, &metrics, &mut failures, &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        // The server has spoken HTTP/2: only now is the endpoint reachable, so only
        // now does the backoff start over.
        failures = 0;
        metrics
            .connect_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.created.inc();
        metrics.open.inc();
        conn.sender.store(Some(Arc::new(sender)));
        conn.last_active
            .store(conn.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        conn.set_state(ConnectivityState::Ready, &cx.changed);
        let ended = tokio::select! {
            r = coalesced(&mut connection, &conn) => Ended::Closed(r.err()),
            () = idle(&conn, cfg.idle_timeout) => Ended::Idle,
            _ = shutdown.changed() => Ended::Shutdown,
        };
        conn.sender.store(None);
        metrics.open.dec();
        metrics.closed.inc();
        match ended {
            Ended::Closed(error) => {
                // A connection that worked is re-dialled at once; the backoff is
                // for endpoints that cannot be reached.
                if let (Some(e), Some(used)) = (&error, keepalive_time)
                    && too_many_pings(e)
                {
                    keepalive.slow_down(used, &address);
                }
                let reason =
                    error.map_or_else(|| "connection closed by peer".to_owned(), |e| e.to_string());
                conn.fail(format!("{address}: {reason}"), &cx.changed);
            }
            Ended::Idle => {
                // Register for demand before publishing Idle: `want` wakes only
                // waiters (no stored permit), so a stale wake-up cannot reconnect an
                // idle connection nobody asked for, and none is missed.
                let demand = conn.demand.notified();
                tokio::pin!(demand);
                demand.as_mut().enable();
                conn.set_state(ConnectivityState::Idle, &cx.changed);
                tokio::select! {
                    () = demand => {}
                    _ = shutdown.changed() => break,
                }
            }
            Ended::Shutdown => {
                // No new calls reach this connection; let the ones in flight finish.
                conn.set_state(ConnectivityState::Shutdown, &cx.changed);
                let drain = async {
                    while conn.in_flight.load(Ordering::Acquire) > 0 {
                        let drained = conn.drained.notified();
                        if conn.in_flight.load(Ordering::Acquire) == 0 {
                            break;
                        }
                        drained.await;
                    }
                };
                tokio::select! {
                    () = drain => {}
                    _ = &mut connection => {}
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                return;
            }
        }
    }
    conn.sender.store(None);
    conn.set_state(ConnectivityState::Shutdown, &cx.changed);
}

type HttpConnection =
    http2::Connection<TokioIo<HeadersWithBody<FirstFrame>>, RequestBody, Coalescing>;

/// Opens a connection and waits until the server's HTTP/2 preface has arrived.
///
/// hyper's handshake returns once the client's preface is written, before the
/// server has said anything; a peer that accepts and then closes (a proxy with no
/// backend, a port that is not HTTP/2) would look connected. As grpc-go does, a
/// connection counts only once the server's SETTINGS frame has been received;
/// until then a failure is a failed attempt, subject to the reconnect backoff.
async fn dial(
    cx: &DriverContext,
    conn: &Arc<Connection>,
    address: &str,
    keepalive_time: Option<Duration>,
) -> Result<(Sender, Pin<Box<HttpConnection>>), BoxError> {
    let io = cx.connector.connect(address).await?;
    let (io, mut first_frame) = FirstFrame::watch(io);
    let cfg = &cx.config;
    let mut builder = http2::Builder::new(Coalescing(Arc::clone(conn)));
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(cfg.initial_stream_window)
        .initial_connection_window_size(cfg.initial_connection_window);
    if let (Some(k), Some(time)) = (cfg.keepalive, keepalive_time) {
        builder
            .keep_alive_interval(time)
            .keep_alive_timeout(k.timeout)
            .keep_alive_while_idle(k.while_idle);
    }
    let io = TokioIo::new(HeadersWithBody::new(io));
    let (sender, connection) = builder.handshake(io).await?;
    // Boxed once per connection so that it can be polled here and kept afterwards.
    let mut connection = Box::pin(connection);
    // The connection must be polled for the server's frames to be read at all.
    std::future::poll_fn(|task| {
        if let Poll::Ready(ended) = connection.as_mut().poll(task) {
            let why = match (first_frame.try_recv(), ended) {
                (Ok(false), _) => NOT_HTTP2.to_owned(),
                (_, Err(e)) => format!("{e} before the server's HTTP/2 SETTINGS"),
                (_, Ok(())) => "connection closed before the server's HTTP/2 SETTINGS".to_owned(),
            };
            return Poll::Ready(Err(BoxError::from(why)));
        }
        Pin::new(&mut first_frame)
            .poll(task)
            .map(|seen| match seen {
                Ok(true) => Ok(()),
                Ok(false) => Err(NOT_HTTP2.into()),
                // The IO, and with it the sender, lives in the connection polled above.
                Err(_) => Err("connection closed before the server's HTTP/2 SETTINGS".into()),
            })
    })
    .await?;
    Ok((sender, connection))
}

/// The keepalive time of an endpoint's next connections, in milliseconds (0: no
/// keepalive), shared by its pool.
pub(crate) struct KeepaliveTime(AtomicU64);

impl KeepaliveTime {
    pub(crate) fn new(time: Option<Duration>) -> Self {
        Self(AtomicU64::new(time.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
        })))
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// gRFC A8: the server said `too_many_pings` to a connection that pinged every
    /// `used`; the next connections ping half as often (capped where the HTTP/2
    /// layer's clock is still safe). Relative to `used`, not to the current time:
    /// every connection of a pool hears the same complaint, and it is one
    /// complaint about one interval, so the pool doubles once, not once each.
    fn slow_down(&self, used: Duration, address: &str) {
        let used = u64::try_from(used.as_millis()).unwrap_or(u64::MAX);
        let doubled = used
            .saturating_mul(2)
            .min(KeepaliveConfig::MAX_TIME.as_millis() as u64);
        if self.0.fetch_max(doubled, Ordering::AcqRel) < doubled {
            tracing::warn!(
                endpoint = %address,
                keepalive = ?Duration::from_millis(doubled),
                "server sent GOAWAY too_many_pings: keepalive time doubled",
            );
        }
    }
}

/// Whether a connection ended with the server's GOAWAY ENHANCE_YOUR_CALM whose
/// debug data is `too_many_pings` (how grpc servers police keepalive pings).
fn too_many_pings(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // h2 has no accessor for a GOAWAY's debug data; its message ends with
            // it, as `(b"too_many_pings")`.
            return h2.is_go_away()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
                && h2.to_string().contains("too_many_pings");
        }
        source = e.source();
    }
    false
}

/// Waits out the reconnect backoff; `false` if shut down meanwhile.
async fn backoff(
    cx: &DriverContext,
    metrics: &EndpointMetrics,
    failures: &mut u32,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let delay = cx.config.backoff.delay(*failures, cx.jitter.unit());
    metrics.backoff.observe(delay.as_secs_f64());
    *failures = failures.saturating_add(1);
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}

/// Resolves once the connection has had no call for `timeout`.
async fn idle(conn: &Connection, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let last = Duration::from_millis(conn.last_active.load(Ordering::Relaxed));
        // An idle timeout past what `Instant` can hold never expires (no panic).
        let Some(quiet_until) = conn
            .epoch
            .checked_add(last)
            .and_then(|t| t.checked_add(timeout))
        else {
            return std::future::pending().await;
        };
        let now = Instant::now();
        if conn.in_flight.load(Ordering::Acquire) == 0 && now >= quiet_until {
            return;
        }
        let next = now
            .checked_add(timeout / 4)
            .map_or(quiet_until, |t| t.max(quiet_until));
        tokio::time::sleep_until(next).await;
    }
}
