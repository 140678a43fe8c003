//! OpenTelemetry spans for tai's calls (feature `otel`): a client span per call,
//! a child span per attempt, a server span per call, with the `rpc.*` semantic
//! convention attributes (`rpc.system = "grpc"`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`) and span status, exported over OTLP/gRPC.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let (layer, provider) = tai_runtime::otel::otlp_layer("governor", "http://127.0.0.1:4317")?;
//! tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
//! // ... serve and call ...
//! provider.shutdown()?; // exports what is left
//! # Ok(()) }
//! ```
//!
//! Why it is shaped so: tai's spans are `tracing` spans (as they were without
//! the feature), so one subscriber sees them in logs and in traces, and
//! `tracing-opentelemetry` makes them OpenTelemetry spans. What the bridge cannot
//! know tai does here: a server span's parent is the caller's `traceparent`
//! (the [call context](crate::context)), and an attempt's `traceparent` names
//! the attempt's own span, so the next hop's server span is its child.

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
    TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tonic::Code;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

use crate::context::{SpanId, TraceContext, TraceId};

/// A `tracing` layer that exports tai's spans (and any others) over OTLP/gRPC to
/// `endpoint` as service `service_name`, in batches, and the provider behind it
/// (call `shutdown` or `force_flush` on it before exiting). Must be called
/// inside a tokio runtime: the exporter's tonic channel runs on it.
///
/// # Errors
///
/// The exporter could not be built (an invalid endpoint).
pub fn otlp_layer<S>(
    service_name: &'static str,
    endpoint: &str,
) -> Result<
    (OpenTelemetryLayer<S, SdkTracer>, SdkTracerProvider),
    opentelemetry_otlp::ExporterBuildError,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tai"));
    Ok((layer, provider))
}

/// `/pkg.Service/Method` as `(pkg.Service, Method)`.
fn split(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

/// A span of `kind` for the call to `path`, named `pkg.Service/Method`, with the
/// `rpc.*` attributes (the status code recorded when the call ends), and any
/// `extra` fields.
macro_rules! rpc_span {
    ($name:literal, $kind:literal, $path:expr $(, $($extra:tt)*)?) => {{
        let path: &str = $path;
        let (service, method) = split(path);
        tracing::info_span!(
            $name,
            otel.name = path.trim_start_matches('/'),
            otel.kind = $kind,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            $($($extra)*)?
        )
    }};
}

/// Which end of a call a span stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// Whether `code` makes the span of `side` an error, by the semantic
/// conventions for gRPC: for a client every code but OK (the call did not do
/// what was asked); for a server only the codes that say the server failed. A
/// server answering NOT_FOUND or INVALID_ARGUMENT did its job, and its span
/// status stays unset.
fn is_error(side: Side, code: Code) -> bool {
    match side {
        Side::Client => code != Code::Ok,
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    }
}

/// Records how the call or attempt of `span` ended: `rpc.grpc.status_code`,
/// and the span status ERROR with the status message when [`is_error`] says
/// so (otherwise the status is left unset, as the conventions ask).
pub(crate) fn ended(span: &tracing::Span, side: Side, code: Code, message: &str) {
    span.record("rpc.grpc.status_code", code as i32);
    if is_error(side, code) {
        span.record("otel.status_code", "ERROR");
        if !message.is_empty() {
            span.record("otel.status_description", message);
        }
    }
}

/// The span of one call served, a child of the caller's span when the call
/// carried a `traceparent`.
pub(crate) fn server_span(path: &str, trace: &TraceContext) -> tracing::Span {
    let span = rpc_span!("grpc.server", "server", path);
    if let Some(parent) = trace.parent_id() {
        let remote = SpanContext::new(
            OtelTraceId::from_bytes(trace.trace_id().0),
            OtelSpanId::from_bytes(parent.0),
            TraceFlags::new(u8::from(trace.sampled())),
            true,
            TraceState::default(),
        );
        // Fails only when the span is disabled or the bridge is not installed:
        // then there is nothing to link.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    span
}

/// The span of one call made, a child of the current span (the handler's server
/// span inside a handler).
pub(crate) fn client_span(path: &'static str) -> tracing::Span {
    rpc_span!("grpc.client", "client", path, method = path)
}

/// The span of one attempt, a child of its call's span (current while the call
/// is polled). `attempt` counts from 1, as `grpc-previous-rpc-attempts` + 1;
/// `hedged`: the call runs under a hedging policy (attempts after the first
/// may overlap). Backoffs and hedges started are events on the call's span.
pub(crate) fn attempt_span(path: &'static str, attempt: u32, hedged: bool) -> tracing::Span {
    rpc_span!(
        "grpc.attempt",
        "client",
        path,
        rpc.grpc.attempt = attempt,
        rpc.grpc.hedged = hedged
    )
}

/// The trace id, span id and flags of `span` as OpenTelemetry assigned them;
/// `None` when it has none (no bridge installed, or the span is disabled).
pub(crate) fn ids(span: &tracing::Span) -> Option<(TraceId, SpanId, u8)> {
    let context = span.context();
    let span = context.span();
    let c = span.span_context();
    c.is_valid().then(|| {
        (
            TraceId(c.trace_id().to_bytes()),
            SpanId(c.span_id().to_bytes()),
            c.trace_flags().to_u8(),
        )
    })
}
