//! Whole-call deadlines.
//!
//! A deadline covers every attempt and every backoff of a call. Each attempt tells
//! the server how much of it is left (`grpc-timeout`), so the server can stop work
//! nobody waits for; and when it passes the caller gets DEADLINE_EXCEEDED — never
//! CANCELLED, which is what tonic reports for its own client timeout.
//!
//! The caller sets a call's timeout as with tonic, by `Request::set_timeout`; the
//! method's `max_timeout` clamps it, so a caller cannot ask for more than the
//! service owner allows. Without one, the method's own timeout applies. A call
//! made while a server handles a call is also capped by that call's deadline
//! (minus the server's margin; see `crate::context`), unless it opts out: a
//! handler's work must not outlive its caller.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use crate::policy::MethodPolicy;

/// A call's deadline, as fixed when the call starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallDeadline {
    /// When the call must end.
    pub(crate) at: Instant,
    /// The whole call's timeout: what the first attempt has left.
    pub(crate) timeout: Duration,
    /// Whether the timeout is the method's own (not the caller's, from
    /// `Request::set_timeout`): then its `grpc-timeout` header is the one
    /// computed when the client was made.
    pub(crate) from_policy: bool,
}

/// When a call that starts at `start` must end: the caller's timeout (`asked`,
/// from `Request::set_timeout`) or the policy's, clamped by `max_timeout`.
pub(crate) fn for_call(
    policy: &MethodPolicy,
    start: Instant,
    caller: Option<Duration>,
) -> Option<CallDeadline> {
    let timeout = clamped(caller.or(policy.timeout), policy.max_timeout)?;
    Some(CallDeadline {
        // A deadline beyond what `Instant` can hold is no deadline.
        at: start.checked_add(timeout)?,
        timeout,
        from_policy: caller.is_none(),
    })
}

/// `call` (the call's own deadline) capped by `handler`, the deadline of the
/// call being handled when this one is made (see `crate::context`): the earlier
/// of the two. Once the handler's deadline has passed the call fails now, before
/// any attempt (nothing is sent, the breaker learns nothing).
pub(crate) fn capped(
    call: Option<CallDeadline>,
    handler: Option<Instant>,
    start: Instant,
    path: &str,
) -> Result<Option<CallDeadline>, Status> {
    let Some(at) = handler else {
        return Ok(call);
    };
    if at <= start {
        return Err(handler_passed(path));
    }
    Ok(match call {
        Some(d) if d.at <= at => Some(d),
        _ => Some(CallDeadline {
            at,
            timeout: at - start,
            from_policy: false,
        }),
    })
}

/// The status of a call not made because the deadline of the call being
/// handled has passed.
pub(crate) fn handler_passed(path: &str) -> Status {
    Status::deadline_exceeded(format!(
        "{path}: not sent: the deadline of the call being handled has passed"
    ))
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
