//! gRFC A6 retry, decision for decision as grpc-go makes it: the loop a call
//! runs, and the decision after each failed attempt (which the benchmarks run
//! too, as the very same function).

use std::time::Duration;

use rand::Rng;

use super::backoff;
use std::future::Future;

use tokio::time::Instant;
use tonic::Status;

use super::attempt::Failure;
use super::contract::Transport;
use super::core::ClientCore;
use super::deadline::{self, CallDeadline};
use super::throttle::RetryThrottle;
use crate::metrics::RetryStop;
use crate::policy::RetryPolicy;
use crate::wire::pushback::Pushback;

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
    /// Retries of a call that has made `previous` attempts, none pushed back
    /// (`bench_support` decides from there).
    #[cfg(feature = "bench")]
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
        self.decide(policy, status, throttle, rng).ok()
    }

    /// [`next_delay`](Self::next_delay), saying why when it gives up.
    pub(crate) fn decide(
        &mut self,
        policy: &RetryPolicy,
        status: &Status,
        throttle: Option<&RetryThrottle>,
        rng: &mut impl Rng,
    ) -> Result<Duration, RetryStop> {
        let pushback = Pushback::from_metadata(status.metadata());
        if pushback == Pushback::Stop {
            // The server said not to retry; A6 counts it as a failure for throttling.
            if let Some(t) = throttle {
                t.record_failure();
            }
            return Err(RetryStop::Pushback);
        }
        if !crate::policy::retries(policy.retryable, status.code()) {
            return Err(RetryStop::NotRetryable);
        }
        if throttle.is_some_and(RetryThrottle::record_failure) {
            return Err(RetryStop::Throttled);
        }
        if self.previous + 1 >= policy.max_attempts.min(MAX_ATTEMPTS) {
            return Err(RetryStop::Exhausted);
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
        Ok(delay)
    }
}

impl<T: Transport> ClientCore<T> {
    /// gRFC A6 retry, decision for decision as grpc-go makes it.
    pub(super) async fn retry<Out, F, Fut>(
        &self,
        index: usize,
        retry: &RetryPolicy,
        deadline: Option<CallDeadline>,
        attempt: F,
    ) -> (Result<Out, Status>, Instant)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = (Result<Out, Failure>, Instant)>,
    {
        let m = self.method(index);
        let throttle = m.throttle();
        let mut retries = Retries::default();
        // One transparent retry per call, as grpc-go allows: it costs no attempt
        // and no throttle token.
        let mut transparent = true;
        loop {
            let (result, end) = attempt(retries.previous).await;
            let failure = match result {
                Ok(out) => return (Ok(out), end),
                Err(f) => f,
            };
            if failure.committed || failure.rejected {
                let why = if failure.rejected {
                    RetryStop::Breaker
                } else {
                    RetryStop::Committed
                };
                self.state.metrics_at(index).retry_stopped(why);
                return (Err(failure.status), end);
            }
            if failure.unprocessed && std::mem::take(&mut transparent) {
                tracing::debug!(
                    method = m.path,
                    "transparent retry: the server never processed the attempt"
                );
                continue;
            }
            let decision = self
                .state
                .with_rng(|rng| retries.decide(retry, &failure.status, throttle, rng));
            let metrics = self.state.metrics_at(index);
            let delay = match decision {
                Ok(delay) => delay,
                Err(why) => {
                    metrics.retry_stopped(why);
                    return (Err(failure.status), end);
                }
            };
            if let Some(d) = deadline
                && end + delay >= d.at
            {
                metrics.retry_stopped(RetryStop::Deadline);
                return (
                    Err(deadline::exceeded_before_retry(m.path, &failure.status)),
                    end,
                );
            }
            tracing::debug!(method = m.path, attempt = retries.previous + 1, ?delay, code = ?failure.status.code(), "retrying");
            metrics.retried();
            tokio::time::sleep(delay).await;
        }
    }
}
