//! The gRFC A6 retry decision after a failed attempt, decision for decision as
//! grpc-go makes it. The call engine runs it in its loop; the benchmarks run the
//! very same function.

use std::time::Duration;

use rand::Rng;
use tonic::Status;

use crate::backoff;
use crate::policy::RetryPolicy;
use crate::pushback::Pushback;
use crate::throttle::RetryThrottle;

/// gRFC A6 caps attempts at 5, whatever the policy asks for.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// Where a call's retries stand.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    /// Attempts made before the current one.
    pub(crate) previous: u32,
    /// Retries since the server last pushed back (the backoff exponent).
    since_pushback: u32,
}

impl Retries {
    /// Retries of a call that has made `previous` attempts, none pushed back.
    pub(crate) fn after(previous: u32) -> Self {
        Self {
            previous,
            since_pushback: previous,
        }
    }

    /// After an uncommitted failure with `status`: the delay before the next
    /// attempt, or `None` to give up. Counts the failure in `throttle` where A6
    /// says to (pushback stop, or a retryable code — before the attempt limit).
    pub(crate) fn next_delay(
        &mut self,
        policy: &RetryPolicy,
        status: &Status,
        throttle: Option<&RetryThrottle>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let pushback = Pushback::from_metadata(status.metadata());
        if pushback == Pushback::Stop {
            // The server said not to retry; A6 counts it as a failure for throttling.
            if let Some(t) = throttle {
                t.record_failure();
            }
            return None;
        }
        if !crate::policy::contains(policy.retryable, status.code()) {
            return None;
        }
        if throttle.is_some_and(RetryThrottle::record_failure) {
            return None;
        }
        if self.previous + 1 >= policy.max_attempts.min(MAX_ATTEMPTS) {
            return None;
        }
        let delay = match pushback {
            Pushback::After(d) => {
                self.since_pushback = 0;
                d
            }
            _ => {
                self.since_pushback += 1;
                backoff::delay(policy, self.since_pushback, rng)
            }
        };
        self.previous += 1;
        Some(delay)
    }
}
