//! Message size limits, both ways, answered with RESOURCE_EXHAUSTED.
//!
//! The gRPC status-code spec says a message over a limit is RESOURCE_EXHAUSTED;
//! tonic's codec says OUT_OF_RANGE, and by default limits only what it receives
//! (4 MiB), never what it sends. So the server reads each message's 5-byte
//! header in the call's body as it passes ([`Frames`]), before tonic does:
//! - a request message over the limit fails the request body
//!   ([`RequestBody`]) with RESOURCE_EXHAUSTED, which tonic's decoder hands to
//!   the call as its status;
//! - a response message over the limit is not sent ([`ResponseBody`]): the
//!   response ends there, with RESOURCE_EXHAUSTED in its trailers.
//!
//! The lengths are those on the wire (compressed, if so). A service's own tonic
//! limit still applies (after decompression): its OUT_OF_RANGE "message length
//! too large" answers are rewritten to RESOURCE_EXHAUSTED too, so the code is the
//! same whichever limit a message hits first.
//!
//! Where each is applied: the request limit where the connection's service
//! first boxes the request body (`call.rs`), the response limit right around
//! the routes ([`ResponseLimit`]), inside the layers that report a call's
//! outcome, so that the metrics and the span see the status the client is
//! sent, not the one the handler meant to send.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;
use tower::Service;

use super::frames::{Frames, Grpc, Shape};
use crate::wire::{GRPC_MESSAGE, GRPC_STATUS, status_trailers};

/// The largest message a server receives and sends unless told otherwise: 4 MiB,
/// tonic's default for receiving.
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;

/// The message limits of one direction of a call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limit {
    max: usize,
    what: &'static str,
}

impl Limit {
    pub(crate) const fn request(max: usize) -> Self {
        Self {
            max,
            what: "request",
        }
    }

    pub(crate) const fn response(max: usize) -> Self {
        Self {
            max,
            what: "response",
        }
    }

    fn status(self, len: u64) -> Status {
        Status::resource_exhausted(format!(
            "the {} message is {len} bytes, over this server's limit of {} bytes",
            self.what, self.max
        ))
    }

    /// Reads `data`; `Err((offset, status))` if a message starting at `offset`
    /// is over the limit.
    fn check(self, frames: &mut Frames<Grpc>, data: &[u8]) -> Result<(), (usize, Status)> {
        let mut over = None;
        let at = frames.feed(data, |header| {
            let len = Grpc::payload_len(header);
            if len > self.max as u64 {
                over = Some(len);
            }
            over.is_none()
        });
        match (at, over) {
            (Some(at), Some(len)) => Err((at, self.status(len))),
            _ => Ok(()),
        }
    }
}

pin_project! {
    /// A request body whose messages are held to a limit.
    pub(crate) struct RequestBody<B> {
        #[pin]
        body: B,
        limit: Limit,
        frames: Frames<Grpc>,
        failed: bool,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(body: B, limit: Limit) -> Self {
        Self {
            body,
            limit,
            frames: Frames::new(),
            failed: false,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<crate::BoxError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(Status::from_error(e.into())))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && let Err((_, status)) = this.limit.check(this.frames, data)
        {
            *this.failed = true;
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Holds the messages of the routes' answers to a limit: the service
/// [`ResponseLimit`] puts around the server's routes.
#[derive(Clone, Debug)]
pub(crate) struct ResponseLimit<S> {
    inner: S,
    limit: Limit,
}

impl<S> ResponseLimit<S> {
    pub(crate) fn new(inner: S, limit: Limit) -> Self {
        Self { inner, limit }
    }
}

impl<S, Request, B> Service<Request> for ResponseLimit<S>
where
    S: Service<Request, Response = http::Response<B>>,
{
    type Response = http::Response<ResponseBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        ResponseFuture {
            call: self.inner.call(request),
            limit: self.limit,
        }
    }
}

pin_project! {
    /// The future of a call through [`ResponseLimit`].
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        call: F,
        limit: Limit,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.call.poll(cx))?;
        // A trailers-only answer carries its status in the headers.
        too_large_is_resource_exhausted(response.headers_mut());
        let limit = *this.limit;
        Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, limit))))
    }
}

pin_project! {
    /// A response body whose messages are held to a limit.
    pub(crate) struct ResponseBody<B> {
        #[pin]
        body: B,
        limit: Limit,
        frames: Frames<Grpc>,
        // Trailers to send in place of the rest of the body.
        // Boxed (rare), so that the response, moved up through the layers,
        // stays small.
        refused: Option<Box<HeaderMap>>,
        done: bool,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(body: B, limit: Limit) -> Self {
        Self {
            body,
            limit,
            frames: Frames::new(),
            refused: None,
            done: false,
        }
    }

    /// `body`, under no limit (an answer the server makes itself).
    pub(crate) fn unlimited(body: B) -> Self {
        Self::new(body, Limit::response(usize::MAX))
    }
}

/// An empty body: what a layer above that answers by itself (the deadline's
/// DEADLINE_EXCEEDED) makes with [`Status::into_http`].
impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::unlimited(B::default())
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes, Error = Status>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if let Some(trailers) = this.refused.take() {
            *this.done = true;
            return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
        }
        let frame = match ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => {
                *this.done = true;
                return Poll::Ready(other);
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => match this.limit.check(this.frames, &data) {
                Ok(()) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Err((at, status)) => {
                    tracing::debug!("{}", status.message());
                    let trailers = status_trailers(&status);
                    if at == 0 {
                        *this.done = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    *this.refused = Some(Box::new(trailers));
                    return Poll::Ready(Some(Ok(Frame::data(data.slice(..at)))));
                }
            },
            Err(frame) => frame,
        };
        match frame.into_trailers() {
            Ok(mut trailers) => {
                too_large_is_resource_exhausted(&mut trailers);
                *this.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Err(other) => Poll::Ready(Some(Ok(other))),
        }
    }

    fn is_end_stream(&self) -> bool {
        // An empty answer (trailers-only) ends with its headers.
        self.done || (self.refused.is_none() && self.body.is_end_stream())
    }
}

/// tonic's own size errors ("Error, decoded message length too large: ..."),
/// OUT_OF_RANGE, made RESOURCE_EXHAUSTED.
fn too_large_is_resource_exhausted(headers: &mut HeaderMap) {
    const OUT_OF_RANGE: &str = "11";
    const TONIC_TOO_LARGE: &[u8] = b"message%20length%20too%20large";
    let [status, message] = crate::wire::find(headers, [&GRPC_STATUS, &GRPC_MESSAGE]);
    let too_large = status.is_some_and(|s| s == OUT_OF_RANGE)
        && message.is_some_and(|m| {
            m.as_bytes()
                .windows(TONIC_TOO_LARGE.len())
                .any(|w| w == TONIC_TOO_LARGE)
        });
    if too_large {
        headers.insert(GRPC_STATUS, HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_size_errors_become_resource_exhausted_and_nothing_else_changes() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
        );
        let mut headers = too_large.into_http::<()>().headers().clone();
        too_large_is_resource_exhausted(&mut headers);
        assert_eq!(headers[GRPC_STATUS], "8");

        let mut other = Status::out_of_range("page 9 of 8")
            .into_http::<()>()
            .headers()
            .clone();
        too_large_is_resource_exhausted(&mut other);
        assert_eq!(other[GRPC_STATUS], "11");
    }

    #[test]
    fn refusal_trailers_carry_the_code_and_the_encoded_message() {
        let trailers = status_trailers(&Status::resource_exhausted("100% full"));
        assert_eq!(trailers[GRPC_STATUS], "8");
        assert_eq!(trailers[GRPC_MESSAGE], "100%25 full");
    }
}
