//! One HTTP/2 connection to an endpoint, kept alive by its own driver task.
//!
//! tonic's reconnecting channel reports ready while its endpoint is down and cannot
//! configure its reconnect backoff (tonic#1231, #1254). Here the driver owns the
//! connection and publishes exactly what it is doing: `Connecting` while it
//! dials, `Ready` only while a live HTTP/2 connection exists, `TransientFailure`
//! while it waits out its backoff, `Idle` after the idle timeout until a call
//! wants it again. Calls read that state (one atomic load) and never pick a
//! connection that is not `Ready`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::connectivity::ConnectivityState;
use super::connector::SharedConnector;
use crate::config::ConnectionConfig;

pub(crate) type Sender = SendRequest<tonic::body::Body>;

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

    /// A call on this connection ended.
    pub(crate) fn call_ended(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active.store(ms, Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
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
    cx: Arc<DriverContext>,
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
        let dialed = tokio::select! {
            r = tokio::time::timeout(cfg.connect_timeout, dial(&cx, &address)) => r,
            _ = shutdown.changed() => break,
        };
        let (sender, connection) = match dialed {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                conn.fail(format!("{address}: {e}"), &cx.changed);
                if !backoff(&cx, &mut failures, &mut shutdown).await {
                    break;
                }
                continue;
            }
            Err(_) => {
                conn.fail(
                    format!(
                        "{address}: connect timed out after {:?}",
                        cfg.connect_timeout
                    ),
                    &cx.changed,
                );
                if !backoff(&cx, &mut failures, &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        failures = 0;
        conn.sender.store(Some(Arc::new(sender)));
        conn.last_active
            .store(conn.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        conn.set_state(ConnectivityState::Ready, &cx.changed);
        tokio::pin!(connection);
        let ended = tokio::select! {
            r = &mut connection => Ended::Closed(r.err()),
            () = idle(&conn, cfg.idle_timeout) => Ended::Idle,
            _ = shutdown.changed() => Ended::Shutdown,
        };
        conn.sender.store(None);
        match ended {
            Ended::Closed(error) => {
                // A connection that worked is re-dialled at once; the backoff is
                // for endpoints that cannot be reached.
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

type Handshake = (
    Sender,
    http2::Connection<TokioIo<super::connector::BoxIo>, tonic::body::Body, TokioExecutor>,
);

async fn dial(
    cx: &DriverContext,
    address: &str,
) -> Result<Handshake, Box<dyn std::error::Error + Send + Sync>> {
    let io = cx.connector.connect(address).await?;
    let cfg = &cx.config;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(cfg.initial_stream_window)
        .initial_connection_window_size(cfg.initial_connection_window);
    if let Some(k) = cfg.keepalive {
        builder
            .keep_alive_interval(k.time)
            .keep_alive_timeout(k.timeout)
            .keep_alive_while_idle(k.while_idle);
    }
    Ok(builder.handshake(TokioIo::new(io)).await?)
}

/// Waits out the reconnect backoff; `false` if shut down meanwhile.
async fn backoff(
    cx: &DriverContext,
    failures: &mut u32,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let delay = cx.config.backoff.delay(*failures, cx.jitter.unit());
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
        let quiet_until = conn.epoch + last + timeout;
        if conn.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= quiet_until {
            return;
        }
        let next = quiet_until.max(Instant::now() + timeout / 4);
        tokio::time::sleep_until(next).await;
    }
}
