//! The tour: what `mesh` does with no arguments.
//!
//! It starts the Governor, the Coordinator and three Scheduler replicas (one
//! shared task store) on loopback, runs a workload through the generated clients,
//! and breaks things on a schedule:
//!
//! | time (normal) | fault |
//! |---|---|
//! | 4s – 12s | replica-1 answers every call UNAVAILABLE |
//! | 14s – 20s | replica-2 is stopped (gracefully), then restarted |
//! | 22s – 30s | replica-3 answers 150ms late |
//! | 4s – 30s | Governor and Coordinator lose the response of one first attempt in five, *after* applying it |
//! | 16s | an action subscriber disconnects holding unacknowledged actions |
//!
//! What keeps every call succeeding is the policy compiled into the clients
//! from the .proto (retry on UNAVAILABLE with backoff, breakers that trip only
//! when a whole service fails) and the Scheduler channel's replica handling
//! (health watching, outlier ejection, peak-EWMA balancing); what keeps the
//! retries harmless is the servers' deduplication. The tour checks both at the
//! end: every idempotent call succeeded, every mutation was applied exactly
//! once, every action was acknowledged and every task ended — and exits 0 only
//! then. `--fast` runs the same schedule compressed about seven times, for tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use hdrhistogram::Histogram;
use tai_runtime::config::ClientConfig;
use tai_runtime::{BreakerState, Channel, Resilient, Status};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::Service;

use crate::client::{self, ReplicaPolicy};
use crate::coordinator::Coordinator;
use crate::fault::{FaultInjector, FaultPlan};
use crate::governor::Governor;
use crate::proto::coordinator_client::CoordinatorClient;
use crate::proto::governor_client::GovernorClient;
use crate::proto::scheduler_client::SchedulerClient;
use crate::proto::{
    AcknowledgeActionRequest, Action, CancelTaskRequest, EnforcePolicyRequest, GetPoliciesRequest,
    GetStatusRequest, GetTaskStatusRequest, HealthCheckRequest, Policy, ProposePolicyRequest,
    RequestActionRequest, RevokePolicyRequest, Signal, StreamActionsRequest, StreamPoliciesRequest,
    StreamTaskUpdatesRequest, SubmitSignalRequest, SubmitTaskRequest, TaskState,
};
use crate::scheduler::Scheduler;
use crate::server::{Drained, MeshServer, ServeError, bind};

/// How the tour shows progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Live {
    /// A refreshing table on a terminal, progress lines otherwise.
    #[default]
    Auto,
    /// Always the refreshing table.
    Table,
    /// Progress lines only.
    Lines,
}

/// Options of the tour.
#[derive(Clone, Debug)]
pub struct TourOptions {
    /// Run the schedule compressed (about 5s instead of 34s).
    pub fast: bool,
    /// How to show progress.
    pub live: Live,
    /// The connection preset of the clients.
    pub config: ClientConfig,
    /// Seed of the workload's choices and of the clients' jitter.
    pub seed: u64,
}

impl Default for TourOptions {
    fn default() -> Self {
        Self {
            fast: false,
            live: Live::Auto,
            config: ClientConfig::default(),
            seed: 7,
        }
    }
}

/// How the tour went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TourOutcome {
    /// Every check passed: exit 0.
    pub passed: bool,
    /// Idempotent calls made (all unary calls and stream openings are).
    pub calls: u64,
    /// Of which failed.
    pub failed: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Why the tour could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TourError {
    /// A server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A client could not be built.
    #[error(transparent)]
    Connect(#[from] tai_runtime::ConnectError),
    /// Output failed.
    #[error("cannot write the tour's output: {0}")]
    Io(#[from] std::io::Error),
}

// ---------------------------------------------------------------------------
// The schedule

#[derive(Clone, Copy, Debug)]
enum Step {
    Unavailable(usize, bool),
    Stop(usize),
    Start(usize),
    Slow(usize, bool),
    LoseResponses(bool),
    CrashSubscriber,
    StopWorkload,
}

/// Seconds (at normal speed) and what happens then.
const SCHEDULE: &[(f64, Step, &str)] = &[
    (
        4.0,
        Step::LoseResponses(true),
        "Governor and Coordinator start losing 1 in 5 responses after applying them",
    ),
    (
        4.0,
        Step::Unavailable(0, true),
        "replica-1 starts answering every call UNAVAILABLE",
    ),
    (12.0, Step::Unavailable(0, false), "replica-1 recovers"),
    (
        14.0,
        Step::Stop(1),
        "replica-2 is stopped (graceful shutdown)",
    ),
    (
        16.0,
        Step::CrashSubscriber,
        "action subscriber worker-a disconnects holding unacknowledged actions",
    ),
    (20.0, Step::Start(1), "replica-2 is restarted"),
    (
        22.0,
        Step::Slow(2, true),
        "replica-3 starts answering 150ms late",
    ),
    (30.0, Step::Slow(2, false), "replica-3 is fast again"),
    (30.0, Step::LoseResponses(false), "no more lost responses"),
    (
        32.0,
        Step::StopWorkload,
        "workload stops; waiting for tasks and actions to finish",
    ),
];
const NORMAL_LENGTH: f64 = 32.0;
const FAST_FACTOR: f64 = 0.15;
const SLOW_BY: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------------------
// Statistics

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

struct MethodStats {
    calls: u64,
    ok: u64,
    failed: u64,
    codes: BTreeMap<String, u64>,
    last_error: Option<String>,
    latency_us: Histogram<u64>,
    attempts: u64,
    retries: u64,
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

/// What the workload saw, by method.
struct Stats {
    methods: Mutex<BTreeMap<&'static str, MethodStats>>,
    /// Counted by the transport: every attempt, and those that were retries.
    redelivered: AtomicU64,
    stream_breaks: AtomicU64,
    policy_updates: AtomicU64,
    task_updates: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        Self {
            methods: Mutex::new(METHODS.iter().map(|m| (*m, MethodStats::new())).collect()),
            redelivered: AtomicU64::new(0),
            stream_breaks: AtomicU64::new(0),
            policy_updates: AtomicU64::new(0),
            task_updates: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, MethodStats>> {
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

    fn totals(&self) -> (u64, u64, u64) {
        self.lock().values().fold((0, 0, 0), |(c, f, r), m| {
            (c + m.calls, f + m.failed, r + m.retries)
        })
    }
}

/// Times a call and records its outcome.
async fn timed<T>(
    stats: &Stats,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, Status>>,
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

impl<S> Service<http::Request<tonic::body::Body>> for Counted<S>
where
    S: Service<http::Request<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let retry = request.headers().contains_key("grpc-previous-rpc-attempts");
        self.stats.attempt(request.uri().path(), retry);
        Box::pin(self.inner.call(request))
    }
}

type Transport = Counted<Channel>;

// ---------------------------------------------------------------------------
// Servers

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<Drained, ServeError>>,
}

struct Replica {
    name: String,
    addr: SocketAddr,
    faults: FaultInjector,
    running: Option<Running>,
    /// A shutdown in progress, run off the schedule's loop.
    stopping: Option<JoinHandle<()>>,
    fault: &'static str,
}

fn spawn_server<H: crate::scheduler::TaskHandler>(
    server: MeshServer<H>,
    listener: tokio::net::TcpListener,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.drain_timeout(Duration::from_secs(2)).serve(
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Running { stop, task }
}

async fn stop(running: Option<Running>) {
    if let Some(r) = running {
        let _ = r.stop.send(());
        let _ = r.task.await;
    }
}

/// Binds `addr` again after a stop; the port may take a moment to be free.
async fn rebind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    let mut tries = 0;
    loop {
        match bind(addr).await {
            Err(ServeError::AddrInUse(_)) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

// ---------------------------------------------------------------------------
// The workload

/// A small deterministic generator (xorshift), so a seed replays the workload.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Clients {
    governor: GovernorClient<Transport>,
    coordinator: CoordinatorClient<Transport>,
    scheduler: SchedulerClient<Transport>,
}

/// Mutations the workload saw succeed, to compare with what the servers applied.
#[derive(Default)]
struct Expected {
    governor_mutations: AtomicU64,
    coordinator_mutations: AtomicU64,
    scheduler_mutations: AtomicU64,
    actions_requested: AtomicU64,
}

const PACE: Duration = Duration::from_millis(15);

async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*stop.borrow()
}

async fn governor_worker(
    k: u64,
    c: GovernorClient<Transport>,
    stats: Arc<Stats>,
    expected: Arc<Expected>,
    mut stop: watch::Receiver<bool>,
) {
    const TYPES: [&str; 3] = ["security", "performance", "compliance"];
    let mut n = 0u64;
    while !*stop.borrow() {
        let id = format!("policy-{k}-{}", n % 8);
        let proposal = ProposePolicyRequest {
            request_id: format!("gov-{k}-{n}-propose"),
            policy: Some(Policy {
                id: id.clone(),
                policy_type: TYPES[(n % 3) as usize].to_owned(),
                name: format!("tour policy {id}"),
                version: 0,
                rules: [("max_rps".to_owned(), (100 + n).to_string())].into(),
                ..Policy::default()
            }),
        };
        if let Ok(receipt) =
            timed(&stats, "Governor/ProposePolicy", c.propose_policy(proposal)).await
        {
            expected.governor_mutations.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(3) {
                let enforce = EnforcePolicyRequest {
                    request_id: format!("gov-{k}-{n}-enforce"),
                    policy_id: id.clone(),
                    version: receipt.version,
                };
                if timed(&stats, "Governor/EnforcePolicy", c.enforce_policy(enforce))
                    .await
                    .is_ok()
                {
                    expected.governor_mutations.fetch_add(1, Ordering::Relaxed);
                }
            }
            if n % 7 == 6 {
                let revoke = RevokePolicyRequest {
                    request_id: format!("gov-{k}-{n}-revoke"),
                    policy_id: id,
                    version: receipt.version,
                    reason: "superseded".to_owned(),
                };
                if timed(&stats, "Governor/RevokePolicy", c.revoke_policy(revoke))
                    .await
                    .is_ok()
                {
                    expected.governor_mutations.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if n.is_multiple_of(5) {
            let query = GetPoliciesRequest {
                policy_type: TYPES[(n % 3) as usize].to_owned(),
                ..GetPoliciesRequest::default()
            };
            let _ = timed(&stats, "Governor/GetPolicies", c.get_policies(query)).await;
        }
        if n.is_multiple_of(50) {
            let _ = timed(
                &stats,
                "Governor/HealthCheck",
                c.health_check(HealthCheckRequest {}),
            )
            .await;
        }
        n += 1;
        if !pause(&mut stop, PACE).await {
            break;
        }
    }
}

async fn policy_watcher(
    c: GovernorClient<Transport>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let request = StreamPoliciesRequest {
            include_existing: true,
            ..StreamPoliciesRequest::default()
        };
        let Ok(mut stream) = timed(
            &stats,
            "Governor/StreamPolicies",
            c.stream_policies(request),
        )
        .await
        else {
            if !pause(&mut stop, Duration::from_millis(100)).await {
                return;
            }
            continue;
        };
        loop {
            tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(_)) => { stats.policy_updates.fetch_add(1, Ordering::Relaxed); }
                    _ => { stats.stream_breaks.fetch_add(1, Ordering::Relaxed); break; }
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

async fn coordinator_worker(
    k: u64,
    c: CoordinatorClient<Transport>,
    stats: Arc<Stats>,
    expected: Arc<Expected>,
    mut stop: watch::Receiver<bool>,
) {
    const SIGNALS: [&str; 3] = ["deployment", "scaling", "alert"];
    const ACTIONS: [&str; 3] = ["restart", "scale", "notify"];
    let mut n = 0u64;
    while !*stop.borrow() {
        let signal_id = format!("sig-{k}-{n}");
        let signal = SubmitSignalRequest {
            request_id: signal_id.clone(),
            signal: Some(Signal {
                signal_type: SIGNALS[(n % 3) as usize].to_owned(),
                source: format!("tour-{k}"),
                metadata: [("n".to_owned(), n.to_string())].into(),
                priority: (n % 3) as i32,
                ..Signal::default()
            }),
        };
        if timed(&stats, "Coordinator/SubmitSignal", c.submit_signal(signal))
            .await
            .is_ok()
        {
            expected
                .coordinator_mutations
                .fetch_add(1, Ordering::Relaxed);
            let action = RequestActionRequest {
                request_id: format!("act-{k}-{n}"),
                action: Some(Action {
                    action_type: ACTIONS[(n % 3) as usize].to_owned(),
                    target: format!("service-{}", n % 5),
                    priority: (n % 3) as i32,
                    signal_id,
                    ..Action::default()
                }),
            };
            if timed(
                &stats,
                "Coordinator/RequestAction",
                c.request_action(action),
            )
            .await
            .is_ok()
            {
                expected
                    .coordinator_mutations
                    .fetch_add(1, Ordering::Relaxed);
                expected.actions_requested.fetch_add(1, Ordering::Relaxed);
            }
        }
        if n.is_multiple_of(10) {
            let _ = timed(
                &stats,
                "Coordinator/GetStatus",
                c.get_status(GetStatusRequest {}),
            )
            .await;
        }
        if n.is_multiple_of(50) {
            let _ = timed(
                &stats,
                "Coordinator/HealthCheck",
                c.health_check(HealthCheckRequest {}),
            )
            .await;
        }
        n += 1;
        if !pause(&mut stop, PACE).await {
            break;
        }
    }
}

/// Acknowledges every action it gets. On `crash`, it stops acknowledging,
/// takes a few more actions and drops its stream, then subscribes again.
async fn action_subscriber(
    name: &'static str,
    c: CoordinatorClient<Transport>,
    stats: Arc<Stats>,
    expected: Arc<Expected>,
    mut crash: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
) {
    let mut crashed = false;
    loop {
        let request = StreamActionsRequest {
            subscriber_id: name.to_owned(),
            max_in_flight: 8,
            ack_timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..StreamActionsRequest::default()
        };
        let Ok(mut stream) = timed(
            &stats,
            "Coordinator/StreamActions",
            c.stream_actions(request),
        )
        .await
        else {
            if *done.borrow() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut held = 0;
        loop {
            let action = tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(a)) => a,
                    _ => { stats.stream_breaks.fetch_add(1, Ordering::Relaxed); break; }
                },
                _ = done.wait_for(|d| *d) => return,
            };
            if action.delivery_attempt > 1 {
                stats.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            if !crashed && *crash.borrow_and_update() {
                // Hold this one and the next two, unacknowledged, then vanish.
                held += 1;
                if held >= 3 {
                    crashed = true;
                    break;
                }
                continue;
            }
            let ack = AcknowledgeActionRequest {
                request_id: format!("ack-{}-{name}-{}", action.id, action.delivery_attempt),
                action_id: action.id.clone(),
                subscriber_id: name.to_owned(),
                success: true,
                message: String::new(),
            };
            // Every request_id is new, so each success is one applied mutation —
            // also when the action was acknowledged by the other subscriber first
            // (`accepted: false` is a recorded outcome too).
            if timed(
                &stats,
                "Coordinator/AcknowledgeAction",
                c.acknowledge_action(ack),
            )
            .await
            .is_ok()
            {
                expected
                    .coordinator_mutations
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(stream);
        if *done.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scheduler_worker(
    k: u64,
    c: SchedulerClient<Transport>,
    stats: Arc<Stats>,
    expected: Arc<Expected>,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng::new(seed + k);
    let mut n = 0u64;
    let mut previous: Option<String> = None;
    while !*stop.borrow() {
        let task_id = format!("task-{k}-{n}");
        let (task_type, parameters): (&str, HashMap<String, String>) = match n % 3 {
            0 => (
                "sleep",
                [("ms".to_owned(), (5 + rng.below(25)).to_string())].into(),
            ),
            1 => (
                "sum",
                [(
                    "values".to_owned(),
                    format!("{},{},{}", n, k, rng.below(100)),
                )]
                .into(),
            ),
            _ => ("echo", [("n".to_owned(), n.to_string())].into()),
        };
        let at = SystemTime::now() + Duration::from_millis(rng.below(4) * 50);
        let submit = SubmitTaskRequest {
            request_id: task_id.clone(),
            task_id: task_id.clone(),
            task_type: task_type.to_owned(),
            parameters,
            scheduled_time: Some(at.into()),
            priority: (n % 3) as i32,
        };
        if timed(&stats, "Scheduler/SubmitTask", c.submit_task(submit))
            .await
            .is_ok()
        {
            expected.scheduler_mutations.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(id) = previous.replace(task_id) {
            let _ = timed(
                &stats,
                "Scheduler/GetTaskStatus",
                c.get_task_status(GetTaskStatusRequest { task_id: id }),
            )
            .await;
        }
        if n % 8 == 7 {
            // A task for later, cancelled before it runs.
            let later = format!("later-{k}-{n}");
            let submit = SubmitTaskRequest {
                request_id: later.clone(),
                task_id: later.clone(),
                task_type: "echo".to_owned(),
                scheduled_time: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
                ..SubmitTaskRequest::default()
            };
            if timed(&stats, "Scheduler/SubmitTask", c.submit_task(submit))
                .await
                .is_ok()
            {
                expected.scheduler_mutations.fetch_add(1, Ordering::Relaxed);
                let cancel = CancelTaskRequest {
                    request_id: format!("{later}-cancel"),
                    task_id: later,
                    reason: "not needed after all".to_owned(),
                };
                if timed(&stats, "Scheduler/CancelTask", c.cancel_task(cancel))
                    .await
                    .is_ok()
                {
                    expected.scheduler_mutations.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if n.is_multiple_of(50) {
            let _ = timed(
                &stats,
                "Scheduler/HealthCheck",
                c.health_check(HealthCheckRequest {}),
            )
            .await;
        }
        n += 1;
        if !pause(&mut stop, PACE).await {
            break;
        }
    }
}

async fn task_watcher(
    c: SchedulerClient<Transport>,
    stats: Arc<Stats>,
    mut done: watch::Receiver<bool>,
) {
    loop {
        let Ok(mut stream) = timed(
            &stats,
            "Scheduler/StreamTaskUpdates",
            c.stream_task_updates(StreamTaskUpdatesRequest::default()),
        )
        .await
        else {
            if *done.borrow() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(_)) => { stats.task_updates.fetch_add(1, Ordering::Relaxed); }
                    // A replica shutting down ends its streams: subscribe again.
                    _ => { stats.stream_breaks.fetch_add(1, Ordering::Relaxed); break; }
                },
                _ = done.wait_for(|d| *d) => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Display

fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

fn method_table(stats: &Stats, out: &mut String) {
    let _ = writeln!(
        out,
        "  {:<30} {:>7} {:>7} {:>6} {:>7} {:>8} {:>8}",
        "method", "calls", "ok", "failed", "retries", "p50", "p99"
    );
    for (name, m) in stats.lock().iter() {
        if m.calls == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<30} {:>7} {:>7} {:>6} {:>7} {:>8} {:>8}",
            name,
            m.calls,
            m.ok,
            m.failed,
            m.retries,
            fmt_us(m.latency_us.value_at_quantile(0.5)),
            fmt_us(m.latency_us.value_at_quantile(0.99)),
        );
    }
}

fn replica_table(replicas: &[Replica], channel: &Channel, out: &mut String) {
    let _ = writeln!(
        out,
        "  {:<10} {:<16} {:<8} {:<13} {:>7} {:>8} {:>8} {:>8}  fault",
        "replica", "address", "server", "in rotation", "latency", "calls", "failures", "injected"
    );
    let stats = channel.endpoint_stats();
    for r in replicas {
        let addr = r.addr.to_string();
        let e = stats.iter().find(|e| e.address.ends_with(&addr));
        let rotation = match e {
            None => "unknown".to_owned(),
            Some(e) if e.ejected_for.is_some() => {
                format!(
                    "ejected {:.1}s",
                    e.ejected_for.unwrap_or_default().as_secs_f64()
                )
            }
            Some(e) if e.not_serving => "not serving".to_owned(),
            Some(e) => format!("{:?}", e.state).to_lowercase(),
        };
        let f = r.faults.counts();
        let _ = writeln!(
            out,
            "  {:<10} {:<16} {:<8} {:<13} {:>7} {:>8} {:>8} {:>8}  {}",
            r.name,
            addr,
            if r.running.is_some() { "up" } else { "stopped" },
            rotation,
            e.and_then(|e| e.ewma_latency).map_or_else(
                || "-".to_owned(),
                |d| fmt_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            ),
            e.map_or(0, |e| e.calls),
            e.map_or(0, |e| e.failures),
            f.refused + f.delayed + f.dropped,
            r.fault,
        );
    }
}

fn breaker_line<C: Resilient>(service: &str, client: &C, out: &mut String) {
    let policy = client.service_policy();
    let mut closed = 0;
    let mut total = 0;
    let mut others = Vec::new();
    for m in policy.methods {
        match client.breaker_state(m.name) {
            None => {}
            Some(BreakerState::Closed) => {
                closed += 1;
                total += 1;
            }
            Some(state) => {
                total += 1;
                others.push(format!("{}: {}", m.name, state.name()));
            }
        }
    }
    let _ = write!(out, "  {service} breakers: {closed}/{total} closed");
    if !others.is_empty() {
        let _ = write!(out, " ({})", others.join(", "));
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------
// The tour

struct Setup {
    governor: Governor,
    coordinator: Coordinator,
    scheduler: Scheduler,
    governor_server: Option<Running>,
    coordinator_server: Option<Running>,
    governor_faults: FaultInjector,
    coordinator_faults: FaultInjector,
    replicas: Vec<Replica>,
}

/// Runs the tour, writing progress and the summary to `out`.
///
/// # Errors
///
/// If the servers or clients cannot be set up, or `out` fails; a tour whose
/// checks fail is an `Ok` with `passed: false`.
pub async fn run(
    options: TourOptions,
    out: &mut (dyn Write + Send),
) -> Result<TourOutcome, TourError> {
    let started = Instant::now();
    let factor = if options.fast { FAST_FACTOR } else { 1.0 };
    let scaled = |s: f64| Duration::from_secs_f64(s * factor);
    let table = match options.live {
        Live::Table => true,
        Live::Lines => false,
        Live::Auto => std::io::stdout().is_terminal(),
    };

    // Servers.
    let mut setup = Setup {
        governor: Governor::new(),
        coordinator: Coordinator::new(),
        scheduler: Scheduler::default(),
        governor_server: None,
        coordinator_server: None,
        governor_faults: FaultInjector::new("the Governor"),
        coordinator_faults: FaultInjector::new("the Coordinator"),
        replicas: Vec::new(),
    };
    let listener = bind(localhost()).await?;
    let governor_addr = listener.local_addr().map_err(TourError::Io)?;
    setup.governor_server = Some(spawn_server(
        MeshServer::new()
            .governor(setup.governor.clone())
            .faults(setup.governor_faults.clone()),
        listener,
    ));
    let listener = bind(localhost()).await?;
    let coordinator_addr = listener.local_addr().map_err(TourError::Io)?;
    setup.coordinator_server = Some(spawn_server(
        MeshServer::new()
            .coordinator(setup.coordinator.clone())
            .faults(setup.coordinator_faults.clone()),
        listener,
    ));
    for i in 0..3 {
        let listener = bind(localhost()).await?;
        let addr = listener.local_addr().map_err(TourError::Io)?;
        let name = format!("replica-{}", i + 1);
        let faults = FaultInjector::new(name.clone());
        let running = spawn_server(
            MeshServer::new()
                .scheduler(setup.scheduler.clone())
                .faults(faults.clone()),
            listener,
        );
        setup.replicas.push(Replica {
            name,
            addr,
            faults,
            running: Some(running),
            stopping: None,
            fault: "",
        });
    }

    // Metrics.
    let fault_counters = {
        let injectors: Vec<(String, FaultInjector)> = setup
            .replicas
            .iter()
            .map(|r| (r.name.clone(), r.faults.clone()))
            .chain([
                ("governor".to_owned(), setup.governor_faults.clone()),
                ("coordinator".to_owned(), setup.coordinator_faults.clone()),
            ])
            .collect();
        move || {
            let mut text = String::from(
                "# HELP tai_tour_injected_faults Faults the tour injected, by server and kind.\n\
                 # TYPE tai_tour_injected_faults counter\n",
            );
            for (name, f) in &injectors {
                let c = f.counts();
                for (kind, n) in [
                    ("refused", c.refused),
                    ("delayed", c.delayed),
                    ("lost_response", c.dropped),
                ] {
                    let _ = writeln!(
                        text,
                        "tai_tour_injected_faults_total{{server=\"{name}\",kind=\"{kind}\"}} {n}"
                    );
                }
            }
            text
        }
    };
    let (metrics_url, metrics_task) =
        crate::metrics::serve(bind(localhost()).await?, Arc::new(fault_counters));

    // Clients.
    let stats = Arc::new(Stats::new());
    let expected = Arc::new(Expected::default());
    let counted = |channel: Channel| Counted {
        inner: channel,
        stats: Arc::clone(&stats),
    };
    let replica_addrs: Vec<String> = setup.replicas.iter().map(|r| r.addr.to_string()).collect();
    let scheduler_channel = client::scheduler_channel(
        &replica_addrs,
        options.config.clone(),
        ReplicaPolicy::default().scaled(factor.max(0.25)),
    )?;
    scheduler_channel.reseed(options.seed);
    let clients = Clients {
        governor: GovernorClient::new(counted(client::channel(
            &governor_addr.to_string(),
            options.config.clone(),
        )?)),
        coordinator: CoordinatorClient::new(counted(client::channel(
            &coordinator_addr.to_string(),
            options.config.clone(),
        )?)),
        scheduler: SchedulerClient::new(counted(scheduler_channel.clone())),
    };
    clients.governor.client_state().seed_jitter(options.seed);
    clients
        .coordinator
        .client_state()
        .seed_jitter(options.seed + 1);
    clients
        .scheduler
        .client_state()
        .seed_jitter(options.seed + 2);
    scheduler_channel.ready(Duration::from_secs(5)).await;

    let intro = format!(
        "tai mesh tour: Governor on {governor_addr}, Coordinator on {coordinator_addr}, Scheduler replicas on {}\n\
         metrics: {metrics_url} (Prometheus text; scrape it while the tour runs)\n\
         schedule: {:.0}s{}\n",
        replica_addrs.join(", "),
        NORMAL_LENGTH * factor,
        if options.fast { " (fast mode)" } else { "" }
    );
    write!(out, "{intro}")?;
    out.flush()?;

    // Workload.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let (crash_tx, crash_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for k in 0..2 {
        workers.push(tokio::spawn(governor_worker(
            k,
            clients.governor.clone(),
            Arc::clone(&stats),
            Arc::clone(&expected),
            stop_rx.clone(),
        )));
        workers.push(tokio::spawn(coordinator_worker(
            k,
            clients.coordinator.clone(),
            Arc::clone(&stats),
            Arc::clone(&expected),
            stop_rx.clone(),
        )));
    }
    for k in 0..3 {
        workers.push(tokio::spawn(scheduler_worker(
            k,
            clients.scheduler.clone(),
            Arc::clone(&stats),
            Arc::clone(&expected),
            options.seed,
            stop_rx.clone(),
        )));
    }
    let listeners = vec![
        tokio::spawn(policy_watcher(
            clients.governor.clone(),
            Arc::clone(&stats),
            done_rx.clone(),
        )),
        tokio::spawn(task_watcher(
            clients.scheduler.clone(),
            Arc::clone(&stats),
            done_rx.clone(),
        )),
        tokio::spawn(action_subscriber(
            "worker-a",
            clients.coordinator.clone(),
            Arc::clone(&stats),
            Arc::clone(&expected),
            crash_rx.clone(),
            done_rx.clone(),
        )),
        tokio::spawn(action_subscriber(
            "worker-b",
            clients.coordinator.clone(),
            Arc::clone(&stats),
            Arc::clone(&expected),
            watch::channel(false).1,
            done_rx.clone(),
        )),
    ];

    // The schedule, with live progress.
    let mut events: VecDeque<String> = VecDeque::new();
    let mut phase = "all healthy".to_owned();
    let mut drawn = false;
    let refresh = if table {
        Duration::from_millis(250)
    } else {
        scaled(4.0)
    };
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let origin = Instant::now();
    let total = scaled(NORMAL_LENGTH);
    let mut steps = SCHEDULE.iter().peekable();
    loop {
        let next_at = steps.peek().map(|(at, _, _)| origin + scaled(*at));
        tokio::select! {
            () = async { match next_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                let Some((at, step, what)) = steps.next() else { continue };
                let line = format!("[{:>5.1}s] {what}", at * factor);
                phase = (*what).to_owned();
                if !table {
                    writeln!(out, "{line}")?;
                }
                events.push_back(line);
                if events.len() > 4 {
                    events.pop_front();
                }
                match *step {
                    Step::Unavailable(i, on) => {
                        let r = &mut setup.replicas[i];
                        if on { r.faults.set(FaultPlan::unavailable()); r.fault = "UNAVAILABLE"; } else { r.faults.clear(); r.fault = ""; }
                    }
                    Step::Slow(i, on) => {
                        let r = &mut setup.replicas[i];
                        if on { r.faults.set(FaultPlan::latency(SLOW_BY)); r.fault = "slow (+150ms)"; } else { r.faults.clear(); r.fault = ""; }
                    }
                    Step::Stop(i) => {
                        let r = &mut setup.replicas[i];
                        r.fault = "stopped";
                        r.stopping = Some(tokio::spawn(stop(r.running.take())));
                    }
                    Step::Start(i) => {
                        let r = &mut setup.replicas[i];
                        if let Some(stopping) = r.stopping.take() {
                            let _ = stopping.await;
                        }
                        let listener = rebind(r.addr).await?;
                        r.running = Some(spawn_server(
                            MeshServer::new().scheduler(setup.scheduler.clone()).faults(r.faults.clone()),
                            listener,
                        ));
                        r.fault = "";
                    }
                    Step::LoseResponses(on) => {
                        if on {
                            setup.governor_faults.set(FaultPlan::lose_first_responses(5, &[
                                "/tai.v1.mesh.Governor/ProposePolicy",
                                "/tai.v1.mesh.Governor/EnforcePolicy",
                                "/tai.v1.mesh.Governor/RevokePolicy",
                            ]));
                            setup.coordinator_faults.set(FaultPlan::lose_first_responses(5, &[
                                "/tai.v1.mesh.Coordinator/SubmitSignal",
                                "/tai.v1.mesh.Coordinator/RequestAction",
                                "/tai.v1.mesh.Coordinator/AcknowledgeAction",
                            ]));
                        } else {
                            setup.governor_faults.clear();
                            setup.coordinator_faults.clear();
                        }
                    }
                    Step::CrashSubscriber => { let _ = crash_tx.send(true); }
                    Step::StopWorkload => {
                        let _ = stop_tx.send(true);
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                let elapsed = origin.elapsed().min(total);
                if table {
                    let frame = frame(elapsed, total, &phase, &metrics_url, &stats, &setup.replicas, &scheduler_channel, &clients, &events);
                    // Redraw from the top left, clearing what each line leaves:
                    // right however the terminal wraps long lines.
                    let home = if drawn { "\x1b[H" } else { "\x1b[2J\x1b[H" };
                    drawn = true;
                    write!(out, "{home}{}\x1b[J", frame.replace('\n', "\x1b[K\n"))?;
                    out.flush()?;
                } else if elapsed > Duration::ZERO {
                    let (calls, failed, retries) = stats.totals();
                    writeln!(out, "[{:>5.1}s] {calls} calls, {failed} failed, {retries} retries", elapsed.as_secs_f64())?;
                }
            }
        }
    }

    // Let the workload finish, then wait (bounded) for tasks to end and actions
    // to be acknowledged.
    for w in workers {
        let _ = w.await;
    }
    let settle_until = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = setup.scheduler.counts();
        let unfinished = counts.get(&TaskState::Scheduled).copied().unwrap_or(0)
            + counts.get(&TaskState::Running).copied().unwrap_or(0);
        let status = setup.coordinator.status();
        if (unfinished == 0 && status.actions_pending == 0 && status.actions_in_flight == 0)
            || Instant::now() >= settle_until
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = done_tx.send(true);
    for l in listeners {
        let _ = l.await;
    }
    if drawn {
        write!(out, "\x1b[2J\x1b[H{intro}")?;
    }

    // Summary.
    let elapsed = started.elapsed();
    let mut summary = String::new();
    let _ = writeln!(summary, "\nsummary after {:.1}s\n", elapsed.as_secs_f64());
    method_table(&stats, &mut summary);
    summary.push('\n');
    replica_table(&setup.replicas, &scheduler_channel, &mut summary);
    summary.push('\n');
    breaker_line("Governor", &clients.governor, &mut summary);
    breaker_line("Coordinator", &clients.coordinator, &mut summary);
    breaker_line("Scheduler", &clients.scheduler, &mut summary);
    summary.push('\n');

    let (calls, failed, retries) = stats.totals();
    let mut checks: Vec<(bool, String)> = Vec::new();
    let failures: Vec<String> = stats
        .lock()
        .iter()
        .filter(|(_, m)| m.failed > 0)
        .map(|(name, m)| {
            format!(
                "{name}: {} failed ({}), last: {}",
                m.failed,
                m.codes
                    .iter()
                    .map(|(c, n)| format!("{n} {c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                m.last_error.clone().unwrap_or_default()
            )
        })
        .collect();
    checks.push((
        failed == 0,
        if failed == 0 {
            format!("all {calls} idempotent calls succeeded ({retries} retries were needed)")
        } else {
            format!(
                "{failed} of {calls} idempotent calls failed: {}",
                failures.join("; ")
            )
        },
    ));
    let lost = setup.governor_faults.counts().dropped + setup.coordinator_faults.counts().dropped;
    let duplicates =
        setup.governor.duplicates() + setup.coordinator.duplicates() + setup.scheduler.duplicates();
    let exactly_once = setup.governor.applied()
        == expected.governor_mutations.load(Ordering::Relaxed)
        && setup.coordinator.applied() == expected.coordinator_mutations.load(Ordering::Relaxed)
        && setup.scheduler.applied() == expected.scheduler_mutations.load(Ordering::Relaxed);
    checks.push((
        exactly_once,
        format!(
            "every mutation applied exactly once: Governor {} applied / {} acknowledged, Coordinator {} / {}, Scheduler {} / {}; \
             {lost} responses were lost after applying, {duplicates} retries answered from the dedup log",
            setup.governor.applied(),
            expected.governor_mutations.load(Ordering::Relaxed),
            setup.coordinator.applied(),
            expected.coordinator_mutations.load(Ordering::Relaxed),
            setup.scheduler.applied(),
            expected.scheduler_mutations.load(Ordering::Relaxed),
        ),
    ));
    let status = setup.coordinator.status();
    let requested = expected.actions_requested.load(Ordering::Relaxed);
    checks.push((
        status.actions_acknowledged == requested && status.actions_pending == 0 && status.actions_in_flight == 0,
        format!(
            "every action acknowledged: {} of {requested} ({} pending, {} in flight; {} redelivered after a subscriber vanished or timed out)",
            status.actions_acknowledged, status.actions_pending, status.actions_in_flight, status.redeliveries
        ),
    ));
    let counts = setup.scheduler.counts();
    let count = |s: TaskState| counts.get(&s).copied().unwrap_or(0);
    let unfinished = count(TaskState::Scheduled) + count(TaskState::Running);
    checks.push((
        unfinished == 0 && count(TaskState::Failed) == 0,
        format!(
            "every task ended: {} succeeded, {} cancelled before running, {} failed, {} unfinished ({} transitions streamed)",
            count(TaskState::Succeeded),
            count(TaskState::Cancelled),
            count(TaskState::Failed),
            unfinished,
            stats.task_updates.load(Ordering::Relaxed),
        ),
    ));
    for (ok, line) in &checks {
        let _ = writeln!(summary, "  {} {line}", if *ok { "ok  " } else { "FAIL" });
    }
    let _ = writeln!(
        summary,
        "  (streams: {} policy updates received, {} subscriptions broken and resumed)",
        stats.policy_updates.load(Ordering::Relaxed),
        stats.stream_breaks.load(Ordering::Relaxed)
    );
    let passed = checks.iter().all(|(ok, _)| *ok);
    let _ = writeln!(
        summary,
        "\n{}",
        if passed {
            "PASS: resilience held: every idempotent call succeeded and nothing was applied twice."
        } else {
            "FAIL: see the checks above."
        }
    );
    write!(out, "{summary}")?;
    out.flush()?;

    // Tear down.
    drop(clients);
    stop(setup.governor_server.take()).await;
    stop(setup.coordinator_server.take()).await;
    for r in &mut setup.replicas {
        if let Some(stopping) = r.stopping.take() {
            let _ = stopping.await;
        }
        stop(r.running.take()).await;
    }
    metrics_task.abort();

    Ok(TourOutcome {
        passed,
        calls,
        failed,
        elapsed,
    })
}

#[allow(clippy::too_many_arguments)]
fn frame(
    elapsed: Duration,
    total: Duration,
    phase: &str,
    metrics_url: &str,
    stats: &Stats,
    replicas: &[Replica],
    channel: &Channel,
    clients: &Clients,
    events: &VecDeque<String>,
) -> String {
    const WIDTH: usize = 30;
    let done = ((elapsed.as_secs_f64() / total.as_secs_f64().max(0.001)) * WIDTH as f64) as usize;
    let mut f = String::new();
    let _ = writeln!(
        f,
        "tai mesh tour  [{}{}]  {:>5.1}s / {:.1}s",
        "#".repeat(done.min(WIDTH)),
        "-".repeat(WIDTH - done.min(WIDTH)),
        elapsed.as_secs_f64(),
        total.as_secs_f64()
    );
    let _ = writeln!(f, "now: {phase}");
    let _ = writeln!(f, "metrics: {metrics_url}\n");
    method_table(stats, &mut f);
    f.push('\n');
    replica_table(replicas, channel, &mut f);
    f.push('\n');
    breaker_line("Governor", &clients.governor, &mut f);
    breaker_line("Coordinator", &clients.coordinator, &mut f);
    breaker_line("Scheduler", &clients.scheduler, &mut f);
    f.push('\n');
    for e in events {
        let _ = writeln!(f, "  {e}");
    }
    f
}
