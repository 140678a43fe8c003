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
    let caller = CALLER_TIMEOUT.try_with(|t| *t).ok();
    let timeout = clamped(caller.or(policy.timeout), policy.max_timeout)?;
    Some(CallDeadline {
        // A deadline beyond what `Instant` can hold is no deadline.
        at: start.checked_add(timeout)?,
        timeout,
        from_policy: caller.is_none(),
    })
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

/// The `grpc-timeout` header value for `left`: the most precise of microseconds,
/// milliseconds, seconds, minutes and hours that fits the 8 digits gRPC allows,
/// rounded down (so the server's deadline is never later than ours).
///
/// tonic's `Request::set_timeout` writes the same header through `format!` and a
/// re-parse of its own output: two allocations and some 1,500 instructions. This
/// writes the digits into a stack buffer. `None` cannot happen (digits and a unit
/// letter are always a valid header value); it is not unwrapped only so that no
/// panic sits on the call path.
pub(crate) fn grpc_timeout(left: Duration) -> Option<http::HeaderValue> {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(left.as_secs());
    let (value, unit) = [
        (left.as_micros(), b'u'),
        (left.as_millis(), b'm'),
        (secs, b'S'),
        (secs / 60, b'M'),
        (secs / 3600, b'H'),
    ]
    .into_iter()
    .find(|(v, _)| *v <= MAX)
    .unwrap_or((MAX, b'H'));
    let mut buf = [0u8; 9];
    buf[8] = unit;
    let mut at = 8;
    let mut v = value as u32; // at most 99_999_999
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&buf[at..]).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    #[test]
    fn grpc_timeout_picks_the_finest_unit_that_fits() {
        let t = |d: Duration| grpc_timeout(d).unwrap().to_str().unwrap().to_owned();
        assert_eq!(t(Duration::from_nanos(1_500)), "1u");
        assert_eq!(t(Duration::ZERO), "0u");
        assert_eq!(t(Duration::from_millis(500)), "500000u");
        assert_eq!(t(Duration::from_micros(4_999_987)), "4999987u");
        assert_eq!(t(Duration::from_micros(99_999_999)), "99999999u");
        assert_eq!(t(Duration::from_micros(100_000_001)), "100000m");
        assert_eq!(t(Duration::from_secs(3600)), "3600000m");
        assert_eq!(t(Duration::from_secs(200_000)), "200000S");
        assert_eq!(t(Duration::from_secs(6_000_000_000)), "1666666H");
        assert_eq!(t(Duration::MAX), "99999999H");
    }
}
