//! gRFC A6 hedging, against a real tonic server.

mod support;

use std::time::Duration;

use support::raw_h2::{Answer, H2Server};
use support::{Echo, Script, echo, service, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::policy::{BreakerPolicy, CodeSet, HedgingPolicy, MethodPolicy, ThrottlePolicy};
use tokio::time::Instant;
use tonic::{Code, Status};

fn hedged() -> MethodPolicy {
    unary_method().with_hedging(HedgingPolicy::new(
        3,
        Duration::from_millis(100),
        CodeSet(1 << Code::Unavailable as u32),
    ))
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_overtaken() {
    let script = Script::unary(|i, _| async move {
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(echo("slow"))
        } else {
            Ok(echo("fast"))
        }
    });
    let core = ClientCore::new(script.serve_in_memory(), service(vec![hedged()], None));
    let start = Instant::now();
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "fast");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(script.calls(), 2);
    assert_eq!(script.seen()[1].previous_attempts.as_deref(), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn a_non_fatal_failure_starts_the_next_attempt_at_once() {
    let script = Script::unary(|i, _| async move {
        if i == 0 {
            Err(Status::unavailable("busy"))
        } else {
            Ok(echo("second"))
        }
    });
    let core = ClientCore::new(script.serve_in_memory(), service(vec![hedged()], None));
    let start = Instant::now();
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "second");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_fatal_failure_ends_the_call() {
    let script = Script::unary(|_, _| async { Err(Status::internal("broken")) });
    let core = ClientCore::new(script.serve_in_memory(), service(vec![hedged()], None));
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(script.calls(), 1);
}

/// UNAUTHENTICATED ends a hedged call even when listed as non-fatal: no
/// hedge is sent with credentials the server just refused.
#[tokio::test(start_paused = true)]
async fn unauthenticated_ends_the_call_even_when_non_fatal() {
    let script = Script::unary(|_, _| async { Err(Status::unauthenticated("no bearer token")) });
    let mut policy = hedged();
    if let Some(h) = &mut policy.hedging {
        h.non_fatal = CodeSet(1 << Code::Unavailable as u32 | 1 << Code::Unauthenticated as u32);
    }
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Past the hedging delay: a second attempt would have started by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(script.calls(), 1, "hedged after a refusal");
}

#[tokio::test(start_paused = true)]
async fn all_attempts_failing_returns_the_last_error() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let core = ClientCore::new(script.serve_in_memory(), service(vec![hedged()], None));
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(script.calls(), 3);
}

fn hedged_with(delay_ms: u64, timeout: Option<Duration>) -> MethodPolicy {
    let mut policy = unary_method().with_hedging(HedgingPolicy::new(
        3,
        Duration::from_millis(delay_ms),
        CodeSet(1 << Code::Unavailable as u32),
    ));
    policy.timeout = timeout;
    policy
}

/// Once retry throttling engages, a hedged call whose attempts have all failed
/// ends with its last failure (A6: "if there are no other already-sent hedged
/// RPCs the failure is returned"); it used to wait for a hedge that throttling
/// never let start, forever.
#[tokio::test(start_paused = true)]
async fn throttled_hedging_returns_instead_of_hanging() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(
            vec![hedged_with(100, Some(Duration::from_secs(1)))],
            Some(ThrottlePolicy::new(10, 0.1)),
        ),
    );
    for n in 0..20 {
        let start = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            core.unary_retry::<Echo, Echo>(0, echo("x")),
        )
        .await;
        let err = outcome
            .unwrap_or_else(|_| panic!("call {n} hung"))
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
            "call {n}: {err}"
        );
        assert!(start.elapsed() <= Duration::from_secs(1), "call {n}");
    }
    assert!(core.state().throttle().unwrap().is_throttled());
}

/// A pushback longer than the time left ends the call with DEADLINE_EXCEEDED
/// before its deadline, and no attempt starts after the deadline.
#[tokio::test(start_paused = true)]
async fn hedging_pushback_past_the_deadline_ends_the_call() {
    let script = Script::unary(|_, _| async {
        let mut status = Status::unavailable("come back later");
        status.metadata_mut().insert(
            "grpc-retry-pushback-ms",
            tonic::metadata::MetadataValue::from_static("10000"),
        );
        Err(status)
    });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(
            vec![hedged_with(100, Some(Duration::from_millis(200)))],
            None,
        ),
    );
    let start = Instant::now();
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(start.elapsed() <= Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(script.calls(), 1, "no attempt after the deadline");
}

/// A6 and grpc-java commit a hedged call when an attempt receives response
/// headers: no more hedges are sent once the server is answering.
#[tokio::test(start_paused = true)]
async fn hedging_commits_when_headers_arrive() {
    let server = H2Server::new(|_| Answer::Grpc {
        delay: Duration::from_millis(500),
        message: "slow but answering",
        trailers: vec![],
    });
    let core = ClientCore::new(server.channel(), service(vec![hedged_with(50, None)], None));
    let start = Instant::now();
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "slow but answering");
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(server.streams(), 1);
}

/// A hedge the breaker refuses (it opened while the first attempt was in flight)
/// stops further hedging but does not cancel the attempt already sent.
#[tokio::test(start_paused = true)]
async fn a_refused_hedge_keeps_the_attempt_in_flight() {
    let script = Script::unary(|i, _| async move {
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(echo("slow"))
        } else {
            Err(Status::unavailable("down"))
        }
    });
    let policy = hedged_with(100, None).with_breaker(BreakerPolicy::new(
        1,
        Duration::from_secs(10),
        Duration::from_secs(10),
        1,
        CodeSet(1 << Code::Unavailable as u32),
    ));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let slow = tokio::spawn({
        let core = core.clone();
        async move { core.unary_retry::<Echo, Echo>(0, echo("a")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // A second call fails and trips the breaker while the first is in flight.
    let tripped = core.unary_retry::<Echo, Echo>(0, echo("b")).await;
    assert_eq!(tripped.unwrap_err().code(), Code::Unavailable);
    assert!(matches!(
        core.state().breaker("Unary").unwrap().state(),
        tai_runtime::BreakerState::Open { .. }
    ));
    let reply = slow
        .await
        .unwrap()
        .expect("the first attempt was not cancelled")
        .into_inner();
    assert_eq!(reply.msg, "slow");
}
