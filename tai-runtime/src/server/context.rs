//! [`ContextLayer`]: runs each call's handler inside its [`CallContext`] (the
//! caller's trace and deadline), so that the tai calls the handler makes carry
//! the trace and end by the caller's deadline. See [`crate::context`] for what
//! the context does on the client side, and why it is a task-local.
//!
//! [`ServerLayer`](super::ServerLayer) includes this layer (sharing its clock
//! read); use it alone on a tonic server that has its own deadline and metrics
//! layers. The future is tokio's task-local future around the handler's: no
//! `Box` per call.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

use super::outcome::{Outcome, OutcomeBody, OutcomeFuture};
use crate::context::{self, CallContext, DEFAULT_DEADLINE_MARGIN, Scoped, TraceContext};
use crate::wire;

/// Runs every call's handler inside the call's [`CallContext`], so that the
/// tai calls it makes carry the trace and end by the caller's deadline (see
/// [`crate::context`]).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let (_, health) = tonic_health::server::health_reporter();
/// use std::time::Duration;
/// use tai_runtime::server::ContextLayer;
///
/// tonic::transport::Server::builder()
///     // Outgoing calls end 20 ms before the caller's deadline.
///     .layer(ContextLayer::new().deadline_margin(Duration::from_millis(20)))
///     .add_service(health)
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ContextLayer {
    margin: Duration,
}

impl Default for ContextLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ContextLayer {
    /// Outgoing calls end [`DEFAULT_DEADLINE_MARGIN`] before the caller's
    /// deadline.
    pub const fn new() -> Self {
        Self {
            margin: DEFAULT_DEADLINE_MARGIN,
        }
    }

    /// Outgoing calls made while handling a call end `margin` before its
    /// caller's deadline: the time the handler keeps to answer after they fail.
    pub const fn deadline_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The context of a call with `trace` whose `grpc-timeout` is `timeout`, its
    /// deadline counted from `start()` (called only if there is one).
    pub(super) fn at(
        &self,
        trace: TraceContext,
        timeout: Option<Duration>,
        start: impl FnOnce() -> Instant,
    ) -> CallContext {
        let deadline = timeout.and_then(|timeout| start().checked_add(timeout));
        CallContext::new(trace, deadline).with_margin(self.margin)
    }
}

/// A call's `grpc-timeout` and trace, read in one walk over its headers.
pub(super) fn read_headers(headers: &http::HeaderMap) -> (Option<Duration>, TraceContext) {
    let [timeout, traceparent, tracestate, legacy_id] = wire::find(
        headers,
        [
            &wire::GRPC_TIMEOUT,
            &wire::TRACEPARENT_HEADER,
            &wire::TRACESTATE_HEADER,
            &wire::X_TRACE_ID_HEADER,
        ],
    );
    (
        timeout.and_then(|v| wire::timeout::decode(v.as_bytes())),
        TraceContext::from_values(traceparent, tracestate, legacy_id),
    )
}

impl<S> Layer<S> for ContextLayer {
    type Service = WithContext<S>;

    fn layer(&self, inner: S) -> WithContext<S> {
        WithContext {
            inner,
            layer: *self,
        }
    }
}

/// The service [`ContextLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct WithContext<S> {
    inner: S,
    layer: ContextLayer,
}

impl<S, B, RB> Service<http::Request<B>> for WithContext<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<OutcomeBody<RB>>;
    type Error = S::Error;
    type Future = OutcomeFuture<Scoped<Traced<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (timeout, trace) = read_headers(request.headers());
        let context = self.layer.at(trace, timeout, Instant::now);
        let (call, outcome) = serve(context, request, |request| self.inner.call(request));
        OutcomeFuture::new(call, outcome)
    }
}

/// Makes `call` and runs its future inside `context` (and, with the `otel`
/// feature, inside the call's server span, a child of the caller's). The
/// outcome ends that span when the response ends.
pub(super) fn serve<B, RB, E, F>(
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))] mut context: CallContext,
    request: http::Request<B>,
    call: impl FnOnce(http::Request<B>) -> F,
) -> (Scoped<Traced<F>>, Outcome)
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    #[cfg(feature = "otel")]
    let span = crate::otel::server_span(request.uri().path(), context.trace());
    #[cfg(feature = "otel")]
    if let Some((trace_id, ..)) = crate::otel::ids(&span) {
        context.adopt_trace_id(trace_id);
    }
    #[cfg(feature = "otel")]
    let outcome = Outcome::default().span(span.clone());
    #[cfg(not(feature = "otel"))]
    let outcome = Outcome::default();
    let call = context::enter(context, || {
        #[cfg(feature = "otel")]
        return Traced::new(span.in_scope(|| call(request)), span);
        #[cfg(not(feature = "otel"))]
        call(request)
    });
    (call, outcome)
}

/// A served call's future: without the `otel` feature, the handler's own.
#[cfg(not(feature = "otel"))]
pub type Traced<F> = F;

#[cfg(feature = "otel")]
pin_project_lite::pin_project! {
    /// A served call's future inside its server span (feature `otel`): the
    /// span is entered while the handler runs. Its status is recorded when the
    /// response ends (see [`outcome`](super::outcome)), not here: a stream's
    /// status comes in its trailers.
    pub struct Traced<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
    }
}

#[cfg(feature = "otel")]
impl<F> Traced<F> {
    fn new(inner: F, span: tracing::Span) -> Self {
        Self { inner, span }
    }
}

#[cfg(feature = "otel")]
impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll(cx)
    }
}
