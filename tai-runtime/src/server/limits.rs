//! Message size limits, both ways, answered with RESOURCE_EXHAUSTED.
//!
//! The gRPC status-code spec says a message over a limit is RESOURCE_EXHAUSTED;
//! tonic's codec says OUT_OF_RANGE, and by default limits only what it receives
//! (4 MiB), never what it sends. So the server reads each message's 5-byte
//! header in the call's body as it passes ([`Frames`]), before tonic does:
//! - a request message over the limit fails the request body with
//!   RESOURCE_EXHAUSTED, which tonic's decoder hands to the call as its status;
//! - a response message over the limit is not sent: the response ends there,
//!   with RESOURCE_EXHAUSTED in its trailers.
//!
//! The lengths are those on the wire (compressed, if so). A service's own tonic
//! limit still applies (after decompression): its OUT_OF_RANGE "message length
//! too large" answers are rewritten to RESOURCE_EXHAUSTED too, so the code is the
//! same whichever limit a message hits first.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

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

pin_project! {
    /// A response body whose messages are held to a limit, keeping `hold` (what
    /// counts the call as in flight) until it ends.
    pub(crate) struct ResponseBody<B, H> {
        #[pin]
        body: B,
        limit: Limit,
        frames: Frames<Grpc>,
        // Trailers to send in place of the rest of the body.
        // Boxed (rare), so that the response, moved up through the layers,
        // stays small.
        refused: Option<Box<HeaderMap>>,
        hold: Option<H>,
        done: bool,
    }
}

impl<B, H> ResponseBody<B, H> {
    pub(crate) fn new(body: B, limit: Limit, hold: Option<H>) -> Self {
        Self {
            body,
            limit,
            frames: Frames::new(),
            refused: None,
            hold,
            done: false,
        }
    }
}

impl<B, H> Body for ResponseBody<B, H>
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
            (*this.done, *this.hold) = (true, None);
            return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
        }
        let frame = match std::task::ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => {
                (*this.done, *this.hold) = (true, None);
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
                        (*this.done, *this.hold) = (true, None);
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
                (*this.done, *this.hold) = (true, None);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Err(other) => Poll::Ready(Some(Ok(other))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// tonic's own size errors ("Error, decoded message length too large: ..."),
/// OUT_OF_RANGE, made RESOURCE_EXHAUSTED.
pub(crate) fn too_large_is_resource_exhausted(headers: &mut HeaderMap) {
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
