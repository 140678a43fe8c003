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
use support::{Echo, Script, echo, service, unary_method};
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
    let hop1 = Script::unary(move |_, message| {
        let next = next.clone();
        async move {
            next.unary::<Echo, Echo>(0, message)
                .await
                .map(Response::into_inner)
        }
    });
    client(serve(&hop1))
        .unary::<Echo, Echo>(0, Request::new(echo("x")))
        .await
        .unwrap();
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        let _ = provider.shutdown();
        flushed
    });
    flushed.await.unwrap().expect("spans exported");

    let spans: Vec<Span> = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| attribute(s, "rpc.system").as_deref() == Some("grpc"))
        .cloned()
        .collect();
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let mut roles: Vec<&str> = spans.iter().map(role).collect();
    roles.sort_unstable();
    assert_eq!(
        roles,
        ["attempt", "attempt", "call", "call", "server", "server"],
        "{spans:#?}"
    );

    // From hop 2's server span up to the test's call: each span the child of the
    // one before it, all in one trace.
    let hop2_span = spans
        .iter()
        .filter(|s| role(s) == "server")
        .find(|s| {
            let attempt = by_id[&s.parent_span_id];
            let call = by_id[&attempt.parent_span_id];
            by_id.contains_key(&call.parent_span_id)
        })
        .expect("hop 2's server span, under hop 1's handler");
    let mut chain = vec![hop2_span];
    while let Some(parent) = by_id.get(&chain.last().unwrap().parent_span_id) {
        chain.push(parent);
    }
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
    }
    for (name, value) in [("rpc.grpc.attempt", "1"), ("rpc.grpc.hedged", "false")] {
        assert_eq!(attribute(chain[1], name).as_deref(), Some(value), "{name}");
    }

    // What hop 2 was sent names hop 1's attempt span.
    let sent = hop2.seen()[0].header("traceparent").unwrap().to_owned();
    let expected = format!(
        "00-{}-{}-01",
        hex(&chain[1].trace_id),
        hex(&chain[1].span_id)
    );
    assert_eq!(sent, expected);
}
