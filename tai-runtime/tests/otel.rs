//! OpenTelemetry spans across two hops (feature `otel`), exported by the OTLP
//! exporter (gRPC, tonic) to a real OTLP receiver: a tonic server implementing
//! the OTLP trace service, in this test. The test's client calls hop 1, whose
//! handler calls hop 2: each call is a client span, each attempt a child span,
//! each served call a server span whose parent is the attempt that sent it.
//!
//! Its own test binary: the subscriber is process-wide (servers run on other
//! threads), so no other test may share it.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use support::{Echo, Script, echo, service, stream_method, unary_method};
use tai_runtime::__private::ClientCore;
use tai_runtime::server::ServerLayer;
use tai_runtime::{Request, Response};
use tonic::transport::Channel;
use tracing_subscriber::layer::SubscriberExt;

/// The OTLP receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn serve(script: &Script) -> Channel {
    let router = tonic::transport::Server::builder()
        .layer(ServerLayer::new().without_metrics())
        .add_service(script.clone());
    support::in_memory(move |incoming| router.serve_with_incoming(incoming))
}

fn client(channel: Channel) -> ClientCore<Channel> {
    ClientCore::new(channel, service(vec![unary_method()], None))
}

/// A span attribute's value, as text or a number.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match value.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a tai span is: a served call, a call made, or one of its attempts.
fn role(span: &Span) -> &'static str {
    if span.kind == SpanKind::Server as i32 {
        "server"
    } else if attribute(span, "rpc.grpc.attempt").is_some() {
        "attempt"
    } else {
        "call"
    }
}

/// `span` and its ancestors, as far as the exported spans go.
fn ancestry<'a>(span: &'a Span, by_id: &HashMap<Vec<u8>, &'a Span>) -> Vec<&'a Span> {
    let mut chain = vec![span];
    while let Some(parent) = by_id.get(&chain.last().unwrap().parent_span_id) {
        chain.push(parent);
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_two_hops_reach_an_otlp_receiver_as_parent_and_children() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let otlp = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(otlp);
    let (layer, provider) =
        tai_runtime::otel::otlp_layer("tai-test", &format!("http://{addr}")).unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let hop2 = Script::unary(|_, message| async move { Ok(message) });
    let next = client(serve(&hop2));
    let (handled, mut handled_in) = tokio::sync::mpsc::unbounded_channel();
    let hop1 = Script::unary(move |_, message| {
        let (next, handled) = (next.clone(), handled.clone());
        async move {
            let context = tai_runtime::context::current().expect("a context");
            handled
                .send(context.trace().trace_id().to_string())
                .unwrap();
            next.unary::<Echo, Echo>(0, message)
                .await
                .map(Response::into_inner)
        }
    });
    let hop1_channel = serve(&hop1);
    client(hop1_channel.clone())
        .unary::<Echo, Echo>(0, Request::new(echo("x")))
        .await
        .unwrap();
    // A caller sending no trace (tonic's own client): hop 1 starts the trace,
    // and its handler's context names the trace id of its server span.
    let mut plain = tonic::client::Grpc::new(hop1_channel);
    plain.ready().await.unwrap();
    plain
        .unary::<Echo, Echo, _>(
            Request::new(echo("y")),
            http::uri::PathAndQuery::from_static("/test.Echo/Unary"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap();
    // Two calls that fail, one hop each: NOT_FOUND (the server did its job)
    // and UNAVAILABLE (it did not).
    let failing = Script::unary(|n, _| async move {
        Err(match n {
            0 => tonic::Status::not_found("no such policy"),
            _ => tonic::Status::unavailable("down for maintenance"),
        })
    });
    let failing_client = client(serve(&failing));
    for _ in 0..2 {
        failing_client
            .unary::<Echo, Echo>(0, Request::new(echo("z")))
            .await
            .unwrap_err();
    }
    // A stream that fails after its first message: its status comes in the
    // trailers, after the headers, and the server span ends with it.
    let streaming = Script::streaming(|_| async {
        Ok(vec![
            Ok(echo("1")),
            Err(tonic::Status::data_loss("disk gone: 100%")),
        ])
    });
    let stream_client = ClientCore::new(serve(&streaming), service(vec![stream_method()], None));
    let mut stream = stream_client
        .server_streaming::<Echo, Echo>(0, Request::new(echo("s")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().msg, "1");
    let failed = stream.message().await.unwrap_err();
    assert_eq!(failed.code(), tonic::Code::DataLoss, "{failed:?}");
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        let _ = provider.shutdown();
        flushed
    });
    flushed.await.unwrap().expect("spans exported");

    // The traces of the failed calls, by the traceparent their server saw.
    let failed_traces: Vec<String> = failing
        .seen()
        .iter()
        .map(|seen| seen.header("traceparent").unwrap()[3..35].to_owned())
        .collect();
    let stream_trace = streaming.seen()[0].header("traceparent").unwrap()[3..35].to_owned();
    let (stream_spans, spans): (Vec<Span>, Vec<Span>) = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| attribute(s, "rpc.system").as_deref() == Some("grpc"))
        .cloned()
        .partition(|s| hex(&s.trace_id) == stream_trace);
    let (failed, spans): (Vec<Span>, Vec<Span>) = spans
        .into_iter()
        .partition(|s| failed_traces.contains(&hex(&s.trace_id)));
    span_status_follows_the_code(&failed, &failed_traces);
    let stream_server = stream_spans
        .iter()
        .find(|s| role(s) == "server")
        .unwrap_or_else(|| panic!("the stream's server span: {stream_spans:#?}"));
    assert_eq!(
        attribute(stream_server, "rpc.grpc.status_code").as_deref(),
        Some("15"),
        "DATA_LOSS, from the trailers"
    );
    let status = stream_server.status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Error as i32, "{status:?}");
    assert_eq!(
        status.message, "disk gone: 100%",
        "decoded from grpc-message"
    );
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let mut roles: Vec<&str> = spans.iter().map(role).collect();
    roles.sort_unstable();
    // The test's call (call, attempt) and two served by hop 1 (each a server
    // span, a call and an attempt to hop 2, and hop 2's server span).
    assert_eq!(
        roles,
        [
            "attempt", "attempt", "attempt", "call", "call", "call", "server", "server", "server",
            "server"
        ],
        "{spans:#?}"
    );

    // From hop 2's server span up to the test's call: each span the child of the
    // one before it, all in one trace.
    // The longest ancestry: from hop 2's server span, under the test's call
    // through hop 1.
    let chain = spans
        .iter()
        .map(|s| ancestry(s, &by_id))
        .max_by_key(Vec::len)
        .unwrap();
    let chain_roles: Vec<&str> = chain.iter().map(|s| role(s)).collect();
    assert_eq!(
        chain_roles,
        ["server", "attempt", "call", "server", "attempt", "call"]
    );
    assert!(
        chain[5].parent_span_id.is_empty(),
        "the test's call is the root"
    );
    for span in &chain {
        assert_eq!(span.trace_id, chain[0].trace_id, "one trace");
        assert_eq!(attribute(span, "rpc.service").as_deref(), Some("test.Echo"));
        assert_eq!(attribute(span, "rpc.method").as_deref(), Some("Unary"));
        assert_eq!(
            attribute(span, "rpc.grpc.status_code").as_deref(),
            Some("0")
        );
        let status = span.status.clone().unwrap_or_default();
        assert_eq!(status.code, StatusCode::Unset as i32, "OK leaves it unset");
    }
    for (name, value) in [("rpc.grpc.attempt", "1"), ("rpc.grpc.hedged", "false")] {
        assert_eq!(attribute(chain[1], name).as_deref(), Some(value), "{name}");
    }

    // The handler's context names the trace its spans are in, whether the
    // caller started it or hop 1 did.
    assert_eq!(handled_in.recv().await.unwrap(), hex(&chain[0].trace_id));
    let started_here = handled_in.recv().await.unwrap();
    let hop1_root = spans
        .iter()
        .find(|s| role(s) == "server" && s.parent_span_id.is_empty())
        .expect("hop 1's server span for the call without a trace");
    assert_eq!(started_here, hex(&hop1_root.trace_id));
    let sent = hop2.seen()[1].header("traceparent").unwrap().to_owned();
    assert!(sent.starts_with(&format!("00-{started_here}-")), "{sent}");

    // What hop 2 was sent names hop 1's attempt span.
    let sent = hop2.seen()[0].header("traceparent").unwrap().to_owned();
    let expected = format!(
        "00-{}-{}-01",
        hex(&chain[1].trace_id),
        hex(&chain[1].span_id)
    );
    assert_eq!(sent, expected);
}

/// The span status of a failed call, by the semantic conventions for gRPC: the
/// client's call and attempt spans are errors for any non-OK code, the server's
/// only for a code that says it failed (UNAVAILABLE here, not NOT_FOUND); every
/// span has `rpc.grpc.status_code`. `traces`: NOT_FOUND's, then UNAVAILABLE's.
fn span_status_follows_the_code(spans: &[Span], traces: &[String]) {
    let error = StatusCode::Error as i32;
    let unset = StatusCode::Unset as i32;
    let expected = [
        ("5", "no such policy", [error, error, unset]),
        ("14", "down for maintenance", [error, error, error]),
    ];
    for (trace, (code, message, statuses)) in traces.iter().zip(expected) {
        let in_trace: Vec<&Span> = spans
            .iter()
            .filter(|s| &hex(&s.trace_id) == trace)
            .collect();
        for (role_name, status) in ["call", "attempt", "server"].into_iter().zip(statuses) {
            let span = in_trace
                .iter()
                .find(|s| role(s) == role_name)
                .unwrap_or_else(|| panic!("a {role_name} span in {trace}: {in_trace:#?}"));
            assert_eq!(
                attribute(span, "rpc.grpc.status_code").as_deref(),
                Some(code),
                "{role_name}"
            );
            let got = span.status.clone().unwrap_or_default();
            assert_eq!(
                got.code, status,
                "{role_name} of a call ending {code}: {got:?}"
            );
            if status == error {
                assert_eq!(got.message, message, "{role_name}");
            }
        }
    }
}
