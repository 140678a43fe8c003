//! Reading a call's gRPC outcome off HTTP, for the layers: from the response
//! headers when they carry it, from the trailers when they do not, or from a
//! transport error.
//!
//! gRFC A6's commit rule is what shapes this: a response whose headers carry
//! `grpc-status` (trailers-only) is the whole answer, known at once and still
//! retryable; a gRPC response whose headers carry none has committed the call,
//! and its status comes at the end of the body. So the head is classified when
//! it arrives ([`head`]), and the rest is learnt by an [`Observed`] body that
//! hands the final code to whoever needs it (a breaker permit, the retry
//! throttle) when the trailers pass by. A `grpc-status-details-bin` that tonic
//! would panic on is dropped on the way, as the engine's transport does.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{Code, Status};

use super::breaker::BreakerOpen;
use crate::client::transport::{Signal, drop_invalid_details};
use crate::wire;

/// What a response's head says about the call.
#[derive(Debug)]
pub(crate) enum Head {
    /// A gRPC response whose status comes in the trailers: the call is committed.
    Committed,
    /// The whole outcome is here: a trailers-only response, or an HTTP answer
    /// that is not gRPC (a proxy's 503 page), with the code grpc-go gives it.
    Final(Status),
}

/// Classifies a response's head, dropping status details tonic could not read.
pub(crate) fn head<B>(response: &mut http::Response<B>) -> Head {
    let http_status = response.status();
    let headers = response.headers_mut();
    if headers.contains_key(wire::GRPC_STATUS) {
        drop_invalid_details(headers);
        return Head::Final(status_of(headers));
    }
    let grpc_content = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if http_status == StatusCode::OK && grpc_content {
        return Head::Committed;
    }
    Head::Final(Status::new(
        wire::code_for_http_status(http_status),
        format!("the server answered HTTP {http_status}, not gRPC"),
    ))
}

/// The status in `headers` (trailers, or a trailers-only head), its metadata
/// included (the server's pushback is there).
fn status_of(headers: &HeaderMap) -> Status {
    Status::from_header_map(headers)
        .unwrap_or_else(|| Status::unknown("the server sent no grpc-status"))
}

/// The code of the status in trailers.
fn code_of(trailers: &HeaderMap) -> Code {
    trailers
        .get(wire::GRPC_STATUS)
        .map_or(Code::Unknown, |v| Code::from_bytes(v.as_bytes()))
}

/// What a transport error (the inner service's `Err`) says about the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ErrorClass {
    /// The code the caller will see, as the engine reads it.
    pub(crate) code: Code,
    /// The server refused the stream before processing it (REFUSED_STREAM):
    /// safe to send again (gRFC A6 transparent retry).
    pub(crate) unprocessed: bool,
    /// A breaker layer refused the attempt: nothing was sent.
    pub(crate) rejected: bool,
}

/// Classifies a transport error by its source chain, as the engine's transport
/// does: a status is its code, tonic's own `grpc-timeout` timer is the deadline,
/// a refused stream was never processed, anything else (a connection that
/// failed or broke) is UNAVAILABLE.
pub(crate) fn error(error: &(dyn Error + 'static)) -> ErrorClass {
    let mut class = ErrorClass {
        code: Code::Unavailable,
        unprocessed: false,
        rejected: false,
    };
    match Signal::scan(error) {
        Signal::TimedOut => {
            class.code = Code::DeadlineExceeded;
            return class;
        }
        Signal::Refused => {
            class.unprocessed = true;
            return class;
        }
        Signal::None => {}
    }
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BreakerOpen>() {
            class.rejected = true;
            return class;
        }
        if let Some(status) = e.downcast_ref::<Status>() {
            class.code = status.code();
            return class;
        }
        source = e.source();
    }
    class
}

/// The status a transport error stands for, for the retry decision.
pub(crate) fn error_status(error: &(dyn Error + 'static), class: ErrorClass) -> Status {
    match error.downcast_ref::<Status>() {
        Some(status) => {
            Status::with_metadata(status.code(), status.message(), status.metadata().clone())
        }
        None => Status::new(class.code, error.to_string()),
    }
}

/// What to do with a call's final code once it is known.
///
/// Implemented by what the layers hand to [`Observed`]: a breaker's permit
/// records the outcome, the retry throttle refills on OK. Dropped without
/// [`finish`](Finish::finish), it learns nothing (the caller dropped the body
/// before its end).
pub trait Finish {
    /// The call ended with `code`.
    fn finish(self, code: Code);
}

pin_project! {
    /// A response body that reports the call's final code (from its trailers,
    /// or from the error that ended it) to `F` once, and otherwise passes every
    /// frame through unchanged.
    #[derive(Debug)]
    pub struct Observed<B, F> {
        #[pin]
        inner: B,
        finish: Option<F>,
    }
}

impl<B, F: Finish> Observed<B, F> {
    /// `inner`, reporting to `finish` (`None`: nothing to report, the outcome
    /// was known from the head).
    pub(crate) fn new(inner: B, finish: Option<F>) -> Self {
        Self { inner, finish }
    }
}

impl<B, F> Body for Observed<B, F>
where
    B: Body<Data = Bytes>,
    B::Error: Error + 'static,
    F: Finish,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut frame = std::task::ready!(this.inner.poll_frame(cx));
        let code = match &mut frame {
            Some(Ok(frame)) => match frame.trailers_mut() {
                Some(trailers) => {
                    drop_invalid_details(trailers);
                    Some(code_of(trailers))
                }
                None => None,
            },
            Some(Err(e)) => Some(self::error(e).code),
            // The body ended without trailers: the server broke the protocol.
            None => Some(Code::Internal),
        };
        if let Some(code) = code
            && let Some(finish) = this.finish.take()
        {
            finish.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> http::Response<()> {
        let mut r = http::Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(*k, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn heads_are_classified_by_grpc_status() {
        let grpc = ("content-type", "application/grpc");
        assert!(matches!(head(&mut response(200, &[grpc])), Head::Committed));
        let Head::Final(s) = head(&mut response(
            200,
            &[grpc, ("grpc-status", "14"), ("grpc-retry-pushback-ms", "5")],
        )) else {
            panic!("trailers-only")
        };
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.metadata().get("grpc-retry-pushback-ms").is_some());
        let Head::Final(s) = head(&mut response(503, &[("content-type", "text/html")])) else {
            panic!("not gRPC")
        };
        assert_eq!(s.code(), Code::Unavailable);
    }

    #[test]
    fn undecodable_details_are_dropped_not_panicked_on() {
        let mut r = response(
            200,
            &[("grpc-status", "3"), ("grpc-status-details-bin", "!!!")],
        );
        let Head::Final(s) = head(&mut r) else {
            panic!("trailers-only")
        };
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(!r.headers().contains_key("grpc-status-details-bin"));
    }

    #[test]
    fn transport_errors_are_classified_by_their_source_chain() {
        let status: Box<dyn Error + Send + Sync> = Box::new(Status::aborted("x"));
        assert_eq!(error(&*status).code, Code::Aborted);
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        // A locally made h2 error is not the server's refusal.
        assert!(!error(&refused).unprocessed);
        let other: Box<dyn Error + Send + Sync> = "connection reset".into();
        assert_eq!(error(&*other).code, Code::Unavailable);
    }
}
