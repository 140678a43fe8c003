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

/// When the call must end, from its policy: `timeout` (already clamped by
/// `max_timeout` at compile time) counted from now.
pub(crate) fn for_call(policy: &MethodPolicy) -> Option<Instant> {
    policy.timeout.map(|t| Instant::now() + t)
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
