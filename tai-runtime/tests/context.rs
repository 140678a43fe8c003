//! The context of a call being handled, carried to the calls its handler makes:
//! trace context (`traceparent`, `tracestate`, `x-trace-id`) and the caller's
//! deadline, across three hops of real tonic servers (hop 1's handler calls hop
//! 2, whose handler calls hop 3). In memory on paused time where deadlines are
//! asserted; the last test serves hop 1 with tai's own server on loopback.

mod support;

use std::time::Duration;

use support::{Echo, Script, echo, service, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::context::{self, CallContext};
use tai_runtime::policy::{CodeSet, RetryPolicy};
use tai_runtime::server::ServerLayer;
use tai_runtime::{Detached, Request, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The caller's trace, as an instrumented client outside any handler sends it.
const ROOT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const ROOT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT_SPAN: &str = "00f067aa0ba902b7";

/// Serves `script` in memory behind `layer` (tai's server layer on tonic's server).
fn serve_with(script: &Script, layer: ServerLayer) -> Channel {
    let router = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(script.clone());
    support::in_memory(move |incoming| router.serve_with_incoming(incoming))
}

fn serve(script: &Script) -> Channel {
    serve_with(script, ServerLayer::new().without_metrics())
}

/// A tai client of `/test.Echo/Unary` with no policy of its own.
fn client(channel: Channel) -> ClientCore<Channel> {
    ClientCore::new(channel, service(vec![unary_method()], None))
}

/// A hop whose handler passes the message on with `next` and answers with what
/// comes back.
fn forwarding(next: ClientCore<Channel>) -> Script {
    forwarding_as(next, Request::new)
}

/// The same, sending the request `make` makes of the message.
fn forwarding_as(next: ClientCore<Channel>, make: fn(Echo) -> Request<Echo>) -> Script {
    Script::unary(move |_, message| {
        let next = next.clone();
        async move {
            next.unary::<Echo, Echo>(0, make(message))
                .await
                .map(Response::into_inner)
        }
    })
}

/// What the test's client sends to hop 1: its timeout and its trace, if any.
fn request(timeout: Option<Duration>, traceparent: Option<&str>) -> Request<Echo> {
    let mut request = Request::new(echo("x"));
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    if let Some(traceparent) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
    }
    request
}

const SECOND: Option<Duration> = Some(Duration::from_secs(1));

/// A hop that answers at once.
fn answering() -> Script {
    Script::unary(|_, message| async move { Ok(message) })
}

/// The `traceparent` a hop's `n`th call carried, split into trace id, span id
/// and flags.
fn traceparent(hop: &Script, n: usize) -> (String, String, String) {
    let seen = &hop.seen()[n];
    let value = seen.header("traceparent").expect("a traceparent");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn header(hop: &Script, n: usize, name: &str) -> Option<String> {
    hop.seen()[n].header(name).map(str::to_owned)
}

#[tokio::test(start_paused = true)]
async fn a_one_second_deadline_on_hop_1_caps_hop_2_and_hop_3() {
    let hop3 = Script::unary(|_, _| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(echo("too late"))
    });
    let hop2 = forwarding(client(serve(&hop3)));
    let hop1 = forwarding(client(serve(&hop2)));
    let entry = client(serve(&hop1));

    let start = Instant::now();
    let err = entry
        .unary::<Echo, Echo>(0, request(SECOND, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    let deadline = start + Duration::from_secs(1);
    assert!(Instant::now() <= deadline, "answered by hop 1's deadline");

    // Each hop's outgoing call ends the default margin (5 ms) before its own
    // caller's deadline; no hop has a timeout of its own.
    let margin = context::DEFAULT_DEADLINE_MARGIN;
    assert_eq!(hop1.seen()[0].grpc_timeout, Some(Duration::from_secs(1)));
    assert_eq!(
        hop2.seen()[0].grpc_timeout,
        Some(Duration::from_secs(1) - margin)
    );
    assert_eq!(
        hop3.seen()[0].grpc_timeout,
        Some(Duration::from_secs(1) - 2 * margin)
    );

    // Nothing starts after hop 1's deadline, even once hop 3's handler would
    // have answered.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (name, hop) in [("hop 1", &hop1), ("hop 2", &hop2), ("hop 3", &hop3)] {
        let seen = hop.seen();
        assert_eq!(seen.len(), 1, "{name}: one call");
        assert!(seen[0].at < deadline, "{name} started after the deadline");
    }
}

/// Once the handler's deadline (minus the margin) has passed, its calls fail at
/// once with DEADLINE_EXCEEDED, and nothing reaches the next hop.
#[tokio::test(start_paused = true)]
async fn calls_made_after_the_handlers_deadline_fail_fast_without_sending() {
    let hop2 = answering();
    let next = client(serve(&hop2));
    let hop1 = Script::unary(move |_, message| {
        let next = next.clone();
        async move {
            // Past the outgoing deadline (995 ms), before the server gives up
            // on the call (999 ms).
            tokio::time::sleep(Duration::from_millis(997)).await;
            let started = Instant::now();
            let result = next.unary::<Echo, Echo>(0, message).await;
            assert_eq!(started.elapsed(), Duration::ZERO, "failed at once");
            result.map(Response::into_inner)
        }
    });
    let entry = client(serve(&hop1));

    let err = entry
        .unary::<Echo, Echo>(0, request(SECOND, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        err.message()
            .contains("not sent: the deadline of the call being handled has passed"),
        "{}",
        err.message()
    );
    assert_eq!(hop2.calls(), 0, "nothing reached hop 2");
}

/// The `grpc-timeout` hop 2 is told when hop 1, served behind `layer`, is called
/// with 1 s and its handler sends `make(message)` to hop 2.
async fn told_to_hop_2(layer: ServerLayer, make: fn(Echo) -> Request<Echo>) -> Option<Duration> {
    let hop2 = answering();
    let hop1 = forwarding_as(client(serve(&hop2)), make);
    let entry = client(serve_with(&hop1, layer));
    entry
        .unary::<Echo, Echo>(0, request(SECOND, None))
        .await
        .unwrap();
    hop2.seen()[0].grpc_timeout
}

#[tokio::test(start_paused = true)]
async fn the_margin_is_the_servers_to_choose() {
    let layer = ServerLayer::new()
        .without_metrics()
        .deadline_margin(Duration::from_millis(100));
    let told = told_to_hop_2(layer, Request::new).await;
    assert_eq!(told, Some(Duration::from_millis(900)));
}

/// A call's own, shorter timeout stays; the handler's deadline only caps.
#[tokio::test(start_paused = true)]
async fn a_shorter_timeout_of_the_call_itself_stays() {
    let told = told_to_hop_2(ServerLayer::new(), |message| {
        let mut request = Request::new(message);
        request.set_timeout(Duration::from_millis(200));
        request
    })
    .await;
    assert_eq!(told, Some(Duration::from_millis(200)));
}

/// A call marked `Detached`, and the calls of a task run under
/// `context::detached`, keep the trace but not the handler's deadline.
#[tokio::test(start_paused = true)]
async fn detached_calls_keep_the_trace_but_not_the_deadline() {
    let hop2 = answering();
    let next = client(serve(&hop2));
    let (done, mut finished) = mpsc::unbounded_channel();
    let hop1 = Script::unary(move |_, message| {
        let (next, done) = (next.clone(), done.clone());
        async move {
            let mut request = Request::new(message.clone());
            request.extensions_mut().insert(Detached);
            next.unary::<Echo, Echo>(0, request).await?;
            // Background work that outlives the request (and its deadline).
            tokio::spawn(context::detached(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let result = next.unary::<Echo, Echo>(0, message).await;
                done.send(result.map(|_| ())).unwrap();
            }));
            Ok(echo("answered"))
        }
    });
    let entry = client(serve(&hop1));
    let start = Instant::now();
    entry
        .unary::<Echo, Echo>(0, request(SECOND, Some(ROOT)))
        .await
        .unwrap();
    finished.recv().await.unwrap().expect("the background call");

    let seen = hop2.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].grpc_timeout, None, "Detached: no deadline");
    assert_eq!(seen[1].grpc_timeout, None, "context::detached: no deadline");
    assert!(seen[1].at >= start + Duration::from_secs(2));
    for n in 0..2 {
        assert_eq!(
            traceparent(&hop2, n).0,
            ROOT_TRACE,
            "call {n} keeps the trace"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn every_hop_continues_the_callers_trace_as_a_child() {
    let hop3 = answering();
    let hop2 = forwarding(client(serve(&hop3)));
    // Hop 1's handler also reads its context.
    let next = client(serve(&hop2));
    let (contexts, mut seen_contexts) = mpsc::unbounded_channel::<CallContext>();
    let hop1 = Script::unary(move |_, message| {
        let (next, contexts) = (next.clone(), contexts.clone());
        async move {
            contexts
                .send(context::current().expect("a context"))
                .unwrap();
            next.unary::<Echo, Echo>(0, message)
                .await
                .map(Response::into_inner)
        }
    });
    let entry = client(serve(&hop1));

    let mut request = request(None, Some(ROOT));
    request
        .metadata_mut()
        .insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    entry.unary::<Echo, Echo>(0, request).await.unwrap();

    // Outside any handler the caller's own headers go as they are.
    assert_eq!(header(&hop1, 0, "traceparent").as_deref(), Some(ROOT));
    let hop1_context = seen_contexts.recv().await.unwrap();
    assert_eq!(hop1_context.trace().trace_id().to_string(), ROOT_TRACE);
    assert_eq!(
        hop1_context.trace().parent_id().unwrap().to_string(),
        ROOT_SPAN
    );
    assert_eq!(
        hop1_context.deadline(),
        None,
        "no grpc-timeout, no deadline"
    );

    // Hop 2 and hop 3: the same trace, each under a span of its own (the
    // attempt that called it), the flags and the tracestate carried on.
    let (trace2, span2, flags2) = traceparent(&hop2, 0);
    let (trace3, span3, flags3) = traceparent(&hop3, 0);
    assert_eq!((trace2.as_str(), flags2.as_str()), (ROOT_TRACE, "01"));
    assert_eq!((trace3.as_str(), flags3.as_str()), (ROOT_TRACE, "01"));
    assert_ne!(span2, ROOT_SPAN);
    assert_ne!(span3, ROOT_SPAN);
    assert_ne!(span3, span2);
    for hop in [&hop2, &hop3] {
        assert_eq!(
            header(hop, 0, "tracestate").as_deref(),
            Some("congo=t61rcWkgMzE")
        );
        // Older services log the same id.
        assert_eq!(header(hop, 0, "x-trace-id").as_deref(), Some(ROOT_TRACE));
    }
}

/// Each attempt of a retried call is a span of its own.
#[tokio::test(start_paused = true)]
async fn each_attempt_sends_a_fresh_span_id() {
    let hop2 = Script::unary(|i, message| async move {
        if i == 0 {
            Err(Status::unavailable("once"))
        } else {
            Ok(message)
        }
    });
    let policy = unary_method().with_retry(RetryPolicy::new(
        2,
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
        CodeSet(1 << Code::Unavailable as u32),
    ));
    let next = ClientCore::new(serve(&hop2), service(vec![policy], None));
    let hop1 = Script::unary(move |_, message| {
        let next = next.clone();
        async move {
            next.unary_retry::<Echo, Echo>(0, message)
                .await
                .map(Response::into_inner)
        }
    });
    let entry = client(serve(&hop1));
    entry
        .unary::<Echo, Echo>(0, request(None, Some(ROOT)))
        .await
        .unwrap();

    let (first, second) = (traceparent(&hop2, 0), traceparent(&hop2, 1));
    assert_eq!(first.0, ROOT_TRACE);
    assert_eq!(second.0, ROOT_TRACE);
    assert_ne!(first.1, second.1, "a span per attempt");
    assert_eq!(
        header(&hop2, 1, "grpc-previous-rpc-attempts").as_deref(),
        Some("1")
    );
}

/// An older client's `x-trace-id` is forwarded as it came; without any trace
/// header a trace starts at hop 1, and every hop logs its id.
#[tokio::test(start_paused = true)]
async fn older_clients_trace_ids_are_forwarded_and_missing_ones_generated() {
    for sent in [Some("req-42"), None] {
        let hop3 = answering();
        let hop2 = forwarding(client(serve(&hop3)));
        let hop1 = forwarding(client(serve(&hop2)));
        let entry = client(serve(&hop1));
        let mut request = request(None, None);
        if let Some(id) = sent {
            request
                .metadata_mut()
                .insert("x-trace-id", id.parse().unwrap());
        }
        entry.unary::<Echo, Echo>(0, request).await.unwrap();

        assert_eq!(
            header(&hop1, 0, "traceparent"),
            None,
            "no context, no trace"
        );
        let (trace, ..) = traceparent(&hop2, 0);
        assert_eq!(traceparent(&hop3, 0).0, trace, "one trace across hops");
        let expected = sent.map_or(trace, str::to_owned);
        for hop in [&hop2, &hop3] {
            assert_eq!(header(hop, 0, "x-trace-id"), Some(expected.clone()));
        }
    }
}

/// tai's own server runs handlers inside their context without being asked.
#[tokio::test]
async fn tais_server_builder_adds_the_context() {
    let hop2 = answering();
    let hop1 = forwarding(client(serve(&hop2)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tai_runtime::server::Server::builder().add_service(hop1);
    tokio::spawn(server.serve_with_incoming(listener, std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    client(channel)
        .unary::<Echo, Echo>(0, request(Some(Duration::from_secs(30)), Some(ROOT)))
        .await
        .unwrap();
    assert_eq!(traceparent(&hop2, 0).0, ROOT_TRACE);
    let told = hop2.seen()[0].grpc_timeout.expect("a deadline");
    assert!(told < Duration::from_secs(30), "capped: {told:?}");
}
