//! A served call's outcome, reported when its response ends.
//!
//! gRPC puts a call's status in the response headers of an answer without
//! messages (trailers-only: how a unary handler's error is sent), and otherwise
//! in the trailers after the last message. So what reports a call's outcome —
//! its [metrics](super::metrics) and, with the `otel` feature, its server span —
//! waits for the end of the response: [`OutcomeFuture`] passes the handler's
//! answer on with its body wrapped in an [`OutcomeBody`], which reports the
//! status its trailers carry. A stream that fails after some messages is
//! reported under its error, not as OK; its latency (and its span) runs to its
//! end. A call the peer abandons before its status (a cancel, a lost
//! connection), before the handler answered or while its response is sent, is
//! reported as CANCELLED; abandoned before any answer, it counts under the
//! method only if the method has answered before (a peer's made-up path, reset
//! at once, must not take a place in the metrics' table of methods). A service
//! that fails instead of answering is reported, the same way, as UNKNOWN.
//!
//! Both are concrete types: no `Box` per call. Without metrics or spans they
//! only pass the answer through.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::Code;

use super::metrics::Recorder;
use crate::wire::GRPC_STATUS;

/// Where a call's outcome goes: its metrics, its span. Empty: nowhere.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    metrics: Option<(Recorder, Instant)>,
    #[cfg(feature = "otel")]
    span: Option<tracing::Span>,
}

impl Outcome {
    /// Records the call into `recorder`, timed from `start`.
    pub(super) fn metrics(mut self, recorder: Recorder, start: Instant) -> Self {
        self.metrics = match recorder {
            Recorder::Off => None,
            recorder => Some((recorder, start)),
        };
        self
    }

    /// Ends `span` with the call's status (feature `otel`).
    #[cfg(feature = "otel")]
    pub(crate) fn span(mut self, span: tracing::Span) -> Self {
        self.span = Some(span);
        self
    }

    fn is_empty(&self) -> bool {
        #[cfg(feature = "otel")]
        if self.span.is_some() {
            return false;
        }
        self.metrics.is_none()
    }

    /// Reports the call as ended with `code`; `headers` (trailers, or the
    /// headers of a trailers-only answer) give the span its message.
    fn report(self, code: Code, headers: Option<&HeaderMap>) {
        if let Some((recorder, start)) = &self.metrics {
            recorder.record(code, *start);
        }
        self.end_span(code, headers);
    }

    /// Reports a call that ended without an answer (abandoned by the peer, or
    /// its service failed) with `code`, under its method only if that is known
    /// to be served.
    fn unanswered(self, code: Code) {
        if let Some((recorder, start)) = &self.metrics {
            recorder.record_unanswered(code, *start);
        }
        self.end_span(code, None);
    }

    /// Ends the span (feature `otel`) with `code` and the `grpc-message` in
    /// `headers`.
    #[cfg_attr(not(feature = "otel"), allow(unused_variables, clippy::unused_self))]
    fn end_span(self, code: Code, headers: Option<&HeaderMap>) {
        #[cfg(feature = "otel")]
        if let Some(span) = self.span {
            let [message] = headers.map_or([None], |h| {
                crate::wire::find(h, [&crate::wire::GRPC_MESSAGE])
            });
            let message = message.map(|m| crate::wire::percent_decode_message(m.as_bytes()));
            crate::otel::ended(
                &span,
                crate::otel::Side::Server,
                code,
                message.as_deref().unwrap_or(""),
            );
        }
    }
}

/// The status code in `headers` (response headers or trailers), if any.
fn status_in(headers: &HeaderMap) -> Option<Code> {
    let [status] = crate::wire::find(headers, [&GRPC_STATUS]);
    status.map(|v| Code::from_bytes(v.as_bytes()))
}

pin_project! {
    /// The future of a served call whose outcome is reported: the inner future,
    /// its answer's body an [`OutcomeBody`].
    pub struct OutcomeFuture<F> {
        #[pin]
        call: F,
        outcome: Option<Outcome>,
    }

    impl<F> PinnedDrop for OutcomeFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the handler answered: the peer is gone, or reset
            // the stream.
            if let Some(outcome) = this.project().outcome.take()
                && !outcome.is_empty()
            {
                outcome.unanswered(Code::Cancelled);
            }
        }
    }
}

impl<F> OutcomeFuture<F> {
    pub(crate) fn new(call: F, outcome: Outcome) -> Self {
        Self {
            call,
            outcome: Some(outcome),
        }
    }
}

impl<F, B, E> Future for OutcomeFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<OutcomeBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.call.poll(cx)) {
            Ok(response) => response,
            Err(e) => {
                // No answer: the service failed (what the peer then sees is up
                // to the server above; UNKNOWN is gRPC's code for an error
                // without a status). Reported now, not as CANCELLED on drop.
                if let Some(outcome) = this.outcome.take() {
                    outcome.unanswered(Code::Unknown);
                }
                return Poll::Ready(Err(e));
            }
        };
        let pending = match this.outcome.take() {
            Some(outcome) if !outcome.is_empty() => match status_in(response.headers()) {
                // Trailers-only: the answer is complete.
                Some(code) => {
                    outcome.report(code, Some(response.headers()));
                    None
                }
                None => Some(outcome),
            },
            _ => None,
        };
        Poll::Ready(Ok(response.map(|body| OutcomeBody { body, pending })))
    }
}

pin_project! {
    /// A served call's response body, reporting the call's outcome when it ends
    /// (see the [module docs](self)).
    pub struct OutcomeBody<B> {
        #[pin]
        body: B,
        pending: Option<Outcome>,
    }

    impl<B> PinnedDrop for OutcomeBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its status was sent: the peer is gone, or reset
            // the stream.
            if let Some(outcome) = this.project().pending.take() {
                outcome.report(Code::Cancelled, None);
            }
        }
    }
}

impl<B> OutcomeBody<B> {
    /// `body`, reporting nothing (a server without tai's layer).
    pub(crate) fn unreported(body: B) -> Self {
        Self {
            body,
            pending: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for OutcomeBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if this.pending.is_some() {
            let ended = match &frame {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|t| (status_in(t).unwrap_or(Code::Unknown), Some(t))),
                // Ended without a status: the client sees none either.
                None => Some((Code::Unknown, None)),
                // The body failed: hyper resets the stream.
                Some(Err(_)) => Some((Code::Internal, None)),
            };
            if let Some((code, trailers)) = ended
                && let Some(outcome) = this.pending.take()
            {
                outcome.report(code, trailers);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
