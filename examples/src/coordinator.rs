//! The Coordinator service: signals (counted and kept), and actions dispatched
//! to StreamActions subscribers as a work queue with at-least-once delivery.
//!
//! An action goes to one subscriber at a time and stays "in flight" until it is
//! acknowledged. If its subscriber's stream ends (the client hung up, crashed, or
//! the server is shutting down) or the subscription's `ack_timeout` passes, the
//! action goes back to the front of its priority in the queue and is delivered
//! again — to another subscriber if one has room — with `delivery_attempt`
//! counting up. A subscriber holds at most `max_in_flight` unacknowledged
//! actions, which is how a slow subscriber pushes back without losing anything.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::common::{
    self, BoxStream, Closing, DEDUP_CAPACITY, Deduplicated, Ledger, check_map, check_text,
    require_id,
};
use crate::proto::coordinator_server::{self, CoordinatorServer};
use crate::proto::{
    AcknowledgeActionRequest, Action, CoordinationStatus, GetStatusRequest, HealthCheckRequest,
    HealthStatus, Receipt, RequestActionRequest, Signal, StreamActionsRequest, SubmitSignalRequest,
};
use crate::storage::{DedupLog, MemoryStorage, Storage, StorageError};

/// The fully qualified service name.
pub const SERVICE_NAME: &str = "tai.v1.mesh.Coordinator";
/// Signals kept (the oldest are forgotten past this).
pub const DEFAULT_MAX_SIGNALS: usize = 10_000;
/// Actions kept: waiting, in flight, or acknowledged (acknowledged ones are
/// forgotten first when the store is full).
pub const DEFAULT_MAX_ACTIONS: usize = 10_000;
/// Distinct signal types counted by name; the rest count as `other`.
pub const MAX_SIGNAL_TYPES: usize = 256;
/// Largest signal payload.
pub const MAX_PAYLOAD: usize = 64 * 1024;
const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
const MAX_IN_FLIGHT: u32 = 1024;
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_ACK_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(600);
/// How often in-flight actions are checked for an expired ack timeout.
const REAP_EVERY: Duration = Duration::from_millis(50);

/// An action and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionRecord {
    /// The action as last delivered.
    pub action: Action,
    /// Queue order among equal priorities.
    seq: u64,
    /// Where it is.
    pub status: ActionStatus,
}

/// Where an action is.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionStatus {
    /// Waiting for a subscriber.
    Pending,
    /// Delivered to a subscription, waiting for an acknowledgement.
    InFlight,
    /// Acknowledged.
    Acknowledged {
        /// Who acknowledged it.
        subscriber_id: String,
        /// Whether it worked.
        success: bool,
    },
}

/// The Coordinator: a cheap handle; clones share one state.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
    closing: Closing,
}

struct Inner {
    /// Signals and actions; subscribers get actions by dispatch, not by
    /// published changes, so a mutation publishes nothing.
    ledger: Ledger<State, Infallible>,
    reaper_started: AtomicBool,
}

struct InFlight {
    subscription: u64,
    deadline: Instant,
}

struct Subscriber {
    id: String,
    types: Vec<String>,
    max_in_flight: usize,
    holding: usize,
    ack_timeout: Duration,
    tx: mpsc::Sender<Action>,
}

struct State {
    dedup: DedupLog,
    signals: Box<dyn Storage<Signal>>,
    signal_order: VecDeque<String>,
    signals_received: u64,
    signals_by_type: HashMap<String, u64>,
    actions: Box<dyn Storage<ActionRecord>>,
    /// Pending actions: priority (highest first), then request order.
    queue: BTreeSet<(Reverse<i32>, u64, String)>,
    in_flight: HashMap<String, InFlight>,
    acknowledged_order: VecDeque<String>,
    subscribers: BTreeMap<u64, Subscriber>,
    next_subscription: u64,
    next_seq: u64,
    /// Where the next dispatch starts among subscribers, to spread actions.
    rotate: u64,
    acknowledged: u64,
    redeliveries: u64,
}

impl Deduplicated for State {
    fn dedup_log(&mut self) -> &mut DedupLog {
        &mut self.dedup
    }
}

impl Default for Coordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("applied", &self.applied())
            .field("duplicates", &self.duplicates())
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A Coordinator with in-memory stores of the default sizes.
    pub fn new() -> Self {
        Self::with_storage(
            Box::new(MemoryStorage::new("signal", DEFAULT_MAX_SIGNALS)),
            Box::new(MemoryStorage::new("action", DEFAULT_MAX_ACTIONS)),
        )
    }

    /// A Coordinator keeping signals and actions in the given stores.
    pub fn with_storage(
        signals: Box<dyn Storage<Signal>>,
        actions: Box<dyn Storage<ActionRecord>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ledger: Ledger::new(
                    State {
                        dedup: DedupLog::new(DEDUP_CAPACITY),
                        signals,
                        signal_order: VecDeque::new(),
                        signals_received: 0,
                        signals_by_type: HashMap::new(),
                        actions,
                        queue: BTreeSet::new(),
                        in_flight: HashMap::new(),
                        acknowledged_order: VecDeque::new(),
                        subscribers: BTreeMap::new(),
                        next_subscription: 0,
                        next_seq: 0,
                        rotate: 0,
                        acknowledged: 0,
                        redeliveries: 0,
                    },
                    1,
                ),
                reaper_started: AtomicBool::new(false),
            }),
            closing: Closing::never(),
        }
    }

    /// This handle, with streams that end when `closing` fires.
    pub fn closing_on(mut self, closing: Closing) -> Self {
        self.closing = closing;
        self
    }

    /// The tonic service.
    pub fn into_server(self) -> CoordinatorServer<Self> {
        CoordinatorServer::new(self)
    }

    /// Mutations applied (duplicates not counted).
    pub fn applied(&self) -> u64 {
        self.inner.ledger.applied()
    }

    /// Mutations answered from the dedup log without being applied.
    pub fn duplicates(&self) -> u64 {
        self.inner.ledger.duplicates()
    }

    /// The counts GetStatus reports.
    pub fn status(&self) -> CoordinationStatus {
        let state = self.lock();
        let pending = state.queue.len() as u64;
        CoordinationStatus {
            signals_received: state.signals_received,
            signals_by_type: state.signals_by_type.clone(),
            actions_pending: pending,
            actions_in_flight: state.in_flight.len() as u64,
            actions_acknowledged: state.acknowledged,
            redeliveries: state.redeliveries,
            subscribers: u32::try_from(state.subscribers.len()).unwrap_or(u32::MAX),
            timestamp: Some(common::now()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }

    /// Starts the task that redelivers actions whose ack timeout passed; it ends
    /// when the last handle of this Coordinator is dropped.
    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let mut state = lock(&inner);
                let now = Instant::now();
                let expired: Vec<String> = state
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.deadline <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                if !expired.is_empty() {
                    for id in expired {
                        state.requeue(&id);
                    }
                    state.dispatch();
                }
            }
        });
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    inner.ledger.lock()
}

impl State {
    /// Hands pending actions to subscribers with room, spreading them round-robin.
    fn dispatch(&mut self) {
        if self.subscribers.is_empty() || self.queue.is_empty() {
            return;
        }
        let keys: Vec<u64> = self.subscribers.keys().copied().collect();
        let pending: Vec<(Reverse<i32>, u64, String)> = self.queue.iter().cloned().collect();
        for entry in pending {
            let Some(mut record) = self.actions.get(&entry.2) else {
                self.queue.remove(&entry);
                continue;
            };
            let start = self.rotate as usize;
            let chosen = (0..keys.len())
                .map(|i| keys[(start + i) % keys.len()])
                .find(|k| {
                    self.subscribers.get(k).is_some_and(|s| {
                        s.holding < s.max_in_flight
                            && (s.types.is_empty() || s.types.contains(&record.action.action_type))
                    })
                });
            let Some(key) = chosen else {
                if self
                    .subscribers
                    .values()
                    .all(|s| s.holding >= s.max_in_flight)
                {
                    return;
                }
                continue;
            };
            self.rotate = self.rotate.wrapping_add(1);
            record.action.delivery_attempt += 1;
            record.status = ActionStatus::InFlight;
            let subscriber = self.subscribers.get_mut(&key).expect("chosen from the map");
            // The channel holds max_in_flight messages and the subscriber at most
            // that many unacknowledged ones, so it is never full; it is closed
            // only if the stream is gone and its guard has yet to unsubscribe.
            if subscriber.tx.try_send(record.action.clone()).is_err() {
                self.unsubscribe(key);
                return self.dispatch();
            }
            subscriber.holding += 1;
            let deadline = Instant::now() + subscriber.ack_timeout;
            if record.action.delivery_attempt > 1 {
                self.redeliveries += 1;
            }
            self.queue.remove(&entry);
            self.in_flight.insert(
                entry.2.clone(),
                InFlight {
                    subscription: key,
                    deadline,
                },
            );
            // Replacing an existing key cannot fail for lack of room.
            let _ = self.actions.put(&entry.2, record);
        }
    }

    /// Puts an in-flight action back in the queue.
    fn requeue(&mut self, id: &str) {
        let Some(flight) = self.in_flight.remove(id) else {
            return;
        };
        if let Some(s) = self.subscribers.get_mut(&flight.subscription) {
            s.holding = s.holding.saturating_sub(1);
        }
        if let Some(mut record) = self.actions.get(id) {
            record.status = ActionStatus::Pending;
            self.queue
                .insert((Reverse(record.action.priority), record.seq, id.to_owned()));
            let _ = self.actions.put(id, record);
        }
    }

    /// Removes a subscription and requeues what it held.
    fn unsubscribe(&mut self, key: u64) {
        if self.subscribers.remove(&key).is_none() {
            return;
        }
        let held: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.subscription == key)
            .map(|(id, _)| id.clone())
            .collect();
        for id in held {
            self.requeue(&id);
        }
    }

    /// Makes room in a full action store by forgetting acknowledged actions.
    fn put_action(&mut self, id: &str, record: ActionRecord) -> Result<(), Status> {
        loop {
            match self.actions.put(id, record.clone()) {
                Ok(()) => return Ok(()),
                Err(StorageError::Full { capacity, .. }) => {
                    let Some(old) = self.acknowledged_order.pop_front() else {
                        return Err(Status::resource_exhausted(format!(
                            "the action queue is full: {capacity} actions are waiting for \
                             acknowledgement; acknowledge some before requesting more"
                        )));
                    };
                    self.actions.remove(&old);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A receipt of a Coordinator mutation; nothing it changes is versioned.
fn receipt(accepted: bool, message: String, resource: String) -> (Receipt, Option<Infallible>) {
    (common::receipt(accepted, message, resource, 0), None)
}

/// The stream of one StreamActions subscription: unsubscribes when dropped, so
/// whatever it held unacknowledged is delivered again.
struct Subscription {
    rx: mpsc::Receiver<Action>,
    key: u64,
    inner: Weak<Inner>,
}

impl Stream for Subscription {
    type Item = Result<Action, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|a| a.map(Ok))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut state = lock(&inner);
            state.unsubscribe(self.key);
            state.dispatch();
        }
    }
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for Coordinator {
    async fn submit_signal(
        &self,
        request: Request<SubmitSignalRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let receipt = self.inner.ledger.mutate(&request, |state| {
            let Some(mut signal) = request.signal.clone() else {
                return Err(Status::invalid_argument("signal is required"));
            };
            if signal.id.is_empty() {
                signal.id.clone_from(&request.request_id);
            }
            require_id("signal.id", &signal.id)?;
            require_id("signal.signal_type", &signal.signal_type)?;
            check_text("signal.source", &signal.source, 256)?;
            check_map("signal.metadata", &signal.metadata)?;
            if signal.payload.len() > MAX_PAYLOAD {
                return Err(Status::invalid_argument(format!(
                    "signal.payload is {} bytes; at most {MAX_PAYLOAD} are allowed",
                    signal.payload.len()
                )));
            }
            if state.signals.get(&signal.id).is_some() {
                return Err(Status::already_exists(format!(
                    "signal `{}` was already submitted (by another request_id)",
                    signal.id
                )));
            }
            if signal.timestamp.is_none() {
                signal.timestamp = Some(common::now());
            }
            // Signals are a log: when full, the oldest are forgotten.
            while state.signals.len() >= state.signals.capacity() {
                let Some(old) = state.signal_order.pop_front() else {
                    break;
                };
                state.signals.remove(&old);
            }
            let id = signal.id.clone();
            let kind = if state.signals_by_type.len() < MAX_SIGNAL_TYPES
                || state.signals_by_type.contains_key(&signal.signal_type)
            {
                signal.signal_type.clone()
            } else {
                "other".to_owned()
            };
            state.signals.put(&id, signal)?;
            state.signal_order.push_back(id.clone());
            state.signals_received += 1;
            *state.signals_by_type.entry(kind).or_default() += 1;
            Ok(receipt(
                true,
                format!("signal `{id}` recorded"),
                format!("signals/{id}"),
            ))
        })?;
        Ok(Response::new(receipt))
    }

    async fn request_action(
        &self,
        request: Request<RequestActionRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let receipt = self.inner.ledger.mutate(&request, |state| {
            let Some(mut action) = request.action.clone() else {
                return Err(Status::invalid_argument("action is required"));
            };
            if action.id.is_empty() {
                action.id.clone_from(&request.request_id);
            }
            require_id("action.id", &action.id)?;
            require_id("action.action_type", &action.action_type)?;
            check_text("action.target", &action.target, 256)?;
            check_text("action.signal_id", &action.signal_id, common::MAX_ID_LEN)?;
            check_map("action.parameters", &action.parameters)?;
            if state.actions.get(&action.id).is_some() {
                return Err(Status::already_exists(format!(
                    "action `{}` was already requested (by another request_id)",
                    action.id
                )));
            }
            action.requested_at = Some(common::now());
            action.delivery_attempt = 0;
            let id = action.id.clone();
            let seq = state.next_seq;
            state.next_seq += 1;
            let priority = action.priority;
            state.put_action(
                &id,
                ActionRecord {
                    action,
                    seq,
                    status: ActionStatus::Pending,
                },
            )?;
            state.queue.insert((Reverse(priority), seq, id.clone()));
            state.dispatch();
            Ok(receipt(
                true,
                format!("action `{id}` queued"),
                format!("actions/{id}"),
            ))
        })?;
        Ok(Response::new(receipt))
    }

    type StreamActionsStream = BoxStream<Action>;

    async fn stream_actions(
        &self,
        request: Request<StreamActionsRequest>,
    ) -> Result<Response<Self::StreamActionsStream>, Status> {
        let r = request.into_inner();
        require_id("subscriber_id", &r.subscriber_id)?;
        if r.action_types.len() > 64 {
            return Err(Status::invalid_argument(format!(
                "action_types has {} entries; at most 64 are allowed",
                r.action_types.len()
            )));
        }
        let max_in_flight = match r.max_in_flight {
            0 => DEFAULT_MAX_IN_FLIGHT,
            n if n > MAX_IN_FLIGHT => {
                return Err(Status::invalid_argument(format!(
                    "max_in_flight is {n}; at most {MAX_IN_FLIGHT} is allowed"
                )));
            }
            n => n,
        };
        let ack_timeout = match r.ack_timeout {
            None => DEFAULT_ACK_TIMEOUT,
            Some(d) => Duration::try_from(d)
                .ok()
                .filter(|d| (MIN_ACK_TIMEOUT..=MAX_ACK_TIMEOUT).contains(d))
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "ack_timeout must be between {MIN_ACK_TIMEOUT:?} and {MAX_ACK_TIMEOUT:?}"
                    ))
                })?,
        };
        self.start_reaper();
        let (tx, rx) = mpsc::channel(max_in_flight as usize);
        let key = {
            let mut state = self.lock();
            let key = state.next_subscription;
            state.next_subscription += 1;
            state.subscribers.insert(
                key,
                Subscriber {
                    id: r.subscriber_id,
                    types: r.action_types,
                    max_in_flight: max_in_flight as usize,
                    holding: 0,
                    ack_timeout,
                    tx,
                },
            );
            state.dispatch();
            key
        };
        let subscription = Subscription {
            rx,
            key,
            inner: Arc::downgrade(&self.inner),
        };
        Ok(Response::new(common::until_closing(
            subscription,
            self.closing.clone(),
        )))
    }

    async fn acknowledge_action(
        &self,
        request: Request<AcknowledgeActionRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let request = request.into_inner();
        let receipt = self.inner.ledger.mutate(&request, |state| {
            let id = require_id("action_id", &request.action_id)?;
            check_text("subscriber_id", &request.subscriber_id, common::MAX_ID_LEN)?;
            check_text("message", &request.message, 1024)?;
            let Some(mut record) = state.actions.get(id) else {
                return Err(Status::not_found(format!("no action `{id}`")));
            };
            let resource = format!("actions/{id}");
            if let ActionStatus::Acknowledged { subscriber_id, .. } = &record.status {
                let by = if subscriber_id.is_empty() {
                    String::new()
                } else {
                    format!(" by `{subscriber_id}`")
                };
                return Ok(receipt(
                    false,
                    format!("action `{id}` was already acknowledged{by}"),
                    resource,
                ));
            }
            if let Some(flight) = state.in_flight.remove(id)
                && let Some(s) = state.subscribers.get_mut(&flight.subscription)
            {
                s.holding = s.holding.saturating_sub(1);
            }
            state
                .queue
                .remove(&(Reverse(record.action.priority), record.seq, id.to_owned()));
            record.status = ActionStatus::Acknowledged {
                subscriber_id: request.subscriber_id.clone(),
                success: request.success,
            };
            state.actions.put(id, record)?;
            state.acknowledged_order.push_back(id.to_owned());
            state.acknowledged += 1;
            state.dispatch();
            let outcome = if request.success { "done" } else { "failed" };
            Ok(receipt(
                true,
                format!("action `{id}` acknowledged ({outcome})"),
                resource,
            ))
        })?;
        Ok(Response::new(receipt))
    }

    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<CoordinationStatus>, Status> {
        Ok(Response::new(self.status()))
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthStatus>, Status> {
        let status = self.status();
        let subscribers: Vec<String> = {
            let state = self.lock();
            state.subscribers.values().map(|s| s.id.clone()).collect()
        };
        let details = [
            (
                "actions_pending".to_owned(),
                status.actions_pending.to_string(),
            ),
            (
                "actions_in_flight".to_owned(),
                status.actions_in_flight.to_string(),
            ),
            ("subscribers".to_owned(), subscribers.join(",")),
            (
                "signals_received".to_owned(),
                status.signals_received.to_string(),
            ),
        ];
        Ok(Response::new(common::health_status(
            SERVICE_NAME,
            self.inner.ledger.started(),
            &self.closing,
            details.into(),
        )))
    }
}
