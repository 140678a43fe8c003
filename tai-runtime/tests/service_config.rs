//! A run-time gRPC service config over a client's compiled policy: what it changes,
//! what it refuses (changing nothing), and the precedence of compiled < run-time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{Echo, Script, echo, service, stream_method, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::policy::{CodeSet, MethodPolicy, RetryPolicy};
use tai_runtime::{BreakerState, ClientState, Code, ServiceConfig, Status};

fn retrying(max_attempts: u32) -> MethodPolicy {
    unary_method()
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy::new(
            max_attempts,
            Duration::from_millis(10),
            Duration::from_millis(10),
            1.0,
            CodeSet::of(&[Code::Unavailable]),
        ))
}

fn config(json: &str) -> ServiceConfig {
    json.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// A methodConfig entry for `name` with `body` beside it.
fn entry(name: &str, body: &str) -> String {
    format!(r#"{{"methodConfig": [{{"name": [{name}], {body}}}]}}"#)
}

const UNARY: &str = r#"{"service": "test.Echo", "method": "Unary"}"#;

fn retry_policy(attempts: u32, codes: &str) -> String {
    format!(
        r#""retryPolicy": {{"maxAttempts": {attempts}, "initialBackoff": "0.02s",
            "maxBackoff": "0.5s", "backoffMultiplier": 3, "retryableStatusCodes": [{codes}]}}"#
    )
}

fn attempts(state: &ClientState, index: usize) -> Option<u32> {
    state.method_policy(index).retry.map(|r| r.max_attempts)
}

#[test]
fn a_config_overrides_the_compiled_policy_field_by_field() {
    let state = ClientState::new(service(vec![retrying(2)], None));
    assert_eq!(attempts(&state, 0), Some(2));
    state
        .set_service_config(&config(&entry(UNARY, &retry_policy(4, r#""UNAVAILABLE""#))))
        .unwrap();
    let p = state.method_policy(0);
    let retry = p.retry.unwrap();
    assert_eq!(retry.max_attempts, 4);
    assert_eq!(retry.initial_backoff, Duration::from_millis(20));
    assert_eq!(retry.multiplier, 3.0);
    // What the config does not mention stays compiled.
    assert_eq!(p.timeout, Some(Duration::from_secs(5)));
    assert_eq!(p.path, "/test.Echo/Unary");
    drop(p);

    // A new config replaces the last one whole, over the compiled policy.
    state
        .set_service_config(&config(&entry(UNARY, r#""timeout": "0.25s""#)))
        .unwrap();
    assert_eq!(attempts(&state, 0), Some(2));
    assert_eq!(
        state.method_policy(0).timeout,
        Some(Duration::from_millis(250))
    );
    state.clear_service_config();
    assert_eq!(state.method_policy(0).timeout, Some(Duration::from_secs(5)));
}

#[test]
fn an_invalid_config_changes_nothing_and_says_why() {
    let state = ClientState::new(service(vec![retrying(2)], None));
    state
        .set_service_config(&config(&entry(UNARY, &retry_policy(3, r#""UNAVAILABLE""#))))
        .unwrap();
    let refuse = |json: &str| {
        let err = state.set_service_config(&config(json)).unwrap_err();
        assert_eq!(attempts(&state, 0), Some(3), "unchanged after {json}");
        err.to_string()
    };
    // The compiled method is not idempotent here: retrying on ABORTED is unsafe.
    let not_idempotent = ClientState::new(service(vec![retrying(2).with_idempotent(false)], None));
    let err = not_idempotent
        .set_service_config(&config(&entry(UNARY, &retry_policy(3, r#""ABORTED""#))))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "methodConfig[0].retryPolicy.retryableStatusCodes: /test.Echo/Unary: retries a method \
         that is not marked idempotent on ABORTED, which does not prove the server never ran \
         it; mark the method idempotent or retry only on UNAVAILABLE"
    );
    // ...unless the config marks it idempotent.
    let json = entry(
        UNARY,
        &format!(
            r#"{}, "tai": {{"idempotent": true}}"#,
            retry_policy(3, r#""ABORTED""#)
        ),
    );
    not_idempotent.set_service_config(&config(&json)).unwrap();

    let err = refuse(r#"{"tai": {"balancer": "random"}}"#);
    assert!(
        err.starts_with("tai.balancer: cannot change at run time"),
        "{err}"
    );
    let err = refuse(&entry(
        UNARY,
        r#""retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "0.5s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}"#,
    ));
    assert!(
        err.starts_with("methodConfig[0].retryPolicy.initialBackoff: /test.Echo/Unary: is 1s, larger than max_backoff 500ms"),
        "{err}"
    );
}

#[test]
fn entries_apply_as_grpc_picks_them() {
    let state = ClientState::new(service(vec![retrying(2), stream_method()], None));
    let json = r#"{"methodConfig": [
        {"name": [{}], "timeout": "3s"},
        {"name": [{"service": "test.Echo"}], "timeout": "2s"},
        {"name": [{"service": "test.Echo", "method": "Unary"}], "timeout": "1s"}]}"#;
    state.set_service_config(&config(json)).unwrap();
    assert_eq!(state.method_policy(0).timeout, Some(Duration::from_secs(1)));
    assert_eq!(state.method_policy(1).timeout, Some(Duration::from_secs(2)));
    // Entries for other services apply to none of this client's methods.
    let other = r#"{"methodConfig": [{"name": [{"service": "other.Svc"}], "timeout": "9s"}]}"#;
    state.set_service_config(&config(other)).unwrap();
    assert_eq!(state.method_policy(0).timeout, Some(Duration::from_secs(5)));
}

/// The point of a run-time config: a live client's retry policy changes, and the very
/// next call follows it — against a real tonic server that is always UNAVAILABLE.
#[tokio::test(start_paused = true)]
async fn a_live_clients_retry_policy_changes_and_the_next_call_follows_it() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let core = ClientCore::new(script.serve_in_memory(), service(vec![retrying(2)], None));
    let call = || core.unary_retry::<Echo, Echo>(0, echo("x"));

    assert_eq!(call().await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(script.calls(), 2, "the compiled policy: 2 attempts");

    core.state()
        .set_service_config(&config(&entry(UNARY, &retry_policy(4, r#""UNAVAILABLE""#))))
        .unwrap();
    assert_eq!(call().await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(script.calls(), 2 + 4, "the run-time policy: 4 attempts");

    // An invalid config changes nothing: still 4.
    let unsafe_retry = entry(
        UNARY,
        &format!(
            r#"{}, "tai": {{"idempotent": false}}"#,
            retry_policy(2, r#""ABORTED""#)
        ),
    );
    assert!(
        core.state()
            .set_service_config(&config(&unsafe_retry))
            .is_err()
    );
    call().await.unwrap_err();
    assert_eq!(script.calls(), 6 + 4);

    // Back to the compiled policy.
    core.state().clear_service_config();
    call().await.unwrap_err();
    assert_eq!(script.calls(), 10 + 2);
}

/// A run-time timeout is the call's deadline and is sent as `grpc-timeout`; a caller's
/// own `Request::set_timeout` still wins over it.
#[tokio::test(start_paused = true)]
async fn a_run_time_timeout_is_sent_and_a_callers_wins() {
    let script = Script::unary(|_, _| async { Ok(echo("ok")) });
    let core = ClientCore::new(script.serve_in_memory(), service(vec![retrying(2)], None));
    core.state()
        .set_service_config(&config(&entry(UNARY, r#""timeout": "0.25s""#)))
        .unwrap();
    core.unary_retry::<Echo, Echo>(0, echo("x")).await.unwrap();
    let mut request = tonic::Request::new(echo("x"));
    request.set_timeout(Duration::from_millis(70));
    core.unary_retry::<Echo, Echo>(0, request).await.unwrap();
    let sent: Vec<Option<Duration>> = script.seen().iter().map(|s| s.grpc_timeout).collect();
    assert_eq!(
        sent,
        [
            Some(Duration::from_millis(250)),
            Some(Duration::from_millis(70))
        ]
    );
}

/// The generated client calls a method compiled without retry or hedging through
/// `ClientCore::unary` / `server_streaming`; a run-time config that gives it a
/// retry or hedging policy is followed by the next call, and clearing it sends
/// calls once again.
#[tokio::test(start_paused = true)]
async fn a_method_compiled_without_retry_gains_retry_and_hedging_at_run_time() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![unary_method()], None),
    );
    let call = || core.unary::<Echo, Echo>(0, echo("x"));
    assert_eq!(call().await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(script.calls(), 1, "compiled: one attempt");

    core.state()
        .set_service_config(&config(&entry(UNARY, &retry_policy(3, r#""UNAVAILABLE""#))))
        .unwrap();
    assert!(core.state().method_policy_view("Unary").unwrap().configured);
    assert_eq!(call().await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(
        script.calls(),
        1 + 3,
        "the run-time retry policy: 3 attempts"
    );
    let previous: Vec<Option<String>> = script
        .seen()
        .into_iter()
        .map(|s| s.previous_attempts)
        .collect();
    assert_eq!(previous[1..], [None, Some("1".into()), Some("2".into())]);

    let hedging = r#""hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.1s",
        "nonFatalStatusCodes": ["UNAVAILABLE"]}"#;
    core.state()
        .set_service_config(&config(&entry(UNARY, hedging)))
        .unwrap();
    assert_eq!(call().await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(
        script.calls(),
        4 + 2,
        "the run-time hedging policy: 2 attempts"
    );

    core.state().clear_service_config();
    call().await.unwrap_err();
    assert_eq!(script.calls(), 6 + 1, "compiled again: one attempt");

    // A server-streaming method gains retry the same way.
    let script = Script::streaming(|_| async { Err(Status::unavailable("down")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![stream_method()], None),
    );
    let stream = r#"{"service": "test.Echo", "method": "Stream"}"#;
    core.state()
        .set_service_config(&config(&entry(
            stream,
            &retry_policy(2, r#""UNAVAILABLE""#),
        )))
        .unwrap();
    let err = core
        .server_streaming::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(script.calls(), 2);
}

/// A server that answers UNAVAILABLE ("down"), a second late to the call it
/// sees `slow`-th: the call a test keeps in flight across a swap.
fn down_and_slow_at(slow: usize) -> Script {
    Script::unary(move |i, _| async move {
        if i == slow {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(Status::unavailable("down"))
    })
}

/// Sets the config `json` on `state` once the server has seen `calls` calls.
async fn set_once_seen(script: &Script, calls: usize, state: &ClientState, json: &str) {
    while script.calls() < calls {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    state.set_service_config(&config(json)).unwrap();
}

const THROTTLE_3: &str = r#"{"retryThrottling": {"maxTokens": 3, "tokenRatio": 0.5},
    "methodConfig": [{"name": [{"service": "test.Echo"}], "timeout": "30s"}]}"#;

/// `retryThrottling` at run time: a new, full bucket replaces the client's
/// (compiled: none here), and the calls that follow are throttled by it; a call
/// in flight across a later swap makes its decisions with the bucket it started
/// with, and ends with the server's status (it is not dropped).
#[tokio::test(start_paused = true)]
async fn retry_throttling_set_at_run_time_replaces_the_throttle() {
    let script = down_and_slow_at(2);
    let core = ClientCore::new(script.serve_in_memory(), service(vec![retrying(4)], None));
    assert!(core.state().throttle().is_none());
    core.state()
        .set_service_config(&config(THROTTLE_3))
        .unwrap();
    let first = core.state().throttle().expect("the config's throttle");
    assert_eq!(first.tokens(), 3.0, "a new bucket starts full");

    // 3 tokens, throttled at or below 1.5: the second failure stops the retries.
    let call = || core.unary_retry::<Echo, Echo>(0, echo("x"));
    assert_eq!(call().await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(script.calls(), 2, "throttled after two attempts, not four");
    assert_eq!(first.tokens(), 1.0);

    // A call in flight while a new config (a new full bucket) goes in.
    let swap = set_once_seen(&script, 3, core.state(), THROTTLE_3);
    let (in_flight, ()) = tokio::join!(call(), swap);
    assert_eq!(in_flight.unwrap_err().message(), "down", "not dropped");
    assert_eq!(
        script.calls(),
        3,
        "the old, throttled bucket decided: no retry"
    );
    assert_eq!(first.tokens(), 0.0, "its failure counted in the old bucket");
    let second = core.state().throttle().unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(second.tokens(), 3.0, "the new bucket is untouched");

    // The next call runs under the new bucket: two attempts again.
    call().await.unwrap_err();
    assert_eq!(script.calls(), 3 + 2);
    assert_eq!(second.tokens(), 1.0);
}

/// A method whose compiled breaker opens at its first UNAVAILABLE.
fn breaking() -> MethodPolicy {
    unary_method().with_breaker(tai_runtime::policy::BreakerPolicy::new(
        1,
        Duration::from_secs(10),
        Duration::from_secs(60),
        1,
        CodeSet::of(&[Code::Unavailable]),
    ))
}

/// A breaker set at run time: the config builds the method a new breaker, closed,
/// which trips by its own policy. A call the compiled breaker admitted before the
/// swap finishes (it is not dropped) and reports its failure to the compiled
/// breaker, which opens; the new one is untouched by it. Clearing the config
/// returns the client to the compiled breaker, in the state it reached.
#[tokio::test(start_paused = true)]
async fn a_breaker_set_at_run_time_replaces_the_methods_breaker() {
    let script = down_and_slow_at(0);
    let core = ClientCore::new(script.serve_in_memory(), service(vec![breaking()], None));
    let compiled = core.state().breaker("Unary").unwrap();
    let call = || core.unary::<Echo, Echo>(0, echo("x"));
    let two = entry(UNARY, r#""tai": {"breaker": {"failure_threshold": 2}}"#);

    // The first call is admitted by the compiled breaker, then the config swaps.
    let swap = set_once_seen(&script, 1, core.state(), &two);
    let (in_flight, ()) = tokio::join!(call(), swap);
    assert_eq!(in_flight.unwrap_err().message(), "down", "not dropped");
    let configured = core.state().breaker("Unary").unwrap();
    assert!(!Arc::ptr_eq(&compiled, &configured));
    assert_eq!(configured.policy().failure_threshold, 2);

    assert!(
        matches!(compiled.state(), BreakerState::Open { .. }),
        "the call in flight failed into the breaker that admitted it"
    );
    assert_eq!(configured.state(), BreakerState::Closed);

    // Two failures trip the new breaker; the next call fails fast.
    call().await.unwrap_err();
    assert_eq!(configured.state(), BreakerState::Closed);
    call().await.unwrap_err();
    assert!(matches!(configured.state(), BreakerState::Open { .. }));
    let err = call().await.unwrap_err();
    assert!(err.message().contains("circuit breaker"), "{err}");
    assert_eq!(script.calls(), 3);

    // Cleared: the compiled breaker again, still open.
    core.state().clear_service_config();
    assert!(Arc::ptr_eq(
        &core.state().breaker("Unary").unwrap(),
        &compiled
    ));
    let err = call().await.unwrap_err();
    assert!(err.message().contains("circuit breaker"), "{err}");
    assert_eq!(script.calls(), 3);
}

/// The method's `breaker_open` gauge shows the breaker in use: a config's new
/// breaker, closed, while the config is in place; the compiled one's state again
/// once it is cleared.
#[tokio::test(start_paused = true)]
async fn the_breaker_open_gauge_follows_the_breaker_in_use() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = tai_runtime::metrics::Metrics::new(&mut registry);
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let policy = service(vec![breaking()], None);
    let core = ClientCore::with_metrics(script.serve_in_memory(), policy, &metrics);
    let open = || {
        let text = metrics.encode();
        let gauge = r#"tai_breaker_open{service="test.Echo",method="Unary"} "#;
        text.lines()
            .find_map(|l| l.strip_prefix(gauge).map(str::to_owned))
            .unwrap_or_else(|| panic!("no breaker gauge in {text}"))
    };
    core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(open(), "1", "the compiled breaker opened");
    let two = entry(UNARY, r#""tai": {"breaker": {"failure_threshold": 2}}"#);
    core.state().set_service_config(&config(&two)).unwrap();
    assert_eq!(open(), "0", "the config's breaker, closed");
    core.state().clear_service_config();
    assert_eq!(open(), "1", "the compiled breaker, still open");
}
