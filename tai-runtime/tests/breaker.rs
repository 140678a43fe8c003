//! The circuit breaker in the call path, against a real tonic server.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{Echo, Script, echo, open_stream, service, stream_method, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::channel::BoxIo;
use tai_runtime::policy::{BreakerPolicy, CodeSet, MethodPolicy, RateRule, ThrottlePolicy};
use tai_runtime::{BreakerState, Channel, Endpoints, TripReason};
use tokio::sync::Semaphore;
use tonic::{Code, Status};

fn with_breaker(rate: Option<RateRule>, failure_threshold: u32) -> MethodPolicy {
    let mut breaker = BreakerPolicy::new(
        failure_threshold,
        Duration::from_secs(10),
        Duration::from_secs(60),
        2,
        CodeSet(1 << Code::Unavailable as u32),
    );
    breaker.rate = rate;
    unary_method().with_breaker(breaker)
}

/// A server that fails while `down` and holds every call until `gate` has a permit.
fn flaky(down: Arc<AtomicBool>, gate: Arc<Semaphore>) -> Script {
    Script::unary(move |_, _| {
        let (down, gate) = (down.clone(), gate.clone());
        async move {
            gate.acquire().await.unwrap().forget();
            if down.load(Ordering::SeqCst) {
                Err(Status::unavailable("backend down"))
            } else {
                Ok(echo("ok"))
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn trips_fails_fast_probes_and_closes() {
    let down = Arc::new(AtomicBool::new(true));
    let gate = Arc::new(Semaphore::new(1000));
    let script = flaky(down.clone(), gate.clone());
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![with_breaker(None, 3)], None),
    );
    let state = || core.state().breaker("Unary").unwrap().state();

    for _ in 0..3 {
        core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    }
    assert_eq!(script.calls(), 3);

    // Open: nothing reaches the server, and the error says which method and why.
    for _ in 0..5 {
        let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(
            err.message().contains("circuit breaker for /test.Echo/Unary is open: 3 consecutive failures (last: Unavailable)"),
            "{}",
            err.message()
        );
    }
    assert_eq!(script.calls(), 3, "an open breaker sends nothing");
    assert!(matches!(state(), BreakerState::Open { .. }));

    // After open_timeout: exactly half_open_max_calls (2) probes pass.
    tokio::time::advance(Duration::from_secs(10)).await;
    down.store(false, Ordering::SeqCst);
    gate.forget_permits(1000);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let core = core.clone();
            tokio::spawn(async move { core.unary::<Echo, Echo>(0, echo("probe")).await })
        })
        .collect();
    while script.calls() < 5 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(script.calls(), 5, "3 before + 2 probes");
    assert!(matches!(
        state(),
        BreakerState::HalfOpen {
            probes_admitted: 2,
            ..
        }
    ));
    gate.add_permits(1000);
    let results: Vec<_> = futures_util::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 2, "the two probes succeed, the other three fail fast");
    assert_eq!(state(), BreakerState::Closed);
    core.unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_for_longer() {
    let down = Arc::new(AtomicBool::new(true));
    let script = flaky(down, Arc::new(Semaphore::new(1000)));
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![with_breaker(None, 3)], None),
    );
    for _ in 0..3 {
        core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    core.unary::<Echo, Echo>(0, echo("probe"))
        .await
        .unwrap_err();
    assert_eq!(script.calls(), 4);
    match core.state().breaker("unary").unwrap().state() {
        BreakerState::Open { reason, remaining } => {
            assert_eq!(
                reason,
                TripReason::ProbeFailed {
                    code: Code::Unavailable
                }
            );
            assert_eq!(remaining, Duration::from_secs(20), "open time doubled");
        }
        other => panic!("{other:?}"),
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(script.calls(), 4, "still open after the first 10s");
}

#[tokio::test(start_paused = true)]
async fn rate_rule_waits_for_min_calls() {
    let down = Arc::new(AtomicBool::new(true));
    let script = flaky(down, Arc::new(Semaphore::new(1000)));
    let rule = RateRule::new(0.5, Duration::from_secs(10), 10);
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![with_breaker(Some(rule), 100)], None),
    );
    for _ in 0..9 {
        core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    }
    assert_eq!(
        core.state().breaker("Unary").unwrap().state(),
        BreakerState::Closed,
        "9 calls < min_calls"
    );
    core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(script.calls(), 10);
    match core.state().breaker("Unary").unwrap().state() {
        BreakerState::Open { reason, .. } => assert_eq!(
            reason,
            TripReason::FailureRate {
                failures: 10,
                calls: 10,
                window: Duration::from_secs(10)
            }
        ),
        other => panic!("{other:?}"),
    }
}

/// Errors that are not failure codes (the backend answered) do not trip it.
#[tokio::test(start_paused = true)]
async fn non_failure_codes_keep_it_closed() {
    let script = Script::unary(|_, _| async { Err(Status::invalid_argument("bad input")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![with_breaker(None, 2)], None),
    );
    for _ in 0..10 {
        let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    assert_eq!(script.calls(), 10);
}

fn probing_once(threshold: u32) -> BreakerPolicy {
    BreakerPolicy::new(
        threshold,
        Duration::from_secs(1),
        Duration::from_secs(1),
        1,
        CodeSet(1 << Code::Unavailable as u32),
    )
}

/// A half-open probe whose call is dropped (a caller's timeout around it) never
/// reports; its slot is released, so the breaker does not stay half-open,
/// refusing every call, for good.
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_releases_its_slot() {
    let script = Script::unary(|i, _| async move {
        match i {
            0 => Err(Status::unavailable("down")),
            1 => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(echo("too slow to matter"))
            }
            _ => Ok(echo("healthy")),
        }
    });
    let policy = unary_method().with_breaker(probing_once(1));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let state = || core.state().breaker("Unary").unwrap().state();
    core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert!(matches!(state(), BreakerState::Open { .. }));
    tokio::time::advance(Duration::from_secs(1)).await;

    let probe = core.unary::<Echo, Echo>(0, echo("probe"));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), probe)
            .await
            .is_err()
    );
    assert_eq!(script.calls(), 2, "the probe reached the server");

    // The next call, after at most one more open period, probes and closes it.
    let mut reply = core.unary::<Echo, Echo>(0, echo("x")).await;
    if reply.is_err() {
        tokio::time::advance(Duration::from_secs(1)).await;
        reply = core.unary::<Echo, Echo>(0, echo("x")).await;
    }
    assert_eq!(reply.unwrap().into_inner().msg, "healthy");
    assert_eq!(state(), BreakerState::Closed);
}

/// A server stream that fails in the middle is a failure for the breaker: its
/// final status counts, not its headers.
#[tokio::test(start_paused = true)]
async fn a_stream_failing_midway_counts_as_a_failure() {
    let script = Script::streaming(|_| async {
        Ok(vec![Ok(echo("first")), Err(Status::unavailable("lost it"))])
    });
    let policy = stream_method().with_breaker(probing_once(1));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let mut stream = open_stream(&core).await;
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "first");
    assert_eq!(
        core.state().breaker("Stream").unwrap().state(),
        BreakerState::Closed
    );
    assert_eq!(
        stream.message().await.unwrap_err().code(),
        Code::Unavailable
    );
    assert!(matches!(
        core.state().breaker("Stream").unwrap().state(),
        BreakerState::Open { .. }
    ));
}

/// A stream's successful end closes a half-open breaker; a stream dropped before
/// its end counts as neither and gives its probe slot back.
#[tokio::test(start_paused = true)]
async fn a_stream_probe_reports_at_its_end() {
    let script = Script::streaming(|i| async move {
        if i == 0 {
            Err(Status::unavailable("down"))
        } else {
            Ok(vec![Ok(echo("a")), Ok(echo("b"))])
        }
    });
    let policy = stream_method().with_breaker(probing_once(1));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let state = || core.state().breaker("Stream").unwrap().state();
    core.server_streaming::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;

    let dropped = open_stream(&core).await;
    assert!(matches!(state(), BreakerState::HalfOpen { .. }));
    drop(dropped);
    let mut stream = core
        .server_streaming::<Echo, Echo>(0, echo("x"))
        .await
        .expect("the dropped probe gave its slot back")
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    assert_eq!(state(), BreakerState::Closed);
}

/// A deadline that passes while the attempt is still waiting for a connection
/// is not the server's failure: nothing was sent, so the breaker stays closed.
#[tokio::test(start_paused = true)]
async fn a_deadline_while_waiting_for_a_connection_is_no_breaker_failure() {
    // A backend whose connection never completes.
    let never = |_address: String| std::future::pending::<std::io::Result<BoxIo>>();
    let channel = Channel::builder(Endpoints::one("unreachable.test:80"))
        .connector(never)
        .build()
        .unwrap();
    let mut breaker = probing_once(1);
    breaker.failure_codes =
        CodeSet(1 << Code::Unavailable as u32 | 1 << Code::DeadlineExceeded as u32);
    let policy = unary_method()
        .with_timeout(Duration::from_millis(100))
        .with_breaker(breaker);
    let core = ClientCore::new(channel, service(vec![policy], None));
    for _ in 0..3 {
        let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    }
    assert_eq!(
        core.state().breaker("Unary").unwrap().state(),
        BreakerState::Closed
    );
}

/// Breakers and the retry throttle protect a backend, not a client object: two
/// clients of one policy over channels to the same address share them (A6 keys
/// throttling by server name), so a client built per request still trips.
#[tokio::test]
async fn clients_of_one_policy_to_one_target_share_breakers_and_throttle() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let addr = script.serve_tcp().await;
    let policy = service(
        vec![unary_method().with_breaker(probing_once(2))],
        Some(ThrottlePolicy::new(10, 0.1)),
    );
    let client = || ClientCore::new(Channel::to(addr.to_string()).unwrap(), policy);
    client()
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    client()
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    let third = client();
    assert!(matches!(
        third.state().breaker("Unary").unwrap().state(),
        BreakerState::Open { .. }
    ));
    let err = third.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert!(err.message().contains("circuit breaker"), "{err}");
    assert_eq!(script.calls(), 2);
    assert!(std::sync::Arc::ptr_eq(
        &third.state().throttle().unwrap(),
        &client().state().throttle().unwrap()
    ));
}
