//! What the workload saw of its calls' outcomes, by method, for the verdict:
//! which failed, with what code and message. The figures the tables show —
//! calls, success rate, latency percentiles, retries — are the clients' own
//! statistics ([`Resilient::stats`](tai_runtime::Resilient::stats), read in
//! [`Clients::stats`](super::workload::Clients::stats)): a user reads the same
//! snapshot in their own program, so the tour shows it rather than keeping a
//! second count. This account stays as the verdict's independent check: the
//! workload's own word on each call it made, not the clients' report of it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use tai_runtime::Status;

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
}

impl MethodStats {
    fn new() -> Self {
        Self {
            calls: 0,
            ok: 0,
            failed: 0,
            codes: BTreeMap::new(),
            last_error: None,
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

    fn record<T>(&self, method: &'static str, result: &Result<T, Status>) {
        let mut methods = self.lock();
        let m = methods.entry(method).or_insert_with(MethodStats::new);
        m.calls += 1;
        match result {
            Ok(_) => m.ok += 1,
            Err(s) => {
                m.failed += 1;
                *m.codes.entry(format!("{:?}", s.code())).or_default() += 1;
                m.last_error = Some(s.message().to_owned());
            }
        }
    }

    /// Calls and failed calls, over all methods.
    pub(super) fn totals(&self) -> (u64, u64) {
        self.lock()
            .values()
            .fold((0, 0), |(c, f), m| (c + m.calls, f + m.failed))
    }
}

/// Makes a call and records its outcome.
pub(super) async fn recorded<T>(
    stats: &Stats,
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let result = call.await;
    stats.record(method, &result);
    result
}
