//! gRFC A6 hedging, against a real tonic server.

mod support;

use std::time::Duration;

use support::{Echo, Script, echo, service, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::policy::{CodeSet, HedgingPolicy, MethodPolicy};
use tokio::time::Instant;
use tonic::{Code, Status};

fn hedged() -> MethodPolicy {
    MethodPolicy {
        hedging: Some(HedgingPolicy {
            max_attempts: 3,
            delay: Duration::from_millis(100),
            non_fatal: CodeSet(1 << Code::Unavailable as u32),
        }),
        ..unary_method()
    }
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
    let reply = core.unary_retry::<Echo, Echo>(0, echo("x")).await.unwrap();
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
    let reply = core.unary_retry::<Echo, Echo>(0, echo("x")).await.unwrap();
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
