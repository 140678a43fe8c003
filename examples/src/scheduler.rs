//! The Scheduler service: tasks that run at their scheduled time, in this
//! process, by a [`TaskHandler`] you implement ([`DemoHandler`] ships).
//!
//! A task moves SCHEDULED → RUNNING → SUCCEEDED | FAILED, or SCHEDULED →
//! CANCELLED; every transition goes to StreamTaskUpdates subscribers. Due tasks
//! run highest priority first, at most [`SchedulerConfig::max_concurrent`] at
//! once. Times are kept on tokio's clock, so a test with paused time controls
//! when tasks run.
//!
//! Replicas: one [`Scheduler`] (one task store, one runner) can be served by
//! several servers at once — clone it into each — as replicas of a real service
//! share a database. That is how the `mesh` tour runs three replicas: stopping
//! one loses no task, and a retry that lands on another replica is still
//! deduplicated.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use futures_util::{FutureExt, stream};
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::common::{
    self, BoxStream, Closing, DEDUP_CAPACITY, Deduplicated, Ledger, check_map, check_text,
    require_id,
};
use crate::proto::scheduler_server::{self, SchedulerServer};
use crate::proto::{
    CancelTaskRequest, GetTaskStatusRequest, HealthCheckRequest, HealthStatus, Receipt,
    StreamTaskUpdatesRequest, SubmitTaskRequest, TaskState, TaskStatus, TaskUpdate,
};
use crate::storage::{DedupLog, MemoryStorage, Storage, StorageError};

/// The fully qualified service name.
pub const SERVICE_NAME: &str = "tai.v1.mesh.Scheduler";
/// Transitions a slow StreamTaskUpdates subscriber may fall behind before it is resynced.
const UPDATE_BUFFER: usize = 4096;

/// A task as its handler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// The task's id.
    pub id: String,
    /// What to do.
    pub task_type: String,
    /// How to do it.
    pub parameters: HashMap<String, String>,
    /// Among tasks due at once, higher first.
    pub priority: i32,
}

/// What runs tasks. Implement it for your own work; [`DemoHandler`] is an example.
pub trait TaskHandler: Send + Sync + 'static {
    /// Checks a task when it is submitted, so that a task this handler cannot run
    /// is refused with INVALID_ARGUMENT then, not failed later. Accepts all by default.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong with the task.
    fn check(&self, task_type: &str, parameters: &HashMap<String, String>) -> Result<(), String> {
        let _ = (task_type, parameters);
        Ok(())
    }

    /// Runs a task: `Ok(result)` ends it SUCCEEDED, `Err(error)` FAILED. A panic
    /// fails the task, not the server.
    fn run(&self, task: Task) -> impl Future<Output = Result<String, String>> + Send;
}

/// The handler the `mesh` program runs:
///
/// | task_type | parameters | does |
/// |---|---|---|
/// | `sleep` | `ms` (default 10, at most 10000) | waits that long |
/// | `sum` | `values`, comma-separated integers | returns their sum |
/// | `echo` | any | returns them, sorted, as `k=v` lines |
/// | `fail` | `message` | fails with the message |
#[derive(Clone, Copy, Debug, Default)]
pub struct DemoHandler;

impl DemoHandler {
    const TYPES: &'static str = "sleep, sum, echo and fail";

    fn sleep_ms(parameters: &HashMap<String, String>) -> Result<u64, String> {
        match parameters.get("ms") {
            None => Ok(10),
            Some(ms) => match ms.parse::<u64>() {
                Ok(ms) if ms <= 10_000 => Ok(ms),
                _ => Err(format!(
                    "parameter ms is `{ms}`; it must be a whole number of milliseconds up to 10000"
                )),
            },
        }
    }

    fn sum(parameters: &HashMap<String, String>) -> Result<i128, String> {
        let values = parameters
            .get("values")
            .ok_or("parameter values is missing: give comma-separated integers, e.g. 1,2,3")?;
        values
            .split(',')
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map(i128::from)
                    .map_err(|_| format!("`{}` in parameter values is not an integer", v.trim()))
            })
            .sum()
    }
}

impl TaskHandler for DemoHandler {
    fn check(&self, task_type: &str, parameters: &HashMap<String, String>) -> Result<(), String> {
        match task_type {
            "sleep" => Self::sleep_ms(parameters).map(drop),
            "sum" => Self::sum(parameters).map(drop),
            "echo" | "fail" => Ok(()),
            other => Err(format!(
                "unknown task type `{other}`; the demo handler runs {}",
                Self::TYPES
            )),
        }
    }

    async fn run(&self, task: Task) -> Result<String, String> {
        match task.task_type.as_str() {
            "sleep" => {
                let ms = Self::sleep_ms(&task.parameters)?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(format!("slept {ms}ms"))
            }
            "sum" => Self::sum(&task.parameters).map(|s| s.to_string()),
            "echo" => {
                let mut lines: Vec<String> = task
                    .parameters
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                lines.sort();
                Ok(lines.join("\n"))
            }
            "fail" => Err(task
                .parameters
                .get("message")
                .cloned()
                .unwrap_or_else(|| "failed on purpose".to_owned())),
            other => Err(format!("unknown task type `{other}`")),
        }
    }
}

/// Sizes of a [`Scheduler`].
#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Tasks kept; ended tasks are forgotten first when the store is full.
    pub max_tasks: usize,
    /// Tasks run at once.
    pub max_concurrent: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_tasks: 10_000,
            max_concurrent: 8,
        }
    }
}

/// The Scheduler: a cheap handle; clones share one task store and runner.
pub struct Scheduler<H: TaskHandler = DemoHandler> {
    inner: Arc<Inner<H>>,
    closing: Closing,
}

impl<H: TaskHandler> Clone for Scheduler<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            closing: self.closing.clone(),
        }
    }
}

impl<H: TaskHandler> std::fmt::Debug for Scheduler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("applied", &self.applied())
            .field("duplicates", &self.duplicates())
            .finish_non_exhaustive()
    }
}

struct Inner<H> {
    /// The tasks; every transition is published, by a mutation or by the runner.
    ledger: Ledger<State, TaskUpdate>,
    handler: Arc<H>,
    /// Wakes the runner: a task was added, or the Scheduler is being dropped.
    wake: Arc<Notify>,
    permits: Arc<Semaphore>,
    runner_started: AtomicBool,
}

impl<H> Drop for Inner<H> {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

struct State {
    dedup: DedupLog,
    tasks: Box<dyn Storage<TaskStatus>>,
    /// Scheduled tasks by due time, then priority (highest first), then order.
    due: BTreeSet<(Instant, Reverse<i32>, u64, String)>,
    /// Each scheduled task's key in `due`, to cancel it.
    due_keys: HashMap<String, (Instant, Reverse<i32>, u64, String)>,
    ended: VecDeque<String>,
    next_seq: u64,
}

impl Deduplicated for State {
    fn dedup_log(&mut self) -> &mut DedupLog {
        &mut self.dedup
    }
}

impl Default for Scheduler<DemoHandler> {
    fn default() -> Self {
        Self::new(DemoHandler)
    }
}

impl<H: TaskHandler> Scheduler<H> {
    /// A Scheduler running tasks with `handler`, with the default sizes.
    pub fn new(handler: H) -> Self {
        Self::with_config(handler, SchedulerConfig::default())
    }

    /// A Scheduler with the given sizes and an in-memory task store.
    pub fn with_config(handler: H, config: SchedulerConfig) -> Self {
        let storage = Box::new(MemoryStorage::new("task", config.max_tasks));
        Self::with_storage(handler, config, storage)
    }

    /// A Scheduler keeping its tasks in `storage`.
    pub fn with_storage(
        handler: H,
        config: SchedulerConfig,
        storage: Box<dyn Storage<TaskStatus>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ledger: Ledger::new(
                    State {
                        dedup: DedupLog::new(DEDUP_CAPACITY),
                        tasks: storage,
                        due: BTreeSet::new(),
                        due_keys: HashMap::new(),
                        ended: VecDeque::new(),
                        next_seq: 0,
                    },
                    UPDATE_BUFFER,
                ),
                handler: Arc::new(handler),
                wake: Arc::new(Notify::new()),
                permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
                runner_started: AtomicBool::new(false),
            }),
            closing: Closing::never(),
        }
    }

    /// This handle, with streams that end when `closing` fires (one replica's
    /// server shutting down ends that replica's streams only).
    pub fn closing_on(mut self, closing: Closing) -> Self {
        self.closing = closing;
        self
    }

    /// The tonic service.
    pub fn into_server(self) -> SchedulerServer<Self> {
        SchedulerServer::new(self)
    }

    /// Mutations applied (duplicates not counted).
    pub fn applied(&self) -> u64 {
        self.inner.ledger.applied()
    }

    /// Mutations answered from the dedup log without being applied.
    pub fn duplicates(&self) -> u64 {
        self.inner.ledger.duplicates()
    }

    /// How many tasks are in each state.
    pub fn counts(&self) -> HashMap<TaskState, usize> {
        let state = self.lock();
        let mut counts = HashMap::new();
        state.tasks.for_each(&mut |_, t| {
            *counts
                .entry(TaskState::try_from(t.state).unwrap_or(TaskState::Unspecified))
                .or_default() += 1;
        });
        counts
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }

    /// Starts the runner (once): it sleeps until the next task is due, runs it on
    /// a permit, and ends when the last handle of this Scheduler is dropped.
    fn start_runner(&self) {
        if self.inner.runner_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let wake = Arc::clone(&self.inner.wake);
        let permits = Arc::clone(&self.inner.permits);
        tokio::spawn(run_due_tasks(weak, wake, permits));
    }
}

fn lock<H>(inner: &Inner<H>) -> MutexGuard<'_, State> {
    inner.ledger.lock()
}

fn update(task: &TaskStatus, previous: TaskState, message: String) -> TaskUpdate {
    TaskUpdate {
        task_id: task.task_id.clone(),
        state: task.state,
        previous_state: previous as i32,
        message,
        timestamp: Some(common::now()),
    }
}

async fn run_due_tasks<H: TaskHandler>(
    weak: Weak<Inner<H>>,
    wake: Arc<Notify>,
    permits: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        // Register for a wake-up before reading the state, so that a task added
        // in between is not missed.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let Some(inner) = weak.upgrade() else { return };
            let mut state = lock(&inner);
            let now = Instant::now();
            // Of the tasks that are due, the highest priority first, then the oldest.
            let due = state
                .due
                .iter()
                .take_while(|key| key.0 <= now)
                .min_by_key(|key| (key.1, key.2))
                .cloned();
            match due {
                Some(key) => {
                    state.due.remove(&key);
                    state.due_keys.remove(&key.3);
                    start(&inner, &mut state, &key.3, permit);
                    continue;
                }
                None => state.due.first().map(|key| key.0),
            }
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = &mut notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Marks a task RUNNING and runs it on its own tokio task.
fn start<H: TaskHandler>(
    inner: &Arc<Inner<H>>,
    state: &mut State,
    id: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let Some(mut status) = state.tasks.get(id) else {
        return;
    };
    status.state = TaskState::Running as i32;
    status.started_at = Some(common::now());
    let _ = state.tasks.put(id, status.clone());
    inner
        .ledger
        .publish(update(&status, TaskState::Scheduled, "started".to_owned()));
    let task = Task {
        id: id.to_owned(),
        task_type: status.task_type.clone(),
        parameters: status.parameters.clone(),
        priority: status.priority,
    };
    let handler = Arc::clone(&inner.handler);
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let outcome = std::panic::AssertUnwindSafe(handler.run(task))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err("the task handler panicked".to_owned()));
        drop(permit);
        let Some(inner) = weak.upgrade() else { return };
        let mut state = lock(&inner);
        let Some(mut status) = state.tasks.get(&status.task_id) else {
            return;
        };
        let message = match outcome {
            Ok(result) => {
                status.state = TaskState::Succeeded as i32;
                status.result.clone_from(&result);
                result
            }
            Err(error) => {
                status.state = TaskState::Failed as i32;
                status.error.clone_from(&error);
                error
            }
        };
        status.finished_at = Some(common::now());
        let id = status.task_id.clone();
        let _ = state.tasks.put(&id, status.clone());
        state.ended.push_back(id);
        inner
            .ledger
            .publish(update(&status, TaskState::Running, message));
    });
}

fn receipt(accepted: bool, message: String, task_id: &str) -> Receipt {
    common::receipt(accepted, message, format!("tasks/{task_id}"), 0)
}

fn state_name(state: i32) -> &'static str {
    match TaskState::try_from(state) {
        Ok(TaskState::Scheduled) => "scheduled",
        Ok(TaskState::Running) => "running",
        Ok(TaskState::Succeeded) => "succeeded",
        Ok(TaskState::Failed) => "failed",
        Ok(TaskState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

#[tonic::async_trait]
impl<H: TaskHandler> scheduler_server::Scheduler for Scheduler<H> {
    async fn submit_task(
        &self,
        request: Request<SubmitTaskRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let handler = Arc::clone(&self.inner.handler);
        let receipt = self.inner.ledger.mutate(&request, |state| {
            let task_id = if request.task_id.is_empty() {
                request.request_id.as_str()
            } else {
                request.task_id.as_str()
            };
            require_id("task_id", task_id)?;
            require_id("task_type", &request.task_type)?;
            check_map("parameters", &request.parameters)?;
            handler
                .check(&request.task_type, &request.parameters)
                .map_err(Status::invalid_argument)?;
            let delay = match request.scheduled_time {
                None => Duration::ZERO,
                Some(t) => SystemTime::try_from(t)
                    .map_err(|e| {
                        Status::invalid_argument(format!("scheduled_time is invalid: {e}"))
                    })?
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            };
            if state.tasks.get(task_id).is_some() {
                return Err(Status::already_exists(format!(
                    "task `{task_id}` already exists (submitted by another request_id)"
                )));
            }
            let now = common::now();
            let status = TaskStatus {
                task_id: task_id.to_owned(),
                task_type: request.task_type.clone(),
                state: TaskState::Scheduled as i32,
                parameters: request.parameters.clone(),
                priority: request.priority,
                submitted_at: Some(now),
                scheduled_time: Some(request.scheduled_time.unwrap_or(now)),
                ..TaskStatus::default()
            };
            loop {
                match state.tasks.put(task_id, status.clone()) {
                    Ok(()) => break,
                    Err(StorageError::Full { capacity, .. }) => {
                        let Some(old) = state.ended.pop_front() else {
                            return Err(Status::resource_exhausted(format!(
                                "the task store is full: {capacity} tasks are scheduled or running"
                            )));
                        };
                        state.tasks.remove(&old);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let key = (
                Instant::now() + delay,
                Reverse(request.priority),
                state.next_seq,
                task_id.to_owned(),
            );
            state.next_seq += 1;
            state.due.insert(key.clone());
            state.due_keys.insert(task_id.to_owned(), key);
            let when = if delay.is_zero() {
                "now".to_owned()
            } else {
                format!("in {:.1?}", delay)
            };
            Ok((
                receipt(
                    true,
                    format!("task `{task_id}` scheduled to run {when}"),
                    task_id,
                ),
                Some(update(
                    &status,
                    TaskState::Unspecified,
                    "scheduled".to_owned(),
                )),
            ))
        })?;
        if receipt.accepted && !receipt.duplicate {
            self.start_runner();
            self.inner.wake.notify_one();
        }
        Ok(Response::new(receipt))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let receipt = self.inner.ledger.mutate(&request, |state| {
            let id = require_id("task_id", &request.task_id)?;
            check_text("reason", &request.reason, 1024)?;
            let Some(mut status) = state.tasks.get(id) else {
                return Err(Status::not_found(format!("no task `{id}`")));
            };
            if status.state != TaskState::Scheduled as i32 {
                let message = format!(
                    "task `{id}` is {}; only a scheduled task can be cancelled",
                    state_name(status.state)
                );
                return Ok((receipt(false, message, id), None));
            }
            if let Some(key) = state.due_keys.remove(id) {
                state.due.remove(&key);
            }
            let reason = if request.reason.is_empty() {
                "cancelled".to_owned()
            } else {
                request.reason.clone()
            };
            status.state = TaskState::Cancelled as i32;
            status.finished_at = Some(common::now());
            status.error.clone_from(&reason);
            state.tasks.put(id, status.clone())?;
            state.ended.push_back(id.to_owned());
            Ok((
                receipt(true, format!("task `{id}` cancelled"), id),
                Some(update(&status, TaskState::Scheduled, reason)),
            ))
        })?;
        Ok(Response::new(receipt))
    }

    async fn get_task_status(
        &self,
        request: Request<GetTaskStatusRequest>,
    ) -> Result<Response<TaskStatus>, Status> {
        let request = request.into_inner();
        let id = require_id("task_id", &request.task_id)?;
        let status = self
            .lock()
            .tasks
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no task `{id}`")))?;
        Ok(Response::new(status))
    }

    type StreamTaskUpdatesStream = BoxStream<TaskUpdate>;

    async fn stream_task_updates(
        &self,
        request: Request<StreamTaskUpdatesRequest>,
    ) -> Result<Response<Self::StreamTaskUpdatesStream>, Status> {
        let r = request.into_inner();
        if r.task_ids.len() > 1000 {
            return Err(Status::invalid_argument(format!(
                "task_ids has {} entries; at most 1000 are allowed",
                r.task_ids.len()
            )));
        }
        for id in &r.task_ids {
            require_id("task_ids[]", id)?;
        }
        let ids: Arc<std::collections::HashSet<String>> =
            Arc::new(r.task_ids.into_iter().collect());
        let matches = {
            let ids = Arc::clone(&ids);
            move |id: &str| ids.is_empty() || ids.contains(id)
        };
        let current = {
            let matches = matches.clone();
            let scheduler = self.clone();
            move || {
                let state = scheduler.lock();
                let mut out = Vec::new();
                state.tasks.for_each(&mut |id, t| {
                    if matches(id) {
                        out.push(TaskUpdate {
                            task_id: t.task_id.clone(),
                            state: t.state,
                            previous_state: TaskState::Unspecified as i32,
                            message: "current state".to_owned(),
                            timestamp: Some(common::now()),
                        });
                    }
                });
                out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
                out
            }
        };
        // Subscribe before the snapshot: a transition in between is sent twice
        // (as current state and as an update), never not at all.
        let rx = self.inner.ledger.subscribe();
        let first = if r.include_current {
            current()
        } else {
            Vec::new()
        };
        let updates = stream::unfold((VecDeque::from(first), rx), move |(mut queue, mut rx)| {
            let matches = matches.clone();
            let current = current.clone();
            async move {
                loop {
                    if let Some(u) = queue.pop_front() {
                        return Some((Ok(u), (queue, rx)));
                    }
                    match rx.recv().await {
                        Ok(u) if matches(&u.task_id) => return Some((Ok(u), (queue, rx))),
                        Ok(_) => {}
                        // Fell behind: send the current state of every matching
                        // task, which is what the missed transitions led to.
                        Err(broadcast::error::RecvError::Lagged(_)) => queue.extend(current()),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Response::new(common::until_closing(
            updates,
            self.closing.clone(),
        )))
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthStatus>, Status> {
        let counts = self.counts();
        let mut details: HashMap<String, String> = counts
            .into_iter()
            .map(|(s, n)| (state_name(s as i32).to_owned(), n.to_string()))
            .collect();
        details.insert(
            "running_slots_free".to_owned(),
            self.inner.permits.available_permits().to_string(),
        );
        Ok(Response::new(common::health_status(
            SERVICE_NAME,
            self.inner.ledger.started(),
            &self.closing,
            details,
        )))
    }
}
