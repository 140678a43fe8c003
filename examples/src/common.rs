//! What the three services share: input checks with messages that say what to fix,
//! timestamps, and the signal that ends open streams when a server shuts down.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use tokio::sync::watch;
use tonic::Status;

use crate::storage::{DedupLog, Seen};

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

/// The dedup step every mutation starts with: `Ok(Some(receipt))` answers a
/// repeat, `Ok(None)` means apply, `Err` a request_id reused for another request.
pub(crate) fn dedup(
    log: &DedupLog,
    method: &str,
    request_id: &str,
    fingerprint: u64,
) -> Result<Option<crate::proto::Receipt>, Status> {
    match log.check(request_id, fingerprint) {
        Seen::New => Ok(None),
        Seen::Duplicate(receipt) => Ok(Some(receipt)),
        Seen::Conflict => Err(Status::already_exists(format!(
            "request_id `{request_id}` was already used for a different {method} request; \
             use a new request_id for a new change"
        ))),
    }
}

/// How many mutations a service applied, and how many it answered from its dedup
/// log instead.
#[derive(Debug, Default)]
pub(crate) struct MutationCounts {
    applied: AtomicU64,
    duplicates: AtomicU64,
}

impl MutationCounts {
    /// Mutations applied (duplicates not counted).
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Mutations answered from the dedup log without being applied.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Applies a mutation at most once per `request_id`, the rule that lets every
    /// mutation be marked idempotent: a repeat gets the first receipt back and
    /// changes nothing (`None` for the side product), a reused id with a different
    /// request is refused. The caller holds its state's lock across the call, so
    /// the check, the change and the record are one step.
    pub(crate) fn apply_once<S, T>(
        &self,
        state: &mut S,
        log: fn(&mut S) -> &mut DedupLog,
        method: &str,
        request_id: &str,
        fingerprint: u64,
        apply: impl FnOnce(&mut S) -> Result<(crate::proto::Receipt, T), Status>,
    ) -> Result<(crate::proto::Receipt, Option<T>), Status> {
        if let Some(receipt) = dedup(log(state), method, request_id, fingerprint)? {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok((receipt, None));
        }
        let (mut receipt, product) = apply(state)?;
        receipt.id = request_id.to_owned();
        log(state).record(request_id, fingerprint, receipt.clone());
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok((receipt, Some(product)))
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
