//! A run-time gRPC service config over a client's compiled policy: what it changes,
//! what it refuses (changing nothing), and the precedence of compiled < run-time.

mod support;

use std::time::Duration;

use support::{Echo, Script, echo, service, stream_method, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::policy::{CodeSet, MethodPolicy, RetryPolicy};
use tai_runtime::{ClientState, Code, ServiceConfig, Status};

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

    let err = refuse(&entry(
        UNARY,
        r#""tai": {"breaker": {"failure_threshold": 2}}"#,
    ));
    assert!(
        err.starts_with(
            "methodConfig[0].tai.breaker: /test.Echo/Unary: cannot change at run time yet"
        ),
        "{err}"
    );
    let err = refuse(r#"{"retryThrottling": {"maxTokens": 5, "tokenRatio": 1}}"#);
    assert!(
        err.starts_with("retryThrottling: cannot change at run time yet"),
        "{err}"
    );
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
fn a_method_compiled_without_retry_cannot_gain_it_at_run_time() {
    let state = ClientState::new(service(vec![unary_method()], None));
    let err = state
        .set_service_config(&config(&entry(UNARY, &retry_policy(3, r#""UNAVAILABLE""#))))
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "methodConfig[0].retryPolicy: /test.Echo/Unary: was compiled without retry or hedging"
        ),
        "{err}"
    );
    // A timeout it can gain.
    state
        .set_service_config(&config(&entry(UNARY, r#""timeout": "1s""#)))
        .unwrap();
    assert_eq!(state.method_policy(0).timeout, Some(Duration::from_secs(1)));
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
