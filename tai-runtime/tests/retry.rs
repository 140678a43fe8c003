//! gRFC A6 retry against a real tonic server: grpc-go's tables, caps, pushback,
//! throttling, the attempts header and commit rules.

mod support;

use std::time::Duration;

use support::raw_h2::{Answer, H2Server};
use support::{Echo, Script, echo, grpc_go, service, stream_method, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::policy::{CodeSet, MethodPolicy, RetryPolicy, ThrottlePolicy};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

fn codes(codes: &[Code]) -> CodeSet {
    CodeSet(codes.iter().fold(0, |bits, c| bits | 1 << *c as u32))
}

fn retrying(max_attempts: u32, retryable: &[Code]) -> MethodPolicy {
    unary_method().with_retry(RetryPolicy::new(
        max_attempts,
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
        codes(retryable),
    ))
}

fn status_with_pushback(values: &[&'static str]) -> Status {
    let mut status = Status::unavailable("pushed back");
    for v in values {
        status
            .metadata_mut()
            .append("grpc-retry-pushback-ms", MetadataValue::from_static(v));
    }
    status
}

/// grpc-go `TestRetryUnary`: max_attempts 4, ALREADY_EXISTS retryable.
#[tokio::test(start_paused = true)]
async fn grpc_go_retry_unary_table() {
    run_through_the_engine(grpc_go::retry_unary()).await;
}

/// A table of grpc-go's (`support/grpc_go.rs`) through the generated client's
/// engine: a real tonic server in memory, the table's policy compiled in.
async fn run_through_the_engine(table: grpc_go::Table) {
    let script = Script::answering(table.answer);
    let method = unary_method().with_retry(table.retry);
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![method], table.throttle),
    );
    core.state().seed_jitter(1);
    table
        .run(
            || async { grpc_go::code_of(&core.unary_retry::<Echo, Echo>(0, echo("x")).await) },
            || script.calls(),
            || {
                core.state()
                    .throttle()
                    .expect("the table's throttle")
                    .tokens()
            },
        )
        .await;
}

#[tokio::test(start_paused = true)]
async fn attempts_are_capped_at_five() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![retrying(8, &[Code::Unavailable])], None),
    );
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(script.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn unlisted_code_is_not_retried() {
    let script = Script::unary(|_, _| async { Err(Status::aborted("conflict")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![retrying(4, &[Code::Unavailable])], None),
    );
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(script.calls(), 1);
}

/// A refusal is final: the same credentials would be refused again. A policy
/// that lists UNAUTHENTICATED (a service config can) does not change that.
#[tokio::test(start_paused = true)]
async fn unauthenticated_is_never_retried_even_when_listed() {
    let script = Script::unary(|_, _| async { Err(Status::unauthenticated("token expired")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(
            vec![retrying(4, &[Code::Unauthenticated, Code::Unavailable])],
            None,
        ),
    );
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "token expired");
    assert_eq!(script.calls(), 1, "retried a refusal");
}

#[tokio::test(start_paused = true)]
async fn attempts_header_counts_previous_attempts() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![retrying(4, &[Code::Unavailable])], None),
    );
    core.unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    let headers: Vec<Option<String>> = script
        .seen()
        .into_iter()
        .map(|s| s.previous_attempts)
        .collect();
    assert_eq!(
        headers,
        vec![None, Some("1".into()), Some("2".into()), Some("3".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn pushback_stops_or_delays_retries() {
    for (values, expected_calls) in [(&["-1"][..], 1), (&["xxx"][..], 1), (&["100", "10"][..], 1)] {
        let script = Script::unary(move |_, _| async move { Err(status_with_pushback(values)) });
        let core = ClientCore::new(
            script.serve_in_memory(),
            service(vec![retrying(4, &[Code::Unavailable])], None),
        );
        let err = core
            .unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(script.calls(), expected_calls, "pushback {values:?}");
    }

    // "1000": the retry waits exactly one second, not the 10ms backoff.
    let script = Script::unary(|i, _| async move {
        if i == 0 {
            Err(status_with_pushback(&["1000"]))
        } else {
            Ok(echo("late"))
        }
    });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![retrying(4, &[Code::Unavailable])], None),
    );
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "late");
    let seen = script.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_millis(1005),
        "retried after {gap:?}"
    );
}

/// grpc-go `TestRetryThrottling`: max_tokens 10, token_ratio 0.5, 12 calls.
#[tokio::test(start_paused = true)]
async fn grpc_go_retry_throttling_trace() {
    run_through_the_engine(grpc_go::retry_throttling()).await;
}

/// A stream whose headers arrived is committed: an error after them is final.
#[tokio::test(start_paused = true)]
async fn stream_is_committed_once_headers_arrive() {
    let script = Script::streaming(|i| async move {
        match i {
            // Fails before headers: a trailers-only response, retried.
            0 => Err(Status::unavailable("not yet")),
            // Headers and one message, then UNAVAILABLE: committed, not retried.
            _ => Ok(vec![
                Ok(echo("first")),
                Err(Status::unavailable("mid-stream")),
            ]),
        }
    });
    let mut policy = stream_method();
    policy.retry = retrying(4, &[Code::Unavailable]).retry;
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let mut stream = core
        .server_streaming_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "first");
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(script.calls(), 2, "one retry before headers, none after");
}

/// The retried request is the same message on every attempt.
#[tokio::test(start_paused = true)]
async fn every_attempt_sends_the_same_request() {
    let script = Script::unary(|i, req: Echo| async move {
        assert_eq!(req.msg, "payload");
        if i < 2 {
            Err(Status::unavailable("again"))
        } else {
            Ok(Echo { n: i as u32, ..req })
        }
    });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![retrying(4, &[Code::Unavailable])], None),
    );
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("payload"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.msg.as_str(), reply.n), ("payload", 2));
}

/// Over real loopback TCP (wall clock, no paused time): the same engine works on
/// a network socket, and a refused connection is UNAVAILABLE, which retries.
#[tokio::test]
async fn retries_over_loopback_tcp() {
    let script = Script::unary(|i, _| async move {
        if i == 0 {
            Err(Status::unavailable("warming up"))
        } else {
            Ok(echo("tcp"))
        }
    });
    let addr = script.serve_tcp().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let core = ClientCore::new(
        channel,
        service(vec![retrying(3, &[Code::Unavailable])], None),
    );
    assert_eq!(
        core.unary_retry::<Echo, Echo>(0, echo("x"))
            .await
            .unwrap()
            .into_inner()
            .msg,
        "tcp"
    );
    assert_eq!(script.calls(), 2);

    // Nothing listens on port 1: connecting fails, which is UNAVAILABLE.
    let dead = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    let core = ClientCore::new(dead, service(vec![retrying(2, &[Code::Unavailable])], None));
    let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

/// Hand-built policies are checked by the same rules as compiled ones.
#[test]
fn hand_built_policies_validate_like_compiled_ones() {
    let good = service(vec![retrying(4, &[Code::Unavailable])], None);
    assert_eq!(good.validate(), Ok(()));
    let mut bad_retry = retrying(1, &[Code::Unavailable]);
    bad_retry.idempotent = false;
    bad_retry.retry.as_mut().unwrap().retryable = codes(&[Code::Aborted]);
    let bad = service(vec![bad_retry], Some(ThrottlePolicy::new(0, 0.5)));
    let problems: Vec<String> = bad
        .validate()
        .unwrap_err()
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "/test.Echo/Unary: throttle(max_tokens): is 0, but must be in 1..=1000",
            "/test.Echo/Unary: retry(max_attempts): is 1, but must be at least 2",
        ]
    );
    // Cross-field rules run once the fields themselves are valid.
    let mut unsafe_retry = retrying(3, &[Code::Aborted]);
    unsafe_retry.idempotent = false;
    let error = service(vec![unsafe_retry], None).validate().unwrap_err();
    assert!(
        error.problems()[0]
            .to_string()
            .contains("not marked idempotent on ABORTED"),
        "{error}"
    );
}

fn throttled(max_tokens: u32) -> Option<ThrottlePolicy> {
    Some(ThrottlePolicy::new(max_tokens, 0.1))
}

/// tonic 0.14 panics on a `grpc-status-details-bin` that is not base64; tai drops
/// the header, keeps the status, and retries it like any UNAVAILABLE.
#[tokio::test(start_paused = true)]
async fn status_details_that_are_not_base64_do_not_panic() {
    let server = H2Server::new(|i| match i {
        0 => Answer::TrailersOnly(vec![
            ("grpc-status", "14"),
            ("grpc-message", "try again"),
            ("grpc-status-details-bin", "!!!"),
        ]),
        _ => Answer::ok("second"),
    });
    let core = ClientCore::new(
        server.channel(),
        service(vec![retrying(3, &[Code::Unavailable])], None),
    );
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "second");
    assert_eq!(server.streams(), 2);

    // The same status in trailers, after a message: committed, so not retried,
    // and still no panic.
    let server = H2Server::new(|_| Answer::Grpc {
        delay: Duration::ZERO,
        message: "m",
        trailers: vec![
            ("grpc-status", "14"),
            ("grpc-message", "late"),
            ("grpc-status-details-bin", "!!!"),
        ],
    });
    let core = ClientCore::new(
        server.channel(),
        service(vec![retrying(3, &[Code::Unavailable])], None),
    );
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!(err.message(), "late");
    assert_eq!(server.streams(), 1);
}

/// A proxy's HTTP 503 page (no `grpc-status`) is UNAVAILABLE before any body, as
/// grpc-go maps it: retryable, not a committed INTERNAL.
#[tokio::test(start_paused = true)]
async fn an_http_error_page_is_retried_like_unavailable() {
    let server = H2Server::new(|i| match i {
        0 => Answer::Http(503, "text/html", "<html>no healthy upstream</html>"),
        _ => Answer::ok("through"),
    });
    let core = ClientCore::new(
        server.channel(),
        service(vec![retrying(3, &[Code::Unavailable])], None),
    );
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "through");
    assert_eq!(server.streams(), 2);

    // Without a retry policy the caller sees grpc-go's code and what happened.
    let server = H2Server::new(|_| Answer::Http(404, "text/html", "<html>not here</html>"));
    let core = ClientCore::new(server.channel(), service(vec![unary_method()], None));
    let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    assert!(err.message().contains("HTTP 404"), "{err}");
}

/// gRFC A6 transparent retry: a stream the server refused (REFUSED_STREAM) was
/// never processed, so it is sent again even without a retry policy, costing no
/// attempt and no throttle token.
#[tokio::test(start_paused = true)]
async fn a_refused_stream_is_retried_transparently() {
    let server = H2Server::new(|i| match i {
        0 => Answer::Refuse,
        _ => Answer::ok("accepted"),
    });
    let core = ClientCore::new(server.channel(), service(vec![unary_method()], None));
    let reply = core
        .unary::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "accepted");
    assert_eq!(server.streams(), 2);

    // Under a retry policy with throttling: no token spent, no attempt counted.
    let server = H2Server::new(|i| match i {
        0 => Answer::Refuse,
        _ => Answer::ok("accepted"),
    });
    let core = ClientCore::new(
        server.channel(),
        service(vec![retrying(2, &[Code::Unavailable])], throttled(10)),
    );
    let reply = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "accepted");
    assert_eq!(core.state().throttle().unwrap().tokens(), 10.0);
}
