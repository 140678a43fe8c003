//! Whole-call deadlines.
//!
//! A deadline covers every attempt and every backoff of a call. Each attempt tells
//! the server how much of it is left (`grpc-timeout`), so the server can stop work
//! nobody waits for; and when it passes the caller gets DEADLINE_EXCEEDED — never
//! CANCELLED, which is what tonic reports for its own client timeout.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use crate::policy::MethodPolicy;

tokio::task_local! {
    static CALLER_TIMEOUT: Duration;
}

/// Runs `calls` with `timeout` as the deadline of every tai call made inside it,
/// instead of each method's compiled-in timeout — still clamped by the method's
/// `max_timeout`, so a caller cannot ask for more than the service owner allows.
///
/// ```no_run
/// # async fn f(client: impl Sized) {
/// use std::time::Duration;
/// let reply = tai_runtime::with_timeout(Duration::from_millis(300), async {
///     // client.propose_policy(policy).await
/// })
/// .await;
/// # }
/// ```
pub async fn with_timeout<F: std::future::Future>(timeout: Duration, calls: F) -> F::Output {
    CALLER_TIMEOUT.scope(timeout, calls).await
}

/// A call's deadline, as fixed when the call starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallDeadline {
    /// When the call must end.
    pub(crate) at: Instant,
    /// The whole call's timeout: what the first attempt has left.
    pub(crate) timeout: Duration,
    /// Whether the timeout is the method's own (not the caller's, see
    /// [`with_timeout`]): then its `grpc-timeout` header is the one computed when
    /// the client was made.
    pub(crate) from_policy: bool,
}

/// When a call that starts at `start` must end: the caller's timeout (see
/// [`with_timeout`]) or the policy's, clamped by `max_timeout`.
pub(crate) fn for_call(policy: &MethodPolicy, start: Instant) -> Option<CallDeadline> {
    let caller = caller_timeout();
    let timeout = clamped(caller.or(policy.timeout), policy.max_timeout)?;
    Some(CallDeadline {
        // A deadline beyond what `Instant` can hold is no deadline.
        at: start.checked_add(timeout)?,
        timeout,
        from_policy: caller.is_none(),
    })
}

/// The timeout the caller asked for with [`with_timeout`], if the current task
/// runs inside one.
pub(crate) fn caller_timeout() -> Option<Duration> {
    CALLER_TIMEOUT.try_with(|t| *t).ok()
}

/// The method's own timeout (no caller timeout), clamped by `max_timeout`.
pub(crate) fn policy_timeout(policy: &MethodPolicy) -> Option<Duration> {
    clamped(policy.timeout, policy.max_timeout)
}

fn clamped(asked: Option<Duration>, max: Option<Duration>) -> Option<Duration> {
    match (asked, max) {
        (Some(t), Some(max)) => Some(t.min(max)),
        (None, Some(max)) => Some(max),
        (t, None) => t,
    }
}

/// The time left before `deadline`, or `None` if it has passed.
pub(crate) fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// The status of a call whose deadline passed.
pub(crate) fn exceeded(path: &str) -> Status {
    Status::deadline_exceeded(format!("{path}: deadline exceeded"))
}

/// The status of a call whose deadline would pass during the backoff before its
/// next attempt: reported now, with the failure that led to the retry.
pub(crate) fn exceeded_before_retry(path: &str, last: &Status) -> Status {
    Status::deadline_exceeded(format!(
        "{path}: deadline would pass before the next retry; last attempt failed with {:?}: {}",
        last.code(),
        last.message()
    ))
}
