//! Whole-call deadlines, against a real tonic server.

mod support;

use std::time::Duration;

use support::raw_h2::{Answer, H2Server};
use support::{Echo, Script, echo, open_stream, service, stream_method, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::policy::{CodeSet, RetryPolicy, ThrottlePolicy};
use tokio::time::Instant;
use tonic::{Code, Status};

#[tokio::test(start_paused = true)]
async fn slow_server_gets_deadline_exceeded_not_cancelled() {
    let script = Script::unary(|_, _| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(echo("too late"))
    });
    let policy = unary_method().with_timeout(Duration::from_secs(2));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let start = Instant::now();
    let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(script.seen()[0].grpc_timeout, Some(Duration::from_secs(2)));
}

/// Retries share one deadline: no attempt starts after it, and each attempt tells
/// the server only the time that is left.
#[tokio::test(start_paused = true)]
async fn retries_share_the_deadline() {
    let script = Script::unary(|_, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Err(Status::unavailable("still down"))
    });
    let policy = unary_method()
        .with_timeout(Duration::from_millis(1500))
        .with_retry(RetryPolicy::new(
            5,
            Duration::from_millis(400),
            Duration::from_millis(400),
            1.0,
            CodeSet(1 << Code::Unavailable as u32),
        ));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    core.state().seed_jitter(3);
    let start = Instant::now();
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    let deadline = start + Duration::from_millis(1500);
    let seen = script.seen();
    assert!(seen.len() >= 2, "at least one retry fits: {seen:?}");
    for s in &seen {
        assert!(
            s.at < deadline,
            "attempt {} started after the deadline",
            s.index
        );
        let left = deadline - s.at;
        let told = s.grpc_timeout.expect("grpc-timeout sent");
        assert!(
            told <= left,
            "attempt {} told {told:?} with {left:?} left",
            s.index
        );
        assert!(
            told + Duration::from_millis(1) >= left,
            "attempt {} told {told:?}, {left:?} left",
            s.index
        );
    }
    assert!(start.elapsed() <= Duration::from_millis(1500));
}

/// A deadline that passes while an attempt is in flight ends the call then.
#[tokio::test(start_paused = true)]
async fn deadline_cuts_an_attempt_short() {
    let script = Script::unary(|i, _| async move {
        if i == 0 {
            Err(Status::unavailable("once"))
        } else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(echo("never"))
        }
    });
    let policy = unary_method()
        .with_timeout(Duration::from_secs(1))
        .with_retry(RetryPolicy::new(
            3,
            Duration::from_millis(100),
            Duration::from_millis(100),
            1.0,
            CodeSet(1 << Code::Unavailable as u32),
        ));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let start = Instant::now();
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(script.calls(), 2);
}

/// With tai's server layer the server itself ends an overdue call with
/// DEADLINE_EXCEEDED (tonic alone would say CANCELLED) and drops the handler.
#[cfg(feature = "server")]
#[tokio::test(start_paused = true)]
async fn server_layer_answers_deadline_exceeded_and_stops_the_handler() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tai_runtime::channel::{Channel, Endpoints};

    let finished = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&finished);
    let script = Script::unary(move |_, _| {
        let flag = Arc::clone(&flag);
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(echo("too late"))
        }
    });
    let net = support::net::Net::default();
    let router = tonic::transport::Server::builder()
        .layer(tai_runtime::server::ServerLayer::new())
        .add_service(script.clone());
    net.serve("s:1", |incoming| async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    let channel = Channel::builder(Endpoints::one("s:1"))
        .connector(net.connector())
        .build()
        .unwrap();
    let policy = unary_method().with_timeout(Duration::from_secs(1));
    let core = ClientCore::new(channel, service(vec![policy], None));
    let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        err.message().contains("passed before the server answered"),
        "{}",
        err.message()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the handler was dropped at the deadline"
    );
    let metrics = tai_runtime::metrics::Metrics::global().encode();
    assert!(
        metrics.contains(r#"tai_server_calls_total{service="test.Echo",method="Unary",code="DeadlineExceeded"} 1"#),
        "{metrics}"
    );
    // Other tests in this binary share the process-wide client counters.
    let client_line = metrics
        .lines()
        .find(|l| l.starts_with(r#"tai_client_calls_total{service="test.Echo",method="Unary",code="DeadlineExceeded"}"#))
        .expect("client metric present");
    assert!(!client_line.ends_with(" 0"), "{client_line}");
}

/// A server holds a response stream to its caller's deadline: a stream still
/// open when it passes ends with DEADLINE_EXCEEDED in its trailers, sent by the
/// server, a millisecond early. The caller here is tonic's own client, which
/// enforces `set_timeout` only until the response headers.
#[tokio::test(start_paused = true)]
async fn a_server_ends_a_stream_at_its_callers_deadline() {
    let script = Script::streaming_held_open(|_| async { Ok(vec![Ok(echo("first"))]) });
    let router = tonic::transport::Server::builder()
        .layer(tai_runtime::server::ServerLayer::new())
        .add_service(script.clone());
    let channel = support::in_memory(move |incoming| router.serve_with_incoming(incoming));
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let start = Instant::now();
    let mut stream = grpc
        .server_streaming(
            timed(echo("x"), Duration::from_millis(300)),
            http::uri::PathAndQuery::from_static("/test.Echo/Stream"),
            tonic_prost::ProstCodec::<Echo, Echo>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "first");
    let err = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the server ends the stream")
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        err.message()
            .contains("passed before the server finished its response"),
        "{}",
        err.message()
    );
    assert_eq!(start.elapsed(), Duration::from_millis(299));
    assert!(stream.message().await.unwrap().is_none());
}

/// A request with the caller's timeout, as a tonic caller sets it.
fn timed(message: Echo, timeout: Duration) -> tai_runtime::Request<Echo> {
    let mut request = tai_runtime::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// A caller can shorten or lengthen a call's deadline with `Request::set_timeout`,
/// but never past max_timeout.
#[tokio::test(start_paused = true)]
async fn caller_timeout_is_clamped_by_max_timeout() {
    let script = Script::unary(|_, _| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(echo("late"))
    });
    let policy = unary_method()
        .with_timeout(Duration::from_secs(2))
        .with_max_timeout(Duration::from_secs(5));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    for (asked, expected) in [
        (Duration::from_millis(300), Duration::from_millis(300)),
        (Duration::from_secs(30), Duration::from_secs(5)),
    ] {
        let start = Instant::now();
        let err = core
            .unary::<Echo, Echo>(0, timed(echo("x"), asked))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(start.elapsed(), expected, "asked for {asked:?}");
    }
    let start = Instant::now();
    core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "the policy's own timeout"
    );
    let seen = script.seen();
    assert_eq!(seen[0].grpc_timeout, Some(Duration::from_millis(300)));
    assert_eq!(seen[1].grpc_timeout, Some(Duration::from_secs(5)));
}

/// The largest caller timeout tonic's `set_timeout` can write (99999999 hours;
/// past it tonic panics in the caller's code) waits as long as it takes, and is
/// no panic of ours.
#[tokio::test(start_paused = true)]
async fn the_largest_caller_timeout_is_no_panic() {
    let script = Script::unary(|_, _| async { Ok(echo("ok")) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![unary_method()], None),
    );
    let reply = core
        .unary::<Echo, Echo>(0, timed(echo("x"), Duration::from_secs(99_999_999 * 3600)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "ok");
    assert_eq!(
        script.seen()[0].grpc_timeout,
        Some(Duration::from_secs(99_999_999 * 3600))
    );
}

/// A deadline that passes while the response is being read ends a committed
/// call: no retry, and no throttle token is charged for it.
#[tokio::test(start_paused = true)]
async fn a_deadline_while_reading_is_committed() {
    let server = H2Server::new(|_| Answer::Grpc {
        delay: Duration::from_secs(5),
        message: "too late",
        trailers: vec![],
    });
    let policy = unary_method()
        .with_timeout(Duration::from_millis(200))
        .with_retry(RetryPolicy::new(
            3,
            Duration::from_millis(10),
            Duration::from_millis(10),
            1.0,
            CodeSet(1 << Code::DeadlineExceeded as u32 | 1 << Code::Unavailable as u32),
        ));
    let core = ClientCore::new(
        server.channel(),
        service(vec![policy], Some(ThrottlePolicy::new(10, 0.1))),
    );
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(server.streams(), 1);
    assert_eq!(core.state().throttle().unwrap().tokens(), 10.0);
}

/// tonic's channel runs its own timer on the `grpc-timeout` tai sends, which is
/// rounded down, so it can fire before tai's own: still DEADLINE_EXCEEDED, never
/// CANCELLED.
#[tokio::test(start_paused = true)]
async fn tonics_own_timer_firing_first_is_deadline_exceeded() {
    let script = Script::unary(|_, _| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(echo("too late"))
    });
    // `grpc-timeout` carries whole microseconds: tonic's timer gets 1 s, tai's
    // deadline is half a microsecond later.
    let policy = unary_method().with_timeout(Duration::from_nanos(1_000_000_500));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let err = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
}

/// A server stream ends with the call's deadline even when the server keeps it
/// open: the client, waiting for the next message, gets DEADLINE_EXCEEDED at
/// the deadline, then the end of the stream.
#[tokio::test(start_paused = true)]
async fn a_stream_held_open_ends_at_the_deadline() {
    let script = Script::streaming_held_open(|_| async { Ok(vec![Ok(echo("first"))]) });
    let policy = stream_method().with_timeout(Duration::from_millis(300));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let start = Instant::now();
    let mut stream = open_stream(&core).await;
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "first");
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(stream.message().await.unwrap().is_none());
}

/// A server that keeps messages coming without pause cannot outrun the
/// deadline: the messages already there are read at most 32 past it (the
/// deadline is looked at before every 32nd message that needed no wait), then
/// DEADLINE_EXCEEDED ends the stream.
#[tokio::test(start_paused = true)]
async fn a_stream_that_never_pauses_still_ends_at_the_deadline() {
    let script = Script::streaming_held_open(|_| async {
        Ok((0..1000).map(|i| Ok(echo(&i.to_string()))).collect())
    });
    let policy = stream_method().with_timeout(Duration::from_millis(300));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let mut stream = open_stream(&core).await;
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "0");
    tokio::time::advance(Duration::from_millis(301)).await;
    let mut past_the_deadline = 0;
    let err = loop {
        match stream.message().await {
            Ok(Some(_)) => past_the_deadline += 1,
            Ok(None) => panic!("the stream ended without DEADLINE_EXCEEDED"),
            Err(err) => break err,
        }
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        past_the_deadline <= 32,
        "{past_the_deadline} messages past the deadline"
    );
    assert!(stream.message().await.unwrap().is_none());
}
