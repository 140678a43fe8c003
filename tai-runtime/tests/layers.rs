//! The tower layers (`tai_runtime::layers`) on a real tonic `Channel` to a real
//! tonic server, driven by a tonic-style client: grpc-go's retry tables exactly
//! as `tests/retry.rs` runs them through the generated client's engine, the
//! breaker failing fast, the deadline, and hedging.

mod support;

use std::time::Duration;

use http::uri::PathAndQuery;
use support::{Echo, Script, echo, grpc_go};
use tai_runtime::layers::{BreakerLayer, ByMethod, DeadlineLayer, HedgeLayer, RetryLayer};
use tai_runtime::policy::{BreakerPolicy, CodeSet, HedgingPolicy, RetryPolicy, ThrottlePolicy};
use tai_runtime::server::ServerLayer;
use tokio::time::Instant;
use tonic::client::{Grpc, GrpcService};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};
use tower::ServiceBuilder;

const UNARY: &str = "/test.Echo/Unary";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What tonic-build generates for `test.Echo`, by hand: a `Grpc` over any
/// transport, one method per RPC.
#[derive(Clone)]
struct EchoClient<T> {
    inner: Grpc<T>,
}

impl<T> EchoClient<T>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    fn new(inner: T) -> Self {
        Self {
            inner: Grpc::new(inner),
        }
    }

    async fn unary(&mut self, request: impl tonic::IntoRequest<Echo>) -> Result<Echo, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
        let path = PathAndQuery::from_static(UNARY);
        let response = self
            .inner
            .unary(request.into_request(), path, codec)
            .await?;
        Ok(response.into_inner())
    }

    async fn stream(&mut self, request: Echo) -> Result<tonic::Streaming<Echo>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
        let path = PathAndQuery::from_static("/test.Echo/Stream");
        let response = self
            .inner
            .server_streaming(Request::new(request), path, codec)
            .await?;
        Ok(response.into_inner())
    }
}

fn codes(codes: &[Code]) -> CodeSet {
    CodeSet::of(codes)
}

fn retry_policy(max_attempts: u32, retryable: &[Code]) -> RetryPolicy {
    RetryPolicy::new(
        max_attempts,
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
        codes(retryable),
    )
}

/// grpc-go `TestRetryUnary` through `RetryLayer`: max_attempts 4,
/// ALREADY_EXISTS retryable — the same table as the engine's.
#[tokio::test(start_paused = true)]
async fn grpc_go_retry_unary_table_through_the_layer() {
    let script = run_through_the_layer(grpc_go::retry_unary()).await;
    // Every retry told the server how many attempts came before it.
    let previous: Vec<Option<String>> = script
        .seen()
        .into_iter()
        .map(|s| s.previous_attempts)
        .collect();
    assert_eq!(
        &previous[12..],
        [None, Some("1".into()), Some("2".into()), Some("3".into())]
    );
}

/// grpc-go `TestRetryThrottling` through `RetryLayer`: max_tokens 10,
/// token_ratio 0.5, 12 calls — the same trace as the engine's.
#[tokio::test(start_paused = true)]
async fn grpc_go_retry_throttling_trace_through_the_layer() {
    run_through_the_layer(grpc_go::retry_throttling()).await;
}

/// A table of grpc-go's (`support/grpc_go.rs`) through `RetryLayer` on tonic's
/// `Channel`, under the tonic-style client; the server, for what it saw.
async fn run_through_the_layer(table: grpc_go::Table) -> Script {
    let script = Script::answering(table.answer);
    let retry = RetryLayer::new(ByMethod::none().method(UNARY, table.retry), table.throttle);
    retry.seed_jitter(1);
    let throttle = retry.throttle().cloned();
    let client = EchoClient::new(
        ServiceBuilder::new()
            .layer(retry)
            .service(script.serve_in_memory()),
    );
    table
        .run(
            || {
                let mut client = client.clone();
                async move { grpc_go::code_of(&client.unary(echo("x")).await) }
            },
            || script.calls(),
            || throttle.as_ref().expect("the table's throttle").tokens(),
        )
        .await;
    script
}

/// Server pushback through the layer: "1000" waits exactly a second; "-1"
/// stops retrying at once.
#[tokio::test(start_paused = true)]
async fn pushback_through_the_layer() {
    let script = Script::unary(|i, _| async move {
        let mut status = Status::unavailable("pushed back");
        let value = if i == 0 { "1000" } else { "-1" };
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", MetadataValue::from_static(value));
        if i == 1 {
            Ok(echo("late"))
        } else {
            Err(status)
        }
    });
    let mut client = EchoClient::new(
        RetryLayer::new(retry_policy(4, &[Code::Unavailable]), None)
            .layer_on(script.serve_in_memory()),
    );
    assert_eq!(client.unary(echo("x")).await.unwrap().msg, "late");
    let seen = script.seen();
    assert_eq!(seen[1].at - seen[0].at, Duration::from_millis(1000));
    let err = client.unary(echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(script.calls(), 3, "pushback -1: no retry");
}

/// `tower::Layer::layer`, read left to right.
trait LayerOn: tower::Layer<tonic::transport::Channel> + Sized {
    fn layer_on(self, channel: tonic::transport::Channel) -> Self::Service {
        self.layer(channel)
    }
}

impl<L: tower::Layer<tonic::transport::Channel>> LayerOn for L {}

fn breaker_policy(failure_threshold: u32) -> BreakerPolicy {
    BreakerPolicy::new(
        failure_threshold,
        Duration::from_secs(1),
        Duration::from_secs(30),
        1,
        codes(&[Code::Unavailable, Code::Internal]),
    )
}

/// Three failures trip the breaker; the fourth call fails fast without reaching
/// the server, with UNAVAILABLE saying why; after the open time a probe passes
/// and closes it.
#[tokio::test(start_paused = true)]
async fn the_breaker_trips_and_fails_fast() {
    let script = Script::unary(|i, _| async move {
        if i < 3 {
            Err(Status::internal("broken"))
        } else {
            Ok(echo("back"))
        }
    });
    let breakers = BreakerLayer::new(breaker_policy(3));
    let mut client = EchoClient::new(breakers.clone().layer_on(script.serve_in_memory()));
    for _ in 0..3 {
        assert_eq!(
            client.unary(echo("x")).await.unwrap_err().code(),
            Code::Internal
        );
    }
    let err = client.unary(echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .contains("circuit breaker for /test.Echo/Unary is open: 3 consecutive failures"),
        "{err}"
    );
    assert_eq!(script.calls(), 3, "refused calls never reach the server");
    assert_eq!(breakers.state(UNARY).map(|s| s.name()), Some("open"));

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(client.unary(echo("x")).await.unwrap().msg, "back");
    assert_eq!(
        breakers.state(UNARY),
        Some(tai_runtime::BreakerState::Closed)
    );
}

/// Under a retry layer, an attempt the breaker refuses ends the call: no
/// backoff, no more attempts, no throttle token.
#[tokio::test(start_paused = true)]
async fn a_refused_attempt_ends_the_retries() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    let retry = RetryLayer::new(
        retry_policy(5, &[Code::Unavailable]),
        Some(ThrottlePolicy::new(100, 0.1)),
    );
    let throttle = retry.throttle().cloned().unwrap();
    let mut client = EchoClient::new(
        ServiceBuilder::new()
            .layer(retry)
            .layer(BreakerLayer::new(breaker_policy(2)))
            .service(script.serve_in_memory()),
    );
    let err = client.unary(echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("circuit breaker"), "{err}");
    assert_eq!(script.calls(), 2, "the third attempt was refused");
    assert_eq!(
        throttle.tokens(),
        98.0,
        "two failures counted, the refusal not"
    );
}

/// The deadline layer: the server is told the time left, and a call that
/// outlives it gets DEADLINE_EXCEEDED (tonic's own timer would say CANCELLED).
#[tokio::test(start_paused = true)]
async fn the_deadline_layer_gives_deadline_exceeded_and_sends_grpc_timeout() {
    let script = Script::unary(|_, _| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(echo("late"))
    });
    let mut client = EchoClient::new(
        DeadlineLayer::new(ByMethod::none().method(UNARY, Duration::from_millis(100)))
            .layer_on(script.serve_in_memory()),
    );
    let start = Instant::now();
    let err = client.unary(echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        script.seen()[0].grpc_timeout,
        Some(Duration::from_millis(100))
    );

    // A caller's own, sooner timeout (tonic's `set_timeout`) wins.
    let mut request = Request::new(echo("x"));
    request.set_timeout(Duration::from_millis(30));
    let start = Instant::now();
    let err = client.unary(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(
        script.seen()[1].grpc_timeout,
        Some(Duration::from_millis(30))
    );
}

/// Deadline over retries: each attempt is told what is left, and a retry that
/// would start after the deadline is not made — the call ends at once.
#[tokio::test(start_paused = true)]
async fn retries_under_the_deadline_layer_send_what_is_left() {
    let script = Script::unary(|_, _| async { Err(Status::unavailable("down")) });
    // Backoff 56..84ms: a second attempt fits in 100ms, a third never does.
    let mut policy = retry_policy(5, &[Code::Unavailable]);
    policy.initial_backoff = Duration::from_millis(70);
    policy.max_backoff = Duration::from_millis(70);
    let mut client = EchoClient::new(
        ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_millis(100)))
            .layer(RetryLayer::new(policy, None))
            .service(script.serve_in_memory()),
    );
    let start = Instant::now();
    let err = client.unary(echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.message().contains("before the next retry"), "{err}");
    let seen = script.seen();
    assert_eq!(seen.len(), 2);
    let second_at = seen[1].at - start;
    assert_eq!(seen[0].grpc_timeout, Some(Duration::from_millis(100)));
    assert_eq!(
        seen[1].grpc_timeout,
        Some(Duration::from_millis(100) - second_at)
    );
    assert_eq!(
        start.elapsed(),
        second_at,
        "no waiting for a retry that cannot be"
    );
}

fn hedging() -> HedgingPolicy {
    HedgingPolicy::new(3, Duration::from_millis(100), codes(&[Code::Unavailable]))
}

/// A slow first attempt is overtaken by the hedge sent 100ms later.
#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_overtaken_through_the_layer() {
    let script = Script::unary(|i, _| async move {
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(echo("slow"))
        } else {
            Ok(echo("fast"))
        }
    });
    let mut client =
        EchoClient::new(HedgeLayer::new(hedging(), None).layer_on(script.serve_in_memory()));
    let start = Instant::now();
    assert_eq!(client.unary(echo("x")).await.unwrap().msg, "fast");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(script.calls(), 2);
    assert_eq!(script.seen()[1].previous_attempts.as_deref(), Some("1"));
}

/// The first attempt to receive headers commits a hedged call: no hedge starts
/// after it, and an error later in its stream is final.
#[tokio::test(start_paused = true)]
async fn a_hedged_call_commits_at_response_headers() {
    let script = Script::streaming(|_| async move {
        Ok(vec![
            Ok(echo("first")),
            Err(Status::unavailable("mid-stream")),
        ])
    });
    let policies = ByMethod::none().method("/test.Echo/Stream", hedging());
    let mut client =
        EchoClient::new(HedgeLayer::new(policies, None).layer_on(script.serve_in_memory()));
    let mut stream = client.stream(echo("x")).await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "first");
    assert_eq!(
        stream.message().await.unwrap_err().code(),
        Code::Unavailable
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(script.calls(), 1, "committed at headers: no hedge");
}

/// A non-fatal failure starts the next hedge at once; a fatal one ends the call.
#[tokio::test(start_paused = true)]
async fn hedges_follow_non_fatal_codes_and_stop_at_fatal_ones() {
    let script = Script::unary(|i, _| async move {
        match i {
            0 => Err(Status::unavailable("busy")),
            1 => Ok(echo("second")),
            _ => Err(Status::internal("broken")),
        }
    });
    let mut client =
        EchoClient::new(HedgeLayer::new(hedging(), None).layer_on(script.serve_in_memory()));
    let start = Instant::now();
    assert_eq!(client.unary(echo("x")).await.unwrap().msg, "second");
    assert_eq!(start.elapsed(), Duration::ZERO);
    let err = client.unary(echo("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(script.calls(), 3);
}

/// The caller's trace, as an instrumented client outside any handler sends it.
const ROOT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Hop 1, served behind tai's server layer (which runs each handler in its
/// call's context), calls hop 2 through `stack` (layers over a channel to hop
/// 2); the test's client calls hop 1 with a 1 s timeout and [`ROOT`]. Checks
/// what hop 2 saw of a call made at once, and what a call made after the
/// handler's deadline gave.
async fn the_handlers_context_through<T>(stack: impl Fn(tonic::transport::Channel) -> T)
where
    T: GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    // Hop 1's handler calls after `wait`: what it answered, and hop 2.
    let through_two_hops = async |wait: Duration| {
        let hop2 = Script::unary(|_, message| async move { Ok(message) });
        let next = EchoClient::new(stack(hop2.serve_in_memory()));
        let hop1 = Script::unary(move |_, message| {
            let mut next = next.clone();
            async move {
                tokio::time::sleep(wait).await;
                next.unary(message).await
            }
        });
        let router = tonic::transport::Server::builder()
            .layer(ServerLayer::new().without_metrics())
            .add_service(hop1.clone());
        let mut entry = EchoClient::new(support::in_memory(move |incoming| {
            router.serve_with_incoming(incoming)
        }));
        let mut request = Request::new(echo("x"));
        request.set_timeout(Duration::from_secs(1));
        request
            .metadata_mut()
            .insert("traceparent", ROOT.parse().unwrap());
        (entry.unary(request).await, hop2)
    };

    let (answer, hop2) = through_two_hops(Duration::ZERO).await;
    answer.expect("hop 1 answers");
    let seen = &hop2.seen()[0];
    let traceparent = seen.header("traceparent").expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "a child span: {traceparent}");
    assert_eq!(
        seen.grpc_timeout,
        Some(Duration::from_secs(1) - tai_runtime::context::DEFAULT_DEADLINE_MARGIN),
        "capped by hop 1's deadline, minus the margin"
    );

    // Past hop 1's outgoing deadline (995 ms), before the server gives up (1 s).
    let (answer, hop2) = through_two_hops(Duration::from_millis(997)).await;
    let err = answer.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(hop2.calls(), 0, "nothing reached hop 2");
}

/// A call through the layers made inside a tai handler carries the handler's
/// trace as a child `traceparent` and ends by its deadline, as a generated
/// client's call does: with the deadline layer outside (its own timeout is
/// longer), and with a retry layer alone.
#[tokio::test(start_paused = true)]
async fn calls_through_the_layers_apply_the_handlers_context() {
    the_handlers_context_through(|channel| {
        ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(10)))
            .layer(RetryLayer::new(retry_policy(3, &[Code::Unavailable]), None))
            .service(channel)
    })
    .await;
    the_handlers_context_through(|channel| {
        RetryLayer::new(retry_policy(3, &[Code::Unavailable]), None).layer_on(channel)
    })
    .await;
    the_handlers_context_through(|channel| HedgeLayer::new(hedging(), None).layer_on(channel))
        .await;
}
