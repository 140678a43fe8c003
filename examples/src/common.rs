//! What the three services share: the `Ledger` that applies every mutation at
//! most once per request_id, input checks with messages that say what to fix,
//! receipts, health answers, timestamps, and the signal that ends open streams
//! when a server shuts down.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use tokio::sync::{broadcast, watch};
use tonic::Status;

use crate::proto::{HealthStatus, Receipt, ServingStatus};
use crate::storage::{DedupLog, Seen, fingerprint};

/// Longest id (request_id, policy id, task id, ...), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most entries of a map field (policy rules, task parameters, ...).
pub const MAX_MAP_ENTRIES: usize = 64;
/// Longest map key, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Longest map value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// How many request_ids a service remembers for deduplication.
pub const DEDUP_CAPACITY: usize = 100_000;

/// The version of the server program, reported by every HealthCheck.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A required id: non-empty, at most [`MAX_ID_LEN`] bytes, no control characters.
pub(crate) fn require_id<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} is empty; it is required"
        )));
    }
    check_text(field, value, MAX_ID_LEN)?;
    Ok(value)
}

/// An optional text field: at most `max` bytes, no control characters.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; at most {max} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// A map field within the bounds.
pub(crate) fn check_map(field: &str, map: &HashMap<String, String>) -> Result<(), Status> {
    if map.len() > MAX_MAP_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "{field} has {} entries; at most {MAX_MAP_ENTRIES} are allowed",
            map.len()
        )));
    }
    for (key, value) in map {
        if key.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{field} has an empty key"
            )));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "{field} key `{}…` is {} bytes long; at most {MAX_KEY_LEN} are allowed",
                key.chars().take(16).collect::<String>(),
                key.len()
            )));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Status::invalid_argument(format!(
                "{field}[{key}] is {} bytes long; at most {MAX_VALUE_LEN} are allowed",
                value.len()
            )));
        }
    }
    Ok(())
}

/// A request that changes a service's state: it carries a request_id, and the
/// service applies it at most once per request_id (see [`Ledger::mutate`]).
pub(crate) trait Mutation: prost::Message + Clone {
    /// The method's name, for the error that refuses a reused request_id.
    const METHOD: &'static str;

    /// The caller's id of this change.
    fn request_id(&self) -> &str;

    /// Takes the map fields out of (a copy of) the request, so that its
    /// fingerprint does not depend on their order (see [`fingerprint`]).
    fn take_maps(&mut self) -> Vec<HashMap<String, String>> {
        Vec::new()
    }
}

/// Implements [`Mutation`] for request types, each with its method's name and,
/// for those with map fields, how to take them out (`|request| maps`).
macro_rules! mutations {
    ($($request:ident => $method:literal $(, |$r:ident| $maps:expr)?;)*) => {$(
        impl Mutation for crate::proto::$request {
            const METHOD: &'static str = $method;
            fn request_id(&self) -> &str {
                &self.request_id
            }
            $(fn take_maps(&mut self) -> Vec<HashMap<String, String>> {
                let $r = self;
                $maps
            })?
        }
    )*};
}

// Every mutation of the mesh; the rest of its methods only read.
mutations! {
    ProposePolicyRequest => "ProposePolicy", |r| take_map(r.policy.as_mut().map(|p| &mut p.rules));
    EnforcePolicyRequest => "EnforcePolicy";
    RevokePolicyRequest => "RevokePolicy";
    SubmitSignalRequest => "SubmitSignal", |r| take_map(r.signal.as_mut().map(|s| &mut s.metadata));
    RequestActionRequest => "RequestAction", |r| take_map(r.action.as_mut().map(|a| &mut a.parameters));
    AcknowledgeActionRequest => "AcknowledgeAction";
    SubmitTaskRequest => "SubmitTask", |r| take_map(Some(&mut r.parameters));
    CancelTaskRequest => "CancelTask";
}

/// A map field taken out, if its message is there.
fn take_map(map: Option<&mut HashMap<String, String>>) -> Vec<HashMap<String, String>> {
    map.map(std::mem::take).into_iter().collect()
}

/// A service's state that keeps the dedup log of its mutations.
pub(crate) trait Deduplicated {
    /// The log of the receipts of recent mutations, by request_id.
    fn dedup_log(&mut self) -> &mut DedupLog;
}

/// A service's state behind one lock, with the rule that lets every mutation be
/// marked idempotent: check the dedup log, apply, record the receipt, count —
/// one step under the lock, so that a retry racing its first attempt cannot
/// apply twice. Changes a mutation publishes (`U`) are sent under the same lock,
/// so subscribers see them in the order they were applied.
pub(crate) struct Ledger<S, U> {
    state: Mutex<S>,
    updates: broadcast::Sender<U>,
    applied: AtomicU64,
    duplicates: AtomicU64,
    started: SystemTime,
}

impl<S: Deduplicated, U: Clone> Ledger<S, U> {
    /// A ledger over `state`, whose subscribers may fall `update_buffer` changes behind.
    pub(crate) fn new(state: S, update_buffer: usize) -> Self {
        Self {
            state: Mutex::new(state),
            updates: broadcast::channel(update_buffer.max(1)).0,
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            started: SystemTime::now(),
        }
    }

    /// The state; a panic while it was held does not lock everyone out.
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mutations applied (duplicates not counted).
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Mutations answered from the dedup log without being applied.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// When the service started, for its health.
    pub(crate) fn started(&self) -> SystemTime {
        self.started
    }

    /// Sends a change to the subscribers (those that are there).
    pub(crate) fn publish(&self, update: U) {
        let _ = self.updates.send(update);
    }

    /// A subscription to the changes published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<U> {
        self.updates.subscribe()
    }

    /// Applies `request` at most once per request_id: a repeat (same request_id,
    /// same fingerprint) gets the first receipt back, marked duplicate, and
    /// changes nothing; a request_id reused for a different request is refused
    /// with ALREADY_EXISTS. `apply` runs under the lock and returns the receipt
    /// and the change to publish, if any; its errors are not recorded, so a
    /// corrected retry with the same request_id can still succeed.
    pub(crate) fn mutate<R: Mutation>(
        &self,
        request: &R,
        apply: impl FnOnce(&mut S) -> Result<(Receipt, Option<U>), Status>,
    ) -> Result<Receipt, Status> {
        let fingerprint = fingerprint(request, R::take_maps);
        let request_id = require_id("request_id", request.request_id())?;
        let mut state = self.lock();
        match state.dedup_log().check(request_id, fingerprint) {
            Seen::New => {}
            Seen::Duplicate(receipt) => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(receipt);
            }
            Seen::Conflict => {
                return Err(Status::already_exists(format!(
                    "request_id `{request_id}` was already used for a different {} request; \
                     use a new request_id for a new change",
                    R::METHOD
                )));
            }
        }
        let (mut receipt, update) = apply(&mut state)?;
        receipt.id = request_id.to_owned();
        state
            .dedup_log()
            .record(request_id, fingerprint, receipt.clone());
        self.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(update) = update {
            self.publish(update);
        }
        Ok(receipt)
    }
}

/// A service's HealthCheck answer: NOT_SERVING once its server is shutting
/// down, with the service's own `details`.
pub(crate) fn health_status(
    service: &str,
    started: SystemTime,
    closing: &Closing,
    details: HashMap<String, String>,
) -> HealthStatus {
    let status = if closing.is_closing() {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    };
    HealthStatus {
        status: status as i32,
        service: service.to_owned(),
        version: VERSION.to_owned(),
        timestamp: Some(now()),
        uptime: Some(proto_duration(since(started))),
        details,
    }
}

/// The receipt of a mutation of `resource`; [`Ledger::mutate`] fills in its id.
pub(crate) fn receipt(accepted: bool, message: String, resource: String, version: u64) -> Receipt {
    Receipt {
        id: String::new(),
        accepted,
        message,
        timestamp: Some(now()),
        duplicate: false,
        resource,
        version,
    }
}

/// Now, as a protobuf timestamp.
pub(crate) fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Time since `t`, zero if `t` is in the future.
pub(crate) fn since(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// A `Duration` as a protobuf duration.
pub(crate) fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// Tells open streams that their server is shutting down. Dropping it does not
/// close them; call [`close`](StreamCloser::close).
#[derive(Debug)]
pub struct StreamCloser(watch::Sender<bool>);

impl StreamCloser {
    /// Ends every stream watching the paired [`Closing`], with UNAVAILABLE.
    pub fn close(&self) {
        self.0.send_replace(true);
    }
}

/// What a service's streams watch to end when their server shuts down: a server
/// drains in-flight calls before it stops, and a subscription would otherwise
/// never finish.
#[derive(Debug, Clone)]
pub struct Closing(watch::Receiver<bool>);

impl Closing {
    /// A signal that never fires.
    pub fn never() -> Self {
        let (_, rx) = watch::channel(false);
        Closing(rx)
    }

    /// A connected pair.
    pub fn pair() -> (StreamCloser, Closing) {
        let (tx, rx) = watch::channel(false);
        (StreamCloser(tx), Closing(rx))
    }

    /// Whether the server is shutting down.
    pub fn is_closing(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the server starts shutting down (never, for [`never`](Self::never)).
    pub async fn closed(mut self) {
        if self.0.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A boxed response stream, as the tonic server traits want them.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `stream`, ended with UNAVAILABLE ("the server is shutting down") when
/// `closing` fires, so that a subscriber reconnects, possibly elsewhere.
pub(crate) fn until_closing<T, S>(stream: S, closing: Closing) -> BoxStream<T>
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    Box::pin(UntilClosing {
        inner: Box::pin(stream),
        closed: Box::pin(closing.closed()),
        done: false,
    })
}

struct UntilClosing<T> {
    inner: BoxStream<T>,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl<T> Stream for UntilClosing<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.closed.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(Status::unavailable(
                "the server is shutting down; subscribe again",
            ))));
        }
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }
}
