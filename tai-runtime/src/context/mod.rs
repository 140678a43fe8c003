//! The context of the call a server is handling — its trace and its caller's
//! deadline — carried to every tai call made while handling it.
//!
//! A service in the middle of a chain (hop 1 calls hop 2, whose handler calls hop
//! 3) must not outlive its caller: whatever hop 2 does after hop 1's deadline is
//! work nobody waits for. And the logs and spans of the three hops must join into
//! one trace. So the server's layer ([`ServerLayer`], or [`ContextLayer`] alone)
//! reads the call's `traceparent` / `tracestate` / `x-trace-id` and `grpc-timeout`
//! into a [`CallContext`], and runs the handler inside it. Every tai call made
//! while the handler runs then:
//!
//! - ends no later than the caller's deadline minus the server's margin
//!   ([`ContextLayer::deadline_margin`]), and fails at once with
//!   DEADLINE_EXCEEDED, sending nothing, once that has passed;
//! - sends, with each attempt, a `traceparent` with the same trace id and a
//!   fresh span id (a child of this call), the caller's `tracestate`, and
//!   `x-trace-id` for older services.
//!
//! ```no_run
//! # async fn handler() -> Result<(), tai_runtime::Status> {
//! // Inside a handler served behind tai's server layer:
//! if let Some(context) = tai_runtime::context::current() {
//!     tracing::info!(trace_id = %context.trace().trace_id(), "handling");
//! }
//! // A background task that outlives the request: its calls keep the trace but
//! // not the request's deadline.
//! tokio::spawn(tai_runtime::context::detached(async {
//!     // ... tai calls ...
//! }));
//! # Ok(()) }
//! ```
//!
//! Why a task-local: the context must reach calls made deep inside a handler
//! without every function passing it along, and it must not leak to other
//! requests served by the same thread. A tokio task-local set around the
//! handler's future (not a thread-local) is exactly the handler's extent; a task
//! the handler spawns starts without it (use [`detached`] to carry the trace).
//! Reading it costs a thread-local lookup; a call made outside any handler
//! allocates nothing for it.
//!
//! The context covers the handler's future. A response stream a handler
//! returns is polled by the server after that future has ended: calls made
//! while producing its items see no context unless the stream runs them inside
//! one (`context::current()` in the handler, [`scope`] in the stream).
//!
//! [`ServerLayer`]: crate::server::ServerLayer
//! [`ContextLayer`]: crate::server::ContextLayer
//! [`ContextLayer::deadline_margin`]: crate::server::ContextLayer::deadline_margin

mod trace;

use std::future::Future;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};

pub use trace::{SpanId, TraceContext, TraceId};

use crate::wire::{TRACEPARENT, TRACESTATE, X_TRACE_ID};

/// How much earlier than its caller's deadline a handler's outgoing calls end by
/// default: time left to the handler to answer after they fail.
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The context of the call being handled: its trace and its caller's deadline.
#[derive(Clone, Debug)]
pub struct CallContext {
    trace: TraceContext,
    deadline: Option<Instant>,
    margin: Duration,
}

impl CallContext {
    /// A context for `trace`, under the caller's `deadline` (none: the caller
    /// sent no `grpc-timeout`), with the [default margin](DEFAULT_DEADLINE_MARGIN).
    pub fn new(trace: TraceContext, deadline: Option<Instant>) -> Self {
        Self {
            trace,
            deadline,
            margin: DEFAULT_DEADLINE_MARGIN,
        }
    }

    /// The same context, with outgoing calls ending `margin` before the caller's
    /// deadline.
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The call's trace.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// When the caller stops waiting (from its `grpc-timeout`).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// When every outgoing call made while handling this one must end: the
    /// caller's deadline minus the margin.
    pub fn outgoing_deadline(&self) -> Option<Instant> {
        // A margin reaching before the clock's origin leaves the deadline as it
        // is: it is that close to the origin, so it has passed anyway.
        self.deadline
            .map(|d| d.checked_sub(self.margin).unwrap_or(d))
    }

    /// Takes `trace_id` as the trace's when it started at this server (no
    /// `traceparent` came): OpenTelemetry chose the server span's trace id, and
    /// the handler's logs and calls must name that one.
    #[cfg(feature = "otel")]
    pub(crate) fn adopt_trace_id(&mut self, trace_id: TraceId) {
        self.trace.adopt_trace_id(trace_id);
    }

    /// The same context without a deadline: for work that outlives the call.
    fn detached(&self) -> Self {
        Self {
            trace: self.trace.clone(),
            deadline: None,
            margin: self.margin,
        }
    }
}

tokio::task_local! {
    /// The context of the call whose handler is running, if any.
    static CONTEXT: Option<CallContext>;
}

/// A future run inside a [`CallContext`] (see [`scope`]).
pub type Scoped<F> = TaskLocalFuture<Option<CallContext>, F>;

/// The context of the call being handled, if this code runs inside a handler
/// served behind tai's server layer (or inside [`scope`]).
pub fn current() -> Option<CallContext> {
    CONTEXT.try_with(Clone::clone).ok().flatten()
}

/// Runs `future` inside `context`: the tai calls it makes are capped by the
/// context's deadline and carry its trace. The server layer does this for each
/// call; use it when serving calls some other way.
///
/// ```
/// use tai_runtime::context::{self, CallContext, TraceContext};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let trace = TraceContext::new_root();
/// let id = trace.trace_id();
/// context::scope(CallContext::new(trace, None), async move {
///     assert_eq!(context::current().unwrap().trace().trace_id(), id);
/// })
/// .await;
/// # }
/// ```
pub fn scope<F: Future>(context: CallContext, future: F) -> Scoped<F> {
    CONTEXT.scope(Some(context), future)
}

/// Makes `call` (a service's `call`, which may already run handler code) and runs
/// the future it returns inside `context`.
#[cfg(feature = "server")]
pub(crate) fn enter<F: Future>(context: CallContext, call: impl FnOnce() -> F) -> Scoped<F> {
    let future = CONTEXT.sync_scope(Some(context.clone()), call);
    CONTEXT.scope(Some(context), future)
}

/// Runs `future` with the current call's trace but without its deadline: for a
/// background task that outlives the request (its calls follow their own
/// deadlines). The context is read when `detached` is called, so it can wrap a
/// future given to `tokio::spawn`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tai_runtime::context::{self, CallContext, TraceContext};
/// use tokio::time::{Duration, Instant};
///
/// let handling = CallContext::new(TraceContext::new_root(), Some(Instant::now() + Duration::from_secs(1)));
/// context::scope(handling, async {
///     let background = tokio::spawn(context::detached(async {
///         context::current().unwrap().deadline()
///     }));
///     assert_eq!(background.await.unwrap(), None);
/// })
/// .await;
/// # }
/// ```
pub fn detached<F: Future>(future: F) -> Scoped<F> {
    let context = CONTEXT
        .try_with(|c| c.as_ref().map(CallContext::detached))
        .ok()
        .flatten();
    CONTEXT.scope(context, future)
}

/// A request extension that opts one call out of the handler's deadline (it
/// keeps the trace): for a call that must finish even if the request being
/// handled is abandoned.
///
/// ```
/// use tai_runtime::{Detached, Request};
///
/// let mut request = Request::new(());
/// request.extensions_mut().insert(Detached);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Detached;

/// The deadline the handler's context puts on an outgoing call, unless the call
/// opted out with [`Detached`].
pub(crate) fn outgoing_deadline(extensions: &tonic::Extensions) -> Option<Instant> {
    handler_deadline(extensions.get::<Detached>().is_some())
}

/// [`outgoing_deadline`] for a request on its way through the tower layers
/// (tonic has moved the request's extensions into the HTTP request's).
pub(crate) fn outgoing_deadline_http(extensions: &http::Extensions) -> Option<Instant> {
    handler_deadline(extensions.get::<Detached>().is_some())
}

fn handler_deadline(detached: bool) -> Option<Instant> {
    let deadline = CONTEXT
        .try_with(|c| c.as_ref().and_then(CallContext::outgoing_deadline))
        .ok()
        .flatten()?;
    (!detached).then_some(deadline)
}

/// Writes the trace into an outgoing attempt's metadata: a `traceparent`, the
/// `tracestate`, and `x-trace-id`. The `traceparent` names `span` (the attempt's
/// OpenTelemetry span, feature `otel`) when there is one, else a fresh span id
/// under the handler's trace; without either, nothing is written (a call made
/// outside any handler, without OpenTelemetry, allocates nothing here). What the
/// caller set in the request's metadata itself is left as it is.
pub(crate) fn write_trace(metadata: &mut MetadataMap, span: Option<(TraceId, SpanId, u8)>) {
    if CONTEXT
        .try_with(|c| write(metadata, c.as_ref(), span))
        .is_err()
    {
        write(metadata, None, span);
    }
}

/// [`write_trace`] for a request on its way through the tower layers: the
/// handler's trace (no attempt span there), into its HTTP headers.
pub(crate) fn write_trace_http(headers: &mut http::HeaderMap) {
    let handling = CONTEXT.try_with(|c| c.is_some()).unwrap_or(false);
    if handling {
        let mut metadata = MetadataMap::from_headers(std::mem::take(headers));
        write_trace(&mut metadata, None);
        *headers = metadata.into_headers();
    }
}

fn write(
    metadata: &mut MetadataMap,
    context: Option<&CallContext>,
    span: Option<(TraceId, SpanId, u8)>,
) {
    let handling = context.map(|c| &c.trace);
    let (trace_id, traceparent) = match (span, handling) {
        (Some((t, s, flags)), _) => (t, trace::traceparent(t, s, flags)),
        (None, Some(h)) => (h.trace_id(), h.traceparent_bytes(SpanId::random())),
        (None, None) => return,
    };
    if !metadata.contains_key(TRACEPARENT) {
        if let Ok(v) = MetadataValue::try_from(&traceparent) {
            metadata.insert(TRACEPARENT, v);
        }
        if let Some(v) = handling
            .and_then(TraceContext::tracestate)
            .and_then(|s| MetadataValue::try_from(s.as_bytes()).ok())
        {
            metadata.insert(TRACESTATE, v);
        }
    }
    if !metadata.contains_key(X_TRACE_ID) {
        let value = match handling.and_then(TraceContext::legacy_id) {
            Some(id) => MetadataValue::try_from(id.as_bytes()).ok(),
            None => MetadataValue::try_from(&trace_id.hex()).ok(),
        };
        if let Some(v) = value {
            metadata.insert(X_TRACE_ID, v);
        }
    }
}
