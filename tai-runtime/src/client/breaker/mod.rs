//! Circuit breaker: stop calling a method that keeps failing, probe it, recover.
//!
//! Two trip rules, either of which opens the breaker: `failure_threshold`
//! consecutive failures, or a failure ratio over a sliding time window once the
//! window holds `min_calls` calls. Open, the breaker fails calls fast with
//! UNAVAILABLE and a message that says why it tripped. After `open_timeout` it is
//! half-open: at most `half_open_max_calls` probes pass; if they all succeed it
//! closes, and if one fails it opens again for twice as long (capped at
//! `max_open_timeout`), so a backend that stays down is probed less and less.
//!
//! Classifying an outcome (is this code a failure?) is the caller's input
//! ([`Outcome`]); the gate only counts. While closed, admission is one atomic load
//! and recording a success is one or two atomic operations: the sliding window is
//! a ring of atomic words, and only failures and state changes take the lock.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use crate::policy::BreakerPolicy;

mod permit;
mod window;

use permit::Held;
pub use permit::Permit;
pub(crate) use permit::{Detached, Ticket};
use window::Window;

/// Low bit of [`CircuitBreaker::tag`]: set while open or half-open.
const NOT_CLOSED: u64 = 1;

/// Why a breaker opened.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TripReason {
    /// `failures` failures in a row; the last one had `last` as its code.
    ConsecutiveFailures {
        /// Failures in a row.
        failures: u32,
        /// Code of the last failure.
        last: Code,
    },
    /// The failure ratio over the window reached the threshold.
    FailureRate {
        /// Failures in the window.
        failures: u32,
        /// Calls in the window.
        calls: u32,
        /// The window length.
        window: Duration,
    },
    /// A half-open probe failed.
    ProbeFailed {
        /// Code of the failed probe.
        code: Code,
    },
}

impl fmt::Display for TripReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TripReason::ConsecutiveFailures { failures, last } => {
                write!(f, "{failures} consecutive failures (last: {last:?})")
            }
            TripReason::FailureRate {
                failures,
                calls,
                window,
            } => write!(
                f,
                "{failures} of {calls} calls failed in the last {window:?}"
            ),
            TripReason::ProbeFailed { code } => {
                write!(f, "a half-open probe failed with {code:?}")
            }
        }
    }
}

/// A breaker's state, as read at run time.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail fast until the open period ends.
    Open {
        /// Why it opened.
        reason: TripReason,
        /// Time until probes are admitted.
        remaining: Duration,
    },
    /// Probes are admitted; the rest fail fast.
    HalfOpen {
        /// Probes admitted so far.
        probes_admitted: u32,
        /// Probes that succeeded so far.
        probes_succeeded: u32,
    },
}

impl BreakerState {
    /// Short name: `closed`, `open` or `half-open`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

/// What an admitted call turned out to be, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The backend answered (OK, or an error that is not a failure code).
    Success,
    /// A failure code.
    Failure(Code),
}

/// A call was refused because the breaker is open.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Rejected {
    /// Why the breaker is open.
    pub reason: TripReason,
    /// Time until probes are admitted (zero while half-open probes are in flight).
    pub retry_in: Duration,
}

impl Rejected {
    /// The status a caller gets for a call to `path` this breaker refused:
    /// UNAVAILABLE, saying why the breaker is open and when it will probe.
    pub(crate) fn status(&self, path: &str) -> tonic::Status {
        let wait = if self.retry_in.is_zero() {
            "half-open probes are in flight".to_owned()
        } else {
            format!("next probe in {:.1?}", self.retry_in)
        };
        tonic::Status::unavailable(format!(
            "circuit breaker for {path} is open: {}; {wait}",
            self.reason
        ))
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open {
        until: Instant,
        reason: TripReason,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
        reason: TripReason,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every transition: outcomes of calls admitted under an older state
    /// are ignored, so a slow call from before a trip cannot close or reopen it.
    generation: u64,
    consecutive: u32,
    open_for: Duration,
}

/// A circuit breaker for one method.
#[derive(Debug)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    /// `generation << 1 | NOT_CLOSED?`, mirroring `Inner`: admission while closed reads
    /// only this, so the common path takes no lock.
    tag: AtomicU64,
    /// Mirror of `Inner::consecutive`, so a success with no failure run to reset
    /// (the common path) takes no lock either.
    streak: AtomicU32,
    epoch: Instant,
    /// The failure-rate rule's window, if the policy has the rule.
    window: Option<Window>,
    inner: Mutex<Inner>,
    /// Mirrors "not closed" into a metric, if the owner exports one.
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            tag: AtomicU64::new(0),
            streak: AtomicU32::new(0),
            epoch: Instant::now(),
            window: policy.rate.map(|rule| Window::new(rule.window)),
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                consecutive: 0,
                open_for: policy.open_timeout,
            }),
            gauge: None,
        }
    }

    /// Exports the open/closed state as a gauge (1 while not closed).
    pub(crate) fn with_gauge(mut self, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.set(0);
        self.gauge = Some(gauge);
        self
    }

    /// The policy this breaker runs.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Whether `code` counts as a failure under this breaker's policy.
    pub fn classify(&self, code: Code) -> Outcome {
        if crate::policy::contains(self.policy.failure_codes, code) {
            Outcome::Failure(code)
        } else {
            Outcome::Success
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters behind, never a broken
        // invariant worth propagating; keep serving.
        crate::sync::lock(&self.inner)
    }

    /// Asks to make a call.
    pub fn admit(&self) -> Result<Permit<'_>, Rejected> {
        let tag = self.tag.load(Ordering::Acquire);
        if tag & NOT_CLOSED == 0 {
            return Ok(self.permit(tag >> 1, false));
        }
        let mut inner = self.lock();
        let now = Instant::now();
        match &mut inner.state {
            State::Closed => Ok(self.permit(inner.generation, false)),
            State::Open { until, reason } => {
                if now < *until {
                    return Err(Rejected {
                        reason: reason.clone(),
                        retry_in: *until - now,
                    });
                }
                let reason = reason.clone();
                inner.state = State::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                    reason,
                };
                inner.generation += 1;
                self.publish(&inner);
                Ok(self.permit(inner.generation, true))
            }
            State::HalfOpen {
                admitted, reason, ..
            } => {
                if *admitted >= self.policy.half_open_max_calls {
                    return Err(Rejected {
                        reason: reason.clone(),
                        retry_in: Duration::ZERO,
                    });
                }
                *admitted += 1;
                Ok(self.permit(inner.generation, true))
            }
        }
    }

    /// Records the outcome of an admitted call. Reads the clock only if the
    /// outcome must be placed in time (a failure-rate window, a failure, a probe).
    pub fn record(&self, permit: Permit<'_>, outcome: Outcome) {
        self.record_with(permit.into_ticket(), outcome, Instant::now);
    }

    /// Records the outcome of an admitted call that ended at `now` — for a caller
    /// that has already read the clock, so the breaker need not read it again.
    pub fn record_at(&self, permit: Permit<'_>, outcome: Outcome, now: Instant) {
        self.record_with(permit.into_ticket(), outcome, || now);
    }

    fn permit(&self, generation: u64, probe: bool) -> Permit<'_> {
        self.resume(Ticket::new(generation, probe))
    }

    /// A permit again, from the ticket of a permit this breaker gave out.
    pub(crate) fn resume(&self, ticket: Ticket) -> Permit<'_> {
        Permit {
            breaker: Held::Borrowed(self),
            ticket,
        }
    }

    /// [`admit`](Self::admit) for a breaker shared through an `Arc`: the permit
    /// holds the breaker, not a borrow of it.
    pub(crate) fn admit_shared(self: &Arc<Self>) -> Result<Permit<'static>, Rejected> {
        let ticket = self.admit()?.into_ticket();
        Ok(Permit {
            breaker: Held::Shared(Arc::clone(self)),
            ticket,
        })
    }

    /// A probe admitted under `generation` ended without an outcome: give its slot
    /// back, unless the breaker has moved on since.
    fn release_probe(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let State::HalfOpen { admitted, .. } = &mut inner.state {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn record_with(&self, permit: Ticket, outcome: Outcome, clock: impl FnOnce() -> Instant) {
        if outcome != Outcome::Success || permit.probe() {
            return self.record_locked(permit, outcome, clock());
        }
        // The common path: a success while closed takes no lock unless a failure
        // run needs resetting, and reads no clock unless a window counts it.
        if self.tag.load(Ordering::Acquire) >> 1 != permit.generation() {
            return;
        }
        let reset = self.streak.load(Ordering::Relaxed) != 0;
        if self.window.is_none() && !reset {
            return;
        }
        let now = clock();
        if let Some(window) = &self.window {
            window.add(window.slot(self.epoch, now), false);
        }
        if reset {
            self.record_locked(permit, outcome, now);
        }
    }

    /// Records an outcome under the lock (the success path has already counted
    /// a success in the window).
    fn record_locked(&self, permit: Ticket, outcome: Outcome, now: Instant) {
        let mut inner = self.lock();
        if permit.generation() != inner.generation {
            return;
        }
        if permit.probe() {
            self.record_probe(&mut inner, outcome, now);
            return;
        }
        match outcome {
            Outcome::Success => {
                inner.consecutive = 0;
                self.streak.store(0, Ordering::Relaxed);
            }
            Outcome::Failure(code) => {
                inner.consecutive += 1;
                self.streak.store(inner.consecutive, Ordering::Relaxed);
                if inner.consecutive >= self.policy.failure_threshold {
                    let failures = inner.consecutive;
                    self.trip(
                        &mut inner,
                        now,
                        TripReason::ConsecutiveFailures {
                            failures,
                            last: code,
                        },
                    );
                } else if let Some(reason) = self.count_failure_in_window(now) {
                    self.trip(&mut inner, now, reason);
                }
            }
        }
    }

    fn record_probe(&self, inner: &mut Inner, outcome: Outcome, now: Instant) {
        let State::HalfOpen { succeeded, .. } = &mut inner.state else {
            return;
        };
        match outcome {
            Outcome::Success => {
                *succeeded += 1;
                if *succeeded >= self.policy.half_open_max_calls {
                    inner.state = State::Closed;
                    inner.generation += 1;
                    inner.consecutive = 0;
                    self.streak.store(0, Ordering::Relaxed);
                    inner.open_for = self.policy.open_timeout;
                    if let Some(window) = &self.window {
                        window.clear();
                    }
                    self.publish(inner);
                }
            }
            Outcome::Failure(code) => {
                inner.open_for = (inner.open_for * 2).min(self.policy.max_open_timeout);
                self.open(inner, now, TripReason::ProbeFailed { code });
            }
        }
    }

    fn trip(&self, inner: &mut Inner, now: Instant, reason: TripReason) {
        inner.open_for = self.policy.open_timeout;
        self.open(inner, now, reason);
    }

    fn open(&self, inner: &mut Inner, now: Instant, reason: TripReason) {
        tracing::warn!(%reason, open_for = ?inner.open_for, "circuit breaker opened");
        inner.state = State::Open {
            until: now + inner.open_for,
            reason,
        };
        inner.generation += 1;
        self.publish(inner);
    }

    /// Sets its gauge to its state again: a breaker that shares its gauge with
    /// another (one a run-time config built for the same method) takes it back.
    pub(crate) fn republish(&self) {
        if self.gauge.is_some() {
            self.publish(&self.lock());
        }
    }

    /// Mirrors the state and generation into the lock-free tag.
    fn publish(&self, inner: &Inner) {
        let closed = matches!(inner.state, State::Closed);
        let tag = inner.generation << 1 | if closed { 0 } else { NOT_CLOSED };
        self.tag.store(tag, Ordering::Release);
        if let Some(g) = &self.gauge {
            g.set(i64::from(!closed));
        }
    }

    /// Counts a failure in the window; the trip reason if the failure-rate rule
    /// now holds.
    fn count_failure_in_window(&self, now: Instant) -> Option<TripReason> {
        let (rule, window) = (self.policy.rate?, self.window.as_ref()?);
        let slot = window.slot(self.epoch, now);
        window.add(slot, true);
        let (calls, failures) = window.totals(slot);
        (calls >= rule.min_calls && f64::from(failures) >= rule.threshold * f64::from(calls))
            .then_some(TripReason::FailureRate {
                failures,
                calls,
                window: rule.window,
            })
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match &inner.state {
            State::Closed => BreakerState::Closed,
            State::Open { until, reason } => {
                let now = Instant::now();
                if now >= *until {
                    // Probes will be admitted on the next call.
                    BreakerState::HalfOpen {
                        probes_admitted: 0,
                        probes_succeeded: 0,
                    }
                } else {
                    BreakerState::Open {
                        reason: reason.clone(),
                        remaining: *until - now,
                    }
                }
            }
            State::HalfOpen {
                admitted,
                succeeded,
                ..
            } => BreakerState::HalfOpen {
                probes_admitted: *admitted,
                probes_succeeded: *succeeded,
            },
        }
    }
}

#[cfg(test)]
mod tests;
