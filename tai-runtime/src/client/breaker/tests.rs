//! The breaker's state machine: trip rules, probes, open-time growth, stale outcomes.
use super::*;
use crate::policy::{CodeSet, RateRule};

fn policy(rate: Option<RateRule>) -> BreakerPolicy {
    BreakerPolicy {
        failure_threshold: 3,
        open_timeout: Duration::from_secs(10),
        max_open_timeout: Duration::from_secs(25),
        half_open_max_calls: 2,
        rate,
        failure_codes: CodeSet(1 << Code::Unavailable as u32),
    }
}

fn fail(b: &CircuitBreaker) {
    let p = b.admit().expect("admitted");
    b.record(p, Outcome::Failure(Code::Unavailable));
}

fn succeed(b: &CircuitBreaker) {
    let p = b.admit().expect("admitted");
    b.record(p, Outcome::Success);
}

#[tokio::test(start_paused = true)]
async fn consecutive_rule_trips_and_probes_close_it() {
    let b = CircuitBreaker::new(policy(None));
    fail(&b);
    fail(&b);
    succeed(&b); // resets the run
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    let rejected = b.admit().unwrap_err();
    assert_eq!(
        rejected.reason,
        TripReason::ConsecutiveFailures {
            failures: 3,
            last: Code::Unavailable
        }
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let p1 = b.admit().unwrap();
    let p2 = b.admit().unwrap();
    assert!(b.admit().is_err(), "only two probes");
    b.record(p1, Outcome::Success);
    assert!(matches!(
        b.state(),
        BreakerState::HalfOpen {
            probes_succeeded: 1,
            ..
        }
    ));
    b.record(p2, Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_doubles_open_time_up_to_the_cap() {
    let b = CircuitBreaker::new(policy(None));
    for _ in 0..3 {
        fail(&b);
    }
    for expected in [20, 25, 25] {
        tokio::time::advance(Duration::from_secs(30)).await;
        fail(&b); // the probe fails
        match b.state() {
            BreakerState::Open { remaining, reason } => {
                assert_eq!(remaining, Duration::from_secs(expected));
                assert_eq!(
                    reason,
                    TripReason::ProbeFailed {
                        code: Code::Unavailable
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn stale_outcomes_are_ignored() {
    let b = CircuitBreaker::new(policy(None));
    let slow = b.admit().unwrap();
    for _ in 0..3 {
        fail(&b);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = b.admit().unwrap();
    b.record(slow, Outcome::Failure(Code::Unavailable));
    assert!(
        matches!(b.state(), BreakerState::HalfOpen { .. }),
        "old call must not reopen"
    );
    b.record(probe, Outcome::Success);
}

#[tokio::test(start_paused = true)]
async fn rate_rule_needs_min_calls() {
    let rule = RateRule {
        threshold: 0.5,
        window: Duration::from_secs(10),
        min_calls: 10,
    };
    let mut p = policy(Some(rule));
    p.failure_threshold = 100;
    let b = CircuitBreaker::new(p);
    // 4 failures of 8 calls: 50%, but below min_calls.
    for _ in 0..4 {
        fail(&b);
        succeed(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    succeed(&b); // 9 calls, 4 failures
    fail(&b); // 10 calls, 5 failures: trips
    match b.state() {
        BreakerState::Open { reason, .. } => assert_eq!(
            reason,
            TripReason::FailureRate {
                failures: 5,
                calls: 10,
                window: Duration::from_secs(10)
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn rate_window_forgets_old_calls() {
    let rule = RateRule {
        threshold: 0.5,
        window: Duration::from_secs(10),
        min_calls: 4,
    };
    let mut p = policy(Some(rule));
    p.failure_threshold = 100;
    let b = CircuitBreaker::new(p);
    fail(&b);
    fail(&b);
    fail(&b);
    tokio::time::advance(Duration::from_secs(11)).await;
    succeed(&b);
    fail(&b);
    succeed(&b);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "old failures slid out of the window"
    );
}

#[test]
fn classify_uses_the_policy_codes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let b = CircuitBreaker::new(policy(None));
    assert_eq!(
        b.classify(Code::Unavailable),
        Outcome::Failure(Code::Unavailable)
    );
    assert_eq!(b.classify(Code::InvalidArgument), Outcome::Success);
    assert_eq!(b.classify(Code::Ok), Outcome::Success);
}
