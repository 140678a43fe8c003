//! tonic's call shape through the whole engine, against a real tonic server:
//! request metadata on every attempt, response headers and trailers back, the
//! client's interceptor, compression both ways, `connect` and `connect_lazy`.
//! (`Request::set_timeout` as the deadline is in `deadline.rs`.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::raw_h2::{Answer, H2Server};
use support::{Echo, Script, echo, open_stream, service, stream_method, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::policy::{
    BreakerPolicy, CodeSet, HedgingPolicy, MethodPolicy, RetryPolicy, ServicePolicy,
};
use tai_runtime::{BreakerState, Request};
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

fn retrying(codes: CodeSet) -> MethodPolicy {
    unary_method().with_retry(RetryPolicy::new(
        3,
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
        codes,
    ))
}

fn unavailable() -> CodeSet {
    CodeSet(1 << Code::Unavailable as u32)
}

/// A server that answers UNAVAILABLE `failures` times, then echoes; a client
/// that retries UNAVAILABLE.
fn retried_after(failures: usize) -> (Script, ClientCore<tonic::transport::Channel>) {
    let script = Script::unary(move |i, e| async move {
        if i < failures {
            Err(Status::unavailable("not yet"))
        } else {
            Ok(e)
        }
    });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![retrying(unavailable())], None),
    );
    (script, core)
}

/// A request with a tenant header, as a caller sends one.
fn with_tenant(message: Echo) -> Request<Echo> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-tenant", MetadataValue::from_static("acme"));
    request
}

#[tokio::test(start_paused = true)]
async fn metadata_reaches_the_server_on_every_retry() {
    let (script, core) = retried_after(2);
    core.unary_retry::<Echo, Echo>(0, with_tenant(echo("x")))
        .await
        .unwrap();
    let seen = script.seen();
    assert_eq!(seen.len(), 3);
    for (n, s) in seen.iter().enumerate() {
        assert_eq!(s.header("x-tenant"), Some("acme"), "attempt {n}");
    }
    let previous: Vec<_> = seen
        .iter()
        .map(|s| s.header("grpc-previous-rpc-attempts"))
        .collect();
    assert_eq!(previous, [None, Some("1"), Some("2")]);
}

#[tokio::test(start_paused = true)]
async fn metadata_reaches_the_server_on_every_hedge() {
    // The first two attempts hang; the third answers.
    let script = Script::unary(|i, e| async move {
        if i < 2 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(e)
    });
    let policy = unary_method().with_hedging(HedgingPolicy::new(
        3,
        Duration::from_millis(100),
        unavailable(),
    ));
    let core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    core.unary_retry::<Echo, Echo>(0, with_tenant(echo("x")))
        .await
        .unwrap();
    let seen = script.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.header("x-tenant") == Some("acme")));
}

#[tokio::test]
async fn response_headers_come_back() {
    let script = Script::unary(|_, e| async move { Ok(e) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![unary_method()], None),
    );
    let response = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap();
    assert_eq!(
        response
            .metadata()
            .get("x-served-by")
            .unwrap()
            .to_str()
            .unwrap(),
        "0"
    );
    assert_eq!(response.into_inner().msg, "x");
}

#[tokio::test]
async fn trailers_come_back_in_a_unary_response() {
    let server = H2Server::new(|_| Answer::Grpc {
        delay: Duration::ZERO,
        message: "m",
        trailers: vec![("x-checksum", "abc")],
    });
    let core = ClientCore::new(server.channel(), service(vec![unary_method()], None));
    let response = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap();
    assert_eq!(
        response
            .metadata()
            .get("x-checksum")
            .unwrap()
            .to_str()
            .unwrap(),
        "abc"
    );
}

#[tokio::test]
async fn trailers_come_back_at_the_end_of_a_stream() {
    let server = H2Server::new(|_| Answer::Grpc {
        delay: Duration::ZERO,
        message: "m",
        trailers: vec![("x-checksum", "abc")],
    });
    let core = ClientCore::new(server.channel(), service(vec![stream_method()], None));
    let mut stream = open_stream(&core).await;
    // Unread messages are read and dropped first, as tonic's `trailers` does.
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-checksum").unwrap().to_str().unwrap(), "abc");
}

#[tokio::test(start_paused = true)]
async fn the_interceptor_adds_metadata_to_every_attempt() {
    let (script, mut core) = retried_after(1);
    core.set_interceptor(|mut request: Request<()>| {
        // It sees the attempt's own metadata.
        let attempt = request
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .map_or("first", |_| "retry");
        request
            .metadata_mut()
            .insert("x-token", MetadataValue::from_static(attempt));
        Ok(request)
    });
    core.unary_retry::<Echo, Echo>(0, echo("x")).await.unwrap();
    let tokens: Vec<_> = script
        .seen()
        .iter()
        .map(|s| s.header("x-token").map(str::to_owned))
        .collect();
    assert_eq!(tokens, [Some("first".to_owned()), Some("retry".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_by_the_interceptor_is_final_and_no_breaker_failure() {
    let script = Script::unary(|_, e| async move { Ok(e) });
    let unauthenticated = CodeSet(1 << Code::Unauthenticated as u32);
    let policy = retrying(unauthenticated).with_breaker(BreakerPolicy::new(
        1,
        Duration::from_secs(10),
        Duration::from_secs(60),
        1,
        unauthenticated,
    ));
    let mut core = ClientCore::new(script.serve_in_memory(), service(vec![policy], None));
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    core.set_interceptor(move |_: Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        Err(Status::unauthenticated("no token"))
    });
    let err = core
        .unary_retry::<Echo, Echo>(0, echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert_eq!(err.message(), "no token");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(script.calls(), 0, "the server was not called");
    assert_eq!(
        core.state().breaker("Unary").unwrap().state(),
        BreakerState::Closed,
        "a threshold of one failure would have opened it"
    );
}

#[tokio::test]
async fn requests_and_responses_are_compressed_when_asked() {
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let script = Script::unary(|_, e| async move { Ok(e) });
        let mut core = ClientCore::new(
            script.serve_in_memory(),
            service(vec![unary_method()], None),
        );
        core.send_compressed(encoding);
        core.accept_compressed(encoding);
        let response = core
            .unary::<Echo, Echo>(0, echo(&"x".repeat(1000)))
            .await
            .unwrap();
        let name = encoding.to_string();
        assert_eq!(
            script.seen()[0].header("grpc-encoding"),
            Some(name.as_str())
        );
        assert_eq!(
            response
                .metadata()
                .get("grpc-encoding")
                .unwrap()
                .to_str()
                .unwrap(),
            name
        );
        assert_eq!(response.into_inner().msg.len(), 1000);
    }
    // Without either, nothing is compressed.
    let script = Script::unary(|_, e| async move { Ok(e) });
    let core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![unary_method()], None),
    );
    let response = core.unary::<Echo, Echo>(0, echo("x")).await.unwrap();
    assert_eq!(script.seen()[0].header("grpc-encoding"), None);
    assert!(response.metadata().get("grpc-encoding").is_none());
}

#[tokio::test]
async fn the_decoding_limit_is_the_clients() {
    let script = Script::unary(|_, e| async move { Ok(e) });
    let mut core = ClientCore::new(
        script.serve_in_memory(),
        service(vec![unary_method()], None),
    );
    core.max_decoding_message_size(100);
    let err = core
        .unary::<Echo, Echo>(0, echo(&"x".repeat(1000)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    core.max_encoding_message_size(100);
    let err = core
        .unary::<Echo, Echo>(0, echo(&"x".repeat(1000)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_eq!(script.calls(), 1, "a request over the limit is not sent");
}

static POLICY: ServicePolicy = ServicePolicy::new("test.Echo", &[]);

/// A loopback address nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[tokio::test(start_paused = true)]
async fn connect_to_a_closed_port_fails_after_the_connect_timeout() {
    let addr = closed_port().await;
    let start = Instant::now();
    let err = tai_runtime::__private::connect(addr.clone(), &POLICY)
        .await
        .unwrap_err();
    let timeout = tai_runtime::config::ClientConfig::default()
        .connection
        .connect_timeout;
    assert_eq!(start.elapsed(), timeout);
    assert_eq!(err.address(), addr);
    let text = err.to_string();
    assert!(text.contains(&addr) && text.contains("not ready"), "{text}");
}

#[tokio::test]
async fn connect_waits_until_ready_and_connect_lazy_does_not() {
    let script = Script::unary(|_, e| async move { Ok(e) });
    let addr = script.serve_tcp().await.to_string();
    let channel = tai_runtime::__private::connect(addr.clone(), &POLICY)
        .await
        .unwrap();
    assert_eq!(channel.state(), tai_runtime::ConnectivityState::Ready);
    // Returns before any connection is made, even to a closed port.
    let lazy = tai_runtime::__private::connect_lazy(closed_port().await, &POLICY).unwrap();
    assert_ne!(lazy.state(), tai_runtime::ConnectivityState::Ready);
}

/// What a caller put in a request's extensions.
#[derive(Clone, Debug, PartialEq)]
struct TraceId(u64);

#[tokio::test(start_paused = true)]
async fn extensions_go_with_every_attempt() {
    let (script, mut core) = retried_after(1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    core.set_interceptor(move |request: Request<()>| {
        log.lock()
            .unwrap()
            .push(request.extensions().get::<TraceId>().cloned());
        Ok(request)
    });
    let mut request = Request::new(echo("x"));
    request.extensions_mut().insert(TraceId(7));
    core.unary_retry::<Echo, Echo>(0, request).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [Some(TraceId(7)), Some(TraceId(7))]);
    assert_eq!(script.calls(), 2);
}
