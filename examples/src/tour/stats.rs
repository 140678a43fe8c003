//! What the workload saw, by method: calls, outcomes, latencies, and the
//! attempts and retries behind them.
//!
//! Calls are counted where the workload makes them ([`timed`]); attempts are
//! counted one layer down, on the transport ([`Counted`]), because only there
//! is a retry visible (by the gRFC A6 attempts header): the generated clients
//! retry inside one call. The two together are the clients' own account of what
//! their policies did, which the live view and the verdict both read.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use hdrhistogram::Histogram;
use tai_runtime::{Channel, Status};
use tokio::time::Instant;
use tower::Service;

/// Every method the workload calls, in the order the tables list them.
const METHODS: &[&str] = &[
    "Governor/ProposePolicy",
    "Governor/EnforcePolicy",
    "Governor/RevokePolicy",
    "Governor/GetPolicies",
    "Governor/StreamPolicies",
    "Governor/HealthCheck",
    "Coordinator/SubmitSignal",
    "Coordinator/RequestAction",
    "Coordinator/StreamActions",
    "Coordinator/AcknowledgeAction",
    "Coordinator/GetStatus",
    "Coordinator/HealthCheck",
    "Scheduler/SubmitTask",
    "Scheduler/CancelTask",
    "Scheduler/GetTaskStatus",
    "Scheduler/StreamTaskUpdates",
    "Scheduler/HealthCheck",
];

/// One method's calls.
pub(super) struct MethodStats {
    pub(super) calls: u64,
    pub(super) ok: u64,
    pub(super) failed: u64,
    /// Failures by status code.
    pub(super) codes: BTreeMap<String, u64>,
    pub(super) last_error: Option<String>,
    pub(super) latency_us: Histogram<u64>,
    pub(super) attempts: u64,
    pub(super) retries: u64,
}

impl MethodStats {
    fn new() -> Self {
        Self {
            calls: 0,
            ok: 0,
            failed: 0,
            codes: BTreeMap::new(),
            last_error: None,
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 2).expect("valid bounds"),
            attempts: 0,
            retries: 0,
        }
    }
}

/// What the workload saw, by method, and on its streams.
pub(super) struct Stats {
    methods: Mutex<BTreeMap<&'static str, MethodStats>>,
    /// Actions delivered again (to a subscriber, after another vanished or timed out).
    pub(super) redelivered: AtomicU64,
    /// Subscriptions that broke and were opened again.
    pub(super) stream_breaks: AtomicU64,
    pub(super) policy_updates: AtomicU64,
    pub(super) task_updates: AtomicU64,
}

impl Stats {
    pub(super) fn new() -> Self {
        Self {
            methods: Mutex::new(METHODS.iter().map(|m| (*m, MethodStats::new())).collect()),
            redelivered: AtomicU64::new(0),
            stream_breaks: AtomicU64::new(0),
            policy_updates: AtomicU64::new(0),
            task_updates: AtomicU64::new(0),
        }
    }

    /// The methods, by name.
    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, MethodStats>> {
        self.methods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut methods = self.lock();
        let m = methods.entry(method).or_insert_with(MethodStats::new);
        m.calls += 1;
        m.latency_us.saturating_record(micros.max(1));
        match result {
            Ok(_) => m.ok += 1,
            Err(s) => {
                m.failed += 1;
                *m.codes.entry(format!("{:?}", s.code())).or_default() += 1;
                m.last_error = Some(s.message().to_owned());
            }
        }
    }

    fn attempt(&self, path: &str, retry: bool) {
        let Some(name) = path.strip_prefix("/tai.v1.mesh.") else {
            return;
        };
        let mut methods = self.lock();
        // Names come from the generated clients, a fixed set; anything else is ignored.
        if let Some(key) = METHODS.iter().find(|m| **m == name) {
            let m = methods.entry(key).or_insert_with(MethodStats::new);
            m.attempts += 1;
            if retry {
                m.retries += 1;
            }
        }
    }

    /// Calls, failed calls and retries, over all methods.
    pub(super) fn totals(&self) -> (u64, u64, u64) {
        self.lock().values().fold((0, 0, 0), |(c, f, r), m| {
            (c + m.calls, f + m.failed, r + m.retries)
        })
    }
}

/// Times a call and records its outcome.
pub(super) async fn timed<T>(
    stats: &Stats,
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    stats.record(method, started, &result);
    result
}

/// A transport that counts attempts (and retries, by the gRFC A6 attempts
/// header) on their way to the channel: the clients' own view of what their
/// policies did.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    stats: Arc<Stats>,
}

impl<S> Counted<S> {
    /// `inner`, counting into `stats`.
    pub(super) fn new(inner: S, stats: &Arc<Stats>) -> Self {
        Self {
            inner,
            stats: Arc::clone(stats),
        }
    }
}

/// Counting happens as the request passes, so the call's own future is
/// returned as it is.
impl<S> Service<http::Request<tonic::body::Body>> for Counted<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let retry = request.headers().contains_key("grpc-previous-rpc-attempts");
        self.stats.attempt(request.uri().path(), retry);
        self.inner.call(request)
    }
}

/// What the tour's clients send through.
pub(super) type Transport = Counted<Channel>;
