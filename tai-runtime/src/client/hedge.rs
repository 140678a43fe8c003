//! gRFC A6 hedging: the attempts of a call sent a delay apart, the first answer
//! winning.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::time::Instant;
use tonic::Status;

use super::attempt::{Answering, Failure};
use super::contract::Transport;
use super::core::ClientCore;
use super::deadline::{self, CallDeadline};
use super::retry::MAX_ATTEMPTS;
use super::throttle::RetryThrottle;
use crate::policy::HedgingPolicy;
use crate::wire::pushback::Pushback;

impl<T: Transport> ClientCore<T> {
    /// gRFC A6 hedging: attempt n+1 starts `delay` after attempt n, at once after a
    /// non-fatal failure, or after the server's pushback. The first success, or a
    /// fatal failure, ends the call and cancels the rest; the first attempt to
    /// receive response headers commits the call (the others are cancelled, no
    /// more start). No attempt starts once retries are throttled, the breaker
    /// refuses one, or the call's deadline would pass first; with nothing left in
    /// flight the call then ends with the last failure at once.
    ///
    /// The attempts in flight (at most five, A6's cap) are polled together by hand
    /// rather than in a `FuturesUnordered`, so that the loop can see which one is
    /// answering and cancel just the others.
    pub(super) async fn hedge<Out, F, Fut>(
        &self,
        index: usize,
        hedging: &HedgingPolicy,
        deadline: Option<CallDeadline>,
        attempt: F,
    ) -> (Result<Out, Status>, Instant)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = (Result<Out, Failure>, Instant)> + Answering,
    {
        let m = self.method(index);
        let max_attempts = hedging.max_attempts.min(MAX_ATTEMPTS);
        let throttle = m.throttle();
        let deadline = deadline.map(|d| d.at);
        let mut in_flight: Vec<(u32, Pin<Box<Fut>>)> = Vec::with_capacity(max_attempts as usize);
        in_flight.push((0, Box::pin(attempt(0))));
        let mut started = 1;
        let mut next_at = Some(Instant::now() + hedging.delay);
        // No more attempts: the call is committed, the breaker is open, or the
        // server said not to retry.
        let mut stopped = false;
        let mut transparent = true;
        let mut last: Option<Status> = None;
        let mut timer = std::pin::pin!(tokio::time::sleep_until(
            next_at.unwrap_or_else(Instant::now)
        ));
        std::future::poll_fn(|cx| {
            loop {
                let mut i = 0;
                while i < in_flight.len() {
                    let Poll::Ready((result, end)) = in_flight[i].1.as_mut().poll(cx) else {
                        i += 1;
                        continue;
                    };
                    let (number, _) = in_flight.swap_remove(i);
                    let failure = match result {
                        Ok(out) => return Poll::Ready((Ok(out), end)),
                        Err(f) => f,
                    };
                    if failure.committed {
                        return Poll::Ready((Err(failure.status), end));
                    }
                    if failure.rejected {
                        // The breaker opened: start no more, but let the attempts
                        // already sent finish.
                        stopped = true;
                        last = Some(failure.status);
                        continue;
                    }
                    if failure.unprocessed && std::mem::take(&mut transparent) {
                        in_flight.push((number, Box::pin(attempt(number))));
                        continue;
                    }
                    if !crate::policy::retries(hedging.non_fatal, failure.status.code()) {
                        return Poll::Ready((Err(failure.status), end));
                    }
                    if let Some(t) = throttle {
                        t.record_failure();
                    }
                    match Pushback::from_metadata(failure.status.metadata()) {
                        Pushback::Stop => stopped = true,
                        Pushback::After(d) => next_at = Some(end + d),
                        Pushback::None => next_at = Some(end),
                    }
                    last = Some(failure.status);
                }
                // A6: the first attempt to receive headers commits the call.
                if let Some(at) = in_flight.iter().position(|(_, f)| f.answering()) {
                    in_flight.swap(0, at);
                    in_flight.truncate(1);
                    stopped = true;
                }
                let now = Instant::now();
                let may_start = !stopped
                    && started < max_attempts
                    && !throttle.is_some_and(RetryThrottle::is_throttled);
                match next_at.filter(|_| may_start) {
                    Some(at) if deadline.is_some_and(|d| at >= d) => {
                        // It would start after the deadline: it never will.
                        next_at = None;
                        if in_flight.is_empty() {
                            let status = last.as_ref().map_or_else(
                                || deadline::exceeded(m.path),
                                |last| deadline::exceeded_before_retry(m.path, last),
                            );
                            return Poll::Ready((Err(status), now));
                        }
                    }
                    Some(at) if at <= now => {
                        self.state.metrics_at(index).hedges.inc();
                        tracing::debug!(method = m.path, attempt = started + 1, "hedging");
                        in_flight.push((started, Box::pin(attempt(started))));
                        started += 1;
                        next_at = Some(now + hedging.delay);
                        continue;
                    }
                    Some(at) => {
                        if timer.deadline() != at {
                            timer.as_mut().reset(at);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            continue;
                        }
                    }
                    None => {}
                }
                if in_flight.is_empty() {
                    // Nothing in flight and nothing more to start.
                    let status = last.take().unwrap_or_else(|| {
                        Status::unavailable(format!("{}: no hedged attempt could be made", m.path))
                    });
                    return Poll::Ready((Err(status), now));
                }
                return Poll::Pending;
            }
        })
        .await
    }
}
