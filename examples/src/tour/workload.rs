//! The workload: what the tour's clients do while the faults come and go.
//!
//! Two Governor workers and two Coordinator workers make a mutation and some
//! reads every [`PACE`]; three Scheduler workers submit, query and cancel tasks;
//! a policy watcher, a task watcher and two action subscribers keep streams
//! open across the faults. Every mutation gets a new request_id, so each
//! success is one change the servers must have applied exactly once: the
//! workload counts them in [`Expected`], and the verdict compares.
//!
//! Choices come from a seeded generator, so a seed replays the workload.
//! Workers stop on the schedule's `stop` signal; the streams, which must see
//! the tasks and actions the workers started through to their end, stop later,
//! on `done` ([`Workload::finish`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tai_runtime::{Channel, ClientStats, Resilient, Response, ResponseStream, Status};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::servers::Mesh;
use super::stats::{Stats, recorded};
use super::{TourError, TourOptions};
use crate::client::{self, ReplicaPolicy};
use crate::proto::coordinator_client::CoordinatorClient;
use crate::proto::governor_client::GovernorClient;
use crate::proto::scheduler_client::SchedulerClient;
use crate::proto::{
    AcknowledgeActionRequest, Action, CancelTaskRequest, EnforcePolicyRequest, GetPoliciesRequest,
    GetStatusRequest, GetTaskStatusRequest, HealthCheckRequest, Policy, ProposePolicyRequest,
    RequestActionRequest, RevokePolicyRequest, Signal, StreamActionsRequest, StreamPoliciesRequest,
    StreamTaskUpdatesRequest, SubmitSignalRequest, SubmitTaskRequest, TaskState,
};

/// How often a worker calls.
const PACE: Duration = Duration::from_millis(15);
/// How long a stream consumer waits before subscribing again after a failure.
const RESUBSCRIBE: Duration = Duration::from_millis(100);
/// How long the workload waits, once stopped, for tasks to end and actions to
/// be acknowledged.
const SETTLE: Duration = Duration::from_secs(5);

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

/// The generated clients, policies compiled in.
pub(super) struct Clients {
    pub(super) governor: GovernorClient<Channel>,
    pub(super) coordinator: CoordinatorClient<Channel>,
    pub(super) scheduler: SchedulerClient<Channel>,
    /// The Scheduler's replicated channel, whose per-replica state the view shows.
    pub(super) scheduler_channel: Channel,
}

impl Clients {
    /// Connects to `mesh`, with the replicas' ejection and reconnect times
    /// scaled by `factor` (not below a quarter, so fast mode stays realistic),
    /// and waits (bounded) for the Scheduler replicas to be ready.
    pub(super) async fn connect(
        mesh: &Mesh,
        options: &TourOptions,
        factor: f64,
        auth: Option<&super::auth::TourAuth>,
    ) -> Result<Self, TourError> {
        // Each client's bearer token, when the servers require one.
        let token = |service| -> Result<_, TourError> {
            let token = auth.map(|a| a.client_token(service)).transpose()?;
            Ok(client::bearer(token))
        };
        let config = || options.config.clone();
        let tls = mesh.tls.as_ref().map(|t| &t.client);
        let scheduler_channel = client::scheduler_channel(
            &mesh.replica_addrs(),
            config(),
            ReplicaPolicy::default().scaled(factor.max(0.25)),
            tls,
        )?;
        scheduler_channel.reseed(options.seed);
        let governor = client::channel(&mesh.governor_addr.to_string(), config(), tls)?;
        let coordinator = client::channel(&mesh.coordinator_addr.to_string(), config(), tls)?;
        let clients = Clients {
            governor: GovernorClient::with_interceptor(governor, token("governor")?),
            coordinator: CoordinatorClient::with_interceptor(coordinator, token("coordinator")?),
            scheduler: SchedulerClient::with_interceptor(
                scheduler_channel.clone(),
                token("scheduler")?,
            ),
            scheduler_channel,
        };
        clients.governor.client_state().seed_jitter(options.seed);
        let coordinator = clients.coordinator.client_state();
        coordinator.seed_jitter(options.seed + 1);
        let scheduler = clients.scheduler.client_state();
        scheduler.seed_jitter(options.seed + 2);
        clients
            .scheduler_channel
            .ready(Duration::from_secs(5))
            .await;
        Ok(clients)
    }
}

impl Clients {
    /// The clients' own statistics (`Resilient::stats`): Governor,
    /// Coordinator, Scheduler.
    pub(super) fn stats(&self) -> [ClientStats; 3] {
        [
            self.governor.stats(),
            self.coordinator.stats(),
            self.scheduler.stats(),
        ]
    }

    /// Calls, failed calls and retries over every method, from
    /// [`stats`](Self::stats).
    pub(super) fn totals(&self) -> (u64, u64, u64) {
        self.stats()
            .iter()
            .flat_map(|s| &s.methods)
            .fold((0, 0, 0), |(c, f, r), m| {
                (c + m.calls, f + (m.calls - m.ok), r + m.retries)
            })
    }
}

/// Mutations the workload saw succeed, to compare with what the servers applied.
#[derive(Default)]
pub(super) struct Expected {
    pub(super) governor_mutations: AtomicU64,
    pub(super) coordinator_mutations: AtomicU64,
    pub(super) scheduler_mutations: AtomicU64,
    pub(super) actions_requested: AtomicU64,
}

/// Which of the [`Expected`] counts a mutation adds to.
type Counter = fn(&Expected) -> &AtomicU64;

/// Adds one to `counter`.
fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Sleeps `d`; `false` if `stop` came first (or had come).
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*stop.borrow()
}

/// What every worker and stream consumer shares.
#[derive(Clone)]
struct Context {
    stats: Arc<Stats>,
    expected: Arc<Expected>,
    /// Workers stop on it, stream consumers on `done`.
    stop: watch::Receiver<bool>,
}

impl Context {
    /// Makes a recorded call; its response message.
    async fn call<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        recorded(&self.stats, method, call)
            .await
            .map(Response::into_inner)
    }

    /// Makes a recorded mutation; a success counts once in `counter`.
    async fn mutate<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
        counter: Counter,
    ) -> Option<T> {
        let result = self.call(method, call).await.ok();
        if result.is_some() {
            count(counter(&self.expected));
        }
        result
    }

    /// Waits one [`PACE`]; `false` if the workload stopped.
    async fn pace(&mut self) -> bool {
        pause(&mut self.stop, PACE).await
    }
}

/// A subscription the workload keeps open until `stop`: opened with `open`,
/// opened again after [`RESUBSCRIBE`] when opening fails, and after `rest` when
/// the stream ended. A stream that ends on its own counts as broken.
struct Subscription<O, T> {
    cx: Context,
    method: &'static str,
    rest: Duration,
    open: O,
    stream: Option<ResponseStream<T>>,
}

impl<O, F, T> Subscription<O, T>
where
    O: FnMut() -> F,
    F: Future<Output = Result<Response<ResponseStream<T>>, Status>>,
{
    fn new(cx: Context, method: &'static str, rest: Duration, open: O) -> Self {
        Self {
            cx,
            method,
            rest,
            open,
            stream: None,
        }
    }

    /// The next message, subscribing (again) as needed; `None` once stopped.
    async fn next(&mut self) -> Option<T> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None if *self.cx.stop.borrow() => return None,
                None => match self.cx.call(self.method, (self.open)()).await {
                    Ok(stream) => self.stream.insert(stream),
                    Err(_) => {
                        if !pause(&mut self.cx.stop, RESUBSCRIBE).await {
                            return None;
                        }
                        continue;
                    }
                },
            };
            let message = tokio::select! {
                m = stream.message() => m,
                _ = self.cx.stop.wait_for(|s| *s) => return None,
            };
            if let Ok(Some(message)) = message {
                return Some(message);
            }
            // A replica shutting down ends its streams: subscribe again.
            count(&self.cx.stats.stream_breaks);
            if !self.hang_up().await {
                return None;
            }
        }
    }

    /// Drops the stream, to subscribe again after `rest`; `false` if stopped.
    async fn hang_up(&mut self) -> bool {
        self.stream = None;
        self.rest.is_zero() || pause(&mut self.cx.stop, self.rest).await
    }
}

/// The running workload, and the signals that drive it.
pub(super) struct Workload {
    pub(super) expected: Arc<Expected>,
    stop: watch::Sender<bool>,
    done: watch::Sender<bool>,
    crash: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    streams: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts the workers and the stream consumers.
    pub(super) fn start(clients: &Clients, stats: &Arc<Stats>, seed: u64) -> Self {
        let expected = Arc::new(Expected::default());
        let (stop, stop_rx) = watch::channel(false);
        let (done, done_rx) = watch::channel(false);
        let (crash, crash_rx) = watch::channel(false);
        let worker = Context {
            stats: Arc::clone(stats),
            expected: Arc::clone(&expected),
            stop: stop_rx,
        };
        let stream = Context {
            stop: done_rx,
            ..worker.clone()
        };
        let mut workers = Vec::new();
        for k in 0..2 {
            workers.push(tokio::spawn(governor_worker(
                k,
                clients.governor.clone(),
                worker.clone(),
            )));
            workers.push(tokio::spawn(coordinator_worker(
                k,
                clients.coordinator.clone(),
                worker.clone(),
            )));
        }
        for k in 0..3 {
            let c = clients.scheduler.clone();
            workers.push(tokio::spawn(scheduler_worker(k, c, seed, worker.clone())));
        }
        let streams = vec![
            tokio::spawn(policy_watcher(clients.governor.clone(), stream.clone())),
            tokio::spawn(task_watcher(clients.scheduler.clone(), stream.clone())),
            tokio::spawn(action_subscriber(
                "worker-a",
                clients.coordinator.clone(),
                stream.clone(),
                crash_rx,
            )),
            tokio::spawn(action_subscriber(
                "worker-b",
                clients.coordinator.clone(),
                stream,
                watch::channel(false).1,
            )),
        ];
        Self {
            expected,
            stop,
            done,
            crash,
            workers,
            streams,
        }
    }

    /// Makes subscriber worker-a vanish holding unacknowledged actions.
    pub(super) fn crash_subscriber(&self) {
        let _ = self.crash.send(true);
    }

    /// Stops the workers (the streams go on).
    pub(super) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the workers, then (bounded) for their tasks to end and their
    /// actions to be acknowledged, then closes the streams.
    pub(super) async fn finish(&mut self, mesh: &Mesh) {
        for w in self.workers.drain(..) {
            let _ = w.await;
        }
        let settle_until = Instant::now() + SETTLE;
        loop {
            let counts = mesh.scheduler.counts();
            let unfinished = counts.get(&TaskState::Scheduled).copied().unwrap_or(0)
                + counts.get(&TaskState::Running).copied().unwrap_or(0);
            let status = mesh.coordinator.status();
            if (unfinished == 0 && status.actions_pending == 0 && status.actions_in_flight == 0)
                || Instant::now() >= settle_until
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.done.send(true);
        for s in self.streams.drain(..) {
            let _ = s.await;
        }
    }
}

async fn governor_worker(k: u64, c: GovernorClient<Channel>, mut cx: Context) {
    const TYPES: [&str; 3] = ["security", "performance", "compliance"];
    let mutations: Counter = |e| &e.governor_mutations;
    let mut n = 0u64;
    while !*cx.stop.borrow() {
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
        let proposed = c.propose_policy(proposal);
        if let Some(receipt) = cx
            .mutate("Governor/ProposePolicy", proposed, mutations)
            .await
        {
            if n.is_multiple_of(3) {
                let enforce = EnforcePolicyRequest {
                    request_id: format!("gov-{k}-{n}-enforce"),
                    policy_id: id.clone(),
                    version: receipt.version,
                };
                let call = c.enforce_policy(enforce);
                cx.mutate("Governor/EnforcePolicy", call, mutations).await;
            }
            if n % 7 == 6 {
                let revoke = RevokePolicyRequest {
                    request_id: format!("gov-{k}-{n}-revoke"),
                    policy_id: id,
                    version: receipt.version,
                    reason: "superseded".to_owned(),
                };
                let call = c.revoke_policy(revoke);
                cx.mutate("Governor/RevokePolicy", call, mutations).await;
            }
        }
        if n.is_multiple_of(5) {
            let query = GetPoliciesRequest {
                policy_type: TYPES[(n % 3) as usize].to_owned(),
                ..GetPoliciesRequest::default()
            };
            let _ = cx.call("Governor/GetPolicies", c.get_policies(query)).await;
        }
        if n.is_multiple_of(50) {
            let health = c.health_check(HealthCheckRequest {});
            let _ = cx.call("Governor/HealthCheck", health).await;
        }
        n += 1;
        if !cx.pace().await {
            break;
        }
    }
}

async fn coordinator_worker(k: u64, c: CoordinatorClient<Channel>, mut cx: Context) {
    const SIGNALS: [&str; 3] = ["deployment", "scaling", "alert"];
    const ACTIONS: [&str; 3] = ["restart", "scale", "notify"];
    let mutations: Counter = |e| &e.coordinator_mutations;
    let mut n = 0u64;
    while !*cx.stop.borrow() {
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
        let submitted = c.submit_signal(signal);
        if cx
            .mutate("Coordinator/SubmitSignal", submitted, mutations)
            .await
            .is_some()
        {
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
            let requested = c.request_action(action);
            if cx
                .mutate("Coordinator/RequestAction", requested, mutations)
                .await
                .is_some()
            {
                count(&cx.expected.actions_requested);
            }
        }
        if n.is_multiple_of(10) {
            let status = c.get_status(GetStatusRequest {});
            let _ = cx.call("Coordinator/GetStatus", status).await;
        }
        if n.is_multiple_of(50) {
            let health = c.health_check(HealthCheckRequest {});
            let _ = cx.call("Coordinator/HealthCheck", health).await;
        }
        n += 1;
        if !cx.pace().await {
            break;
        }
    }
}

async fn scheduler_worker(k: u64, c: SchedulerClient<Channel>, seed: u64, mut cx: Context) {
    let mutations: Counter = |e| &e.scheduler_mutations;
    let mut rng = Rng::new(seed + k);
    let mut n = 0u64;
    let mut previous: Option<String> = None;
    while !*cx.stop.borrow() {
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
        let submitted = c.submit_task(submit);
        cx.mutate("Scheduler/SubmitTask", submitted, mutations)
            .await;
        if let Some(id) = previous.replace(task_id) {
            let status = c.get_task_status(GetTaskStatusRequest { task_id: id });
            let _ = cx.call("Scheduler/GetTaskStatus", status).await;
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
            let submitted = c.submit_task(submit);
            if cx
                .mutate("Scheduler/SubmitTask", submitted, mutations)
                .await
                .is_some()
            {
                let cancel = CancelTaskRequest {
                    request_id: format!("{later}-cancel"),
                    task_id: later,
                    reason: "not needed after all".to_owned(),
                };
                let cancelled = c.cancel_task(cancel);
                cx.mutate("Scheduler/CancelTask", cancelled, mutations)
                    .await;
            }
        }
        if n.is_multiple_of(50) {
            let health = c.health_check(HealthCheckRequest {});
            let _ = cx.call("Scheduler/HealthCheck", health).await;
        }
        n += 1;
        if !cx.pace().await {
            break;
        }
    }
}

/// Counts the policy changes streamed to it, resuming after every break.
async fn policy_watcher(c: GovernorClient<Channel>, cx: Context) {
    let stats = Arc::clone(&cx.stats);
    let open = || {
        c.stream_policies(StreamPoliciesRequest {
            include_existing: true,
            ..StreamPoliciesRequest::default()
        })
    };
    let mut policies = Subscription::new(cx, "Governor/StreamPolicies", Duration::ZERO, open);
    while policies.next().await.is_some() {
        count(&stats.policy_updates);
    }
}

/// Counts the task transitions streamed to it, resuming after every break.
async fn task_watcher(c: SchedulerClient<Channel>, cx: Context) {
    let stats = Arc::clone(&cx.stats);
    let open = || c.stream_task_updates(StreamTaskUpdatesRequest::default());
    let mut updates = Subscription::new(cx, "Scheduler/StreamTaskUpdates", Duration::ZERO, open);
    while updates.next().await.is_some() {
        count(&stats.task_updates);
    }
}

/// Acknowledges every action it gets. On `crash`, it stops acknowledging,
/// takes a few more actions and drops its stream, then subscribes again.
async fn action_subscriber(
    name: &'static str,
    c: CoordinatorClient<Channel>,
    cx: Context,
    mut crash: watch::Receiver<bool>,
) {
    let acks = cx.clone();
    // Actions held unacknowledged on the current subscription, after `crash`.
    let held = AtomicU64::new(0);
    let open = || {
        held.store(0, Ordering::Relaxed);
        c.stream_actions(StreamActionsRequest {
            subscriber_id: name.to_owned(),
            max_in_flight: 8,
            ack_timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..StreamActionsRequest::default()
        })
    };
    let mut actions = Subscription::new(cx, "Coordinator/StreamActions", RESUBSCRIBE, open);
    let mut crashed = false;
    while let Some(action) = actions.next().await {
        if action.delivery_attempt > 1 {
            count(&acks.stats.redelivered);
        }
        if !crashed && *crash.borrow_and_update() {
            // Hold this one and the next two, unacknowledged, then vanish.
            if held.fetch_add(1, Ordering::Relaxed) + 1 >= 3 {
                crashed = true;
                if !actions.hang_up().await {
                    return;
                }
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
        let acked = c.acknowledge_action(ack);
        acks.mutate("Coordinator/AcknowledgeAction", acked, |e| {
            &e.coordinator_mutations
        })
        .await;
    }
}
