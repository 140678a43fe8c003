//! The transport of one attempt: the client's transport as tonic sees it, with a
//! screen between the peer and tonic.
//!
//! tonic reads a response in ways a peer can abuse or that lose what the retry
//! rules need, so every response and every transport error passes through here
//! first:
//! - tonic 0.14 panics (`expect`) on a `grpc-status-details-bin` that is not
//!   base64, in a trailers-only response and in trailers alike. The header is
//!   dropped; the status code and message stay. Nothing a peer sends may panic us.
//! - An HTTP response without `grpc-status` that is not gRPC (a proxy's 502/503/504
//!   page, `text/html`) becomes a trailers-only response with the code grpc-go
//!   derives from the HTTP status. tonic would read its body first and fail the
//!   call *after* headers, when gRFC A6 no longer allows a retry.
//! - Transport errors are classified before tonic flattens them into a `Status`
//!   (which drops their source): a stream the server refused with REFUSED_STREAM
//!   was never processed (A6 transparent retry), and tonic's own `grpc-timeout`
//!   timer (`TimeoutExpired`, which tonic reports as CANCELLED) is the call's
//!   deadline. Such a failure reaches the attempt as an empty response carrying a
//!   [`TransportFailure`] extension, which the attempt reads before anything else.
//!
//! The screen runs on every response, so it reads a head in one pass over its
//! entries ([`Head::scan`]): peers send a handful of headers and trailers, and
//! comparing a few names costs a fraction of hashing the custom ones
//! (`grpc-status`, `grpc-status-details-bin`) once per lookup; a large map is
//! still looked up by hash.
//!
//! The attempt's `grpc-timeout` is written here too, straight into the HTTP request
//! tonic built: through tonic's metadata the same header costs about three times
//! as much (the name is validated at run time and hashed by each of the removals
//! of tonic's sanitising pass).

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::client::GrpcService;
use tonic::{Code, Status};

use crate::wire;

use crate::BoxError;

/// The transport of one attempt: the client's transport, the attempt's
/// `grpc-timeout`, and the screen described in the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Screened<T> {
    inner: T,
    timeout: Option<HeaderValue>,
}

impl<T> Screened<T> {
    pub(crate) fn new(inner: T, timeout: Option<HeaderValue>) -> Self {
        Self { inner, timeout }
    }
}

impl<T> tower::Service<http::Request<tonic::body::Body>> for Screened<T>
where
    T: GrpcService<tonic::body::Body, Error: Into<BoxError>>,
{
    type Response = http::Response<PeerBody<T::ResponseBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<T::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        GrpcService::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(value) = self.timeout.take() {
            request.headers_mut().insert(wire::GRPC_TIMEOUT, value);
        }
        ResponseFuture {
            inner: GrpcService::call(&mut self.inner, request),
        }
    }
}

pin_project! {
    /// The response of one attempt, screened.
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<PeerBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match std::task::ready!(self.project().inner.poll(cx)) {
            Ok(response) => screen(response),
            Err(error) => failed(TransportFailure::classify(error.into())),
        }))
    }
}

/// What a transport error's whole source chain says beyond its status code.
/// The chain is walked to its end: tai's channel wraps an HTTP/2 error in a
/// `Status` whose source it still is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// tonic's own `grpc-timeout` timer ended the call (tonic says CANCELLED).
    TimedOut,
    /// The server refused the stream before processing it (HTTP/2 REFUSED_STREAM).
    Refused,
    /// Neither.
    None,
}

impl Signal {
    pub(crate) fn scan(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut source = Some(error);
        while let Some(e) = source {
            if e.is::<tonic::TimeoutExpired>() {
                return Signal::TimedOut;
            }
            if let Some(h2) = e.downcast_ref::<h2::Error>()
                && h2.is_reset()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
            {
                return Signal::Refused;
            }
            source = e.source();
        }
        Signal::None
    }
}

/// A transport failure of an attempt, classified while its source chain is still
/// there to read.
#[derive(Clone, Debug)]
pub(crate) struct TransportFailure {
    pub(crate) code: Code,
    pub(crate) message: String,
    /// The server refused the stream before processing it (HTTP/2 REFUSED_STREAM):
    /// sending it again is safe even for a call that is not idempotent.
    pub(crate) unprocessed: bool,
    /// tonic's own `grpc-timeout` timer ended the attempt: the call's deadline.
    pub(crate) timed_out: bool,
}

impl TransportFailure {
    /// Reads what matters out of a transport error.
    pub(crate) fn classify(error: BoxError) -> Self {
        match Signal::scan(&*error) {
            Signal::TimedOut => {
                return Self {
                    code: Code::DeadlineExceeded,
                    message: "deadline exceeded (the transport's grpc-timeout timer)".to_owned(),
                    unprocessed: false,
                    timed_out: true,
                };
            }
            Signal::Refused => {
                return Self {
                    code: Code::Unavailable,
                    message: "the server refused the stream before processing it (REFUSED_STREAM)"
                        .to_owned(),
                    unprocessed: true,
                    timed_out: false,
                };
            }
            Signal::None => {}
        }
        // What tonic would have made of it (a `Status` of the transport's, a
        // connection error, an h2 or hyper error).
        let status = Status::from_error(error);
        Self {
            code: status.code(),
            message: status.message().to_owned(),
            unprocessed: false,
            timed_out: false,
        }
    }

    pub(crate) fn into_status(self) -> Status {
        Status::new(self.code, self.message)
    }
}

/// An empty response that carries `failure` to the attempt.
fn failed<B>(failure: TransportFailure) -> http::Response<PeerBody<B>> {
    let mut response = http::Response::new(PeerBody::Empty);
    response.extensions_mut().insert(failure);
    response
}

/// What the screen reads of a head (headers or trailers).
#[derive(Default)]
struct Head {
    /// `grpc-status` is present (a trailers-only response, or trailers).
    status: bool,
    /// The (first) `content-type` is gRPC's.
    grpc_content: bool,
    /// The (first) `grpc-status-details-bin` is not base64 (tonic would panic).
    invalid_details: bool,
}

impl Head {
    /// Walks a small head once, judging each header as it passes, rather than
    /// collecting the three with [`wire::find`] and judging them after: every
    /// response passes here twice, and the walk is 75 instructions cheaper per
    /// call (callgrind, `tai-bench path tai_bare`).
    fn scan(headers: &HeaderMap) -> Self {
        let grpc = |v: &HeaderValue| v.as_bytes().starts_with(b"application/grpc");
        if headers.len() > wire::SCAN_LIMIT {
            return Self {
                status: headers.contains_key(wire::GRPC_STATUS),
                grpc_content: headers.get(http::header::CONTENT_TYPE).is_some_and(grpc),
                invalid_details: headers
                    .get(wire::GRPC_STATUS_DETAILS)
                    .is_some_and(invalid_details),
            };
        }
        let mut head = Self::default();
        let (mut content_type, mut details) = (false, false);
        for (name, value) in headers {
            if name == http::header::CONTENT_TYPE {
                if !std::mem::replace(&mut content_type, true) {
                    head.grpc_content = grpc(value);
                }
            } else if name == wire::GRPC_STATUS {
                head.status = true;
            } else if name == wire::GRPC_STATUS_DETAILS && !std::mem::replace(&mut details, true) {
                head.invalid_details = invalid_details(value);
            }
        }
        head
    }
}

/// tonic decodes `grpc-status-details-bin` with the standard alphabet, padding
/// optional, and panics on anything else.
fn invalid_details(value: &HeaderValue) -> bool {
    wire::STATUS_DETAILS_BASE64
        .decode(value.as_bytes())
        .is_err()
}

/// Screens the head of a response (see the module docs).
fn screen<B>(mut response: http::Response<B>) -> http::Response<PeerBody<B>> {
    let head = Head::scan(response.headers());
    if head.status {
        // Trailers-only: tonic reads the status from these headers.
        if head.invalid_details {
            drop_details(response.headers_mut());
        }
        return response.map(PeerBody::passthrough);
    }
    let http_status = response.status();
    if http_status == StatusCode::OK && head.grpc_content {
        return response.map(PeerBody::passthrough);
    }
    // Not a gRPC response: a trailers-only one with the code grpc-go derives from
    // the HTTP status, so that the attempt fails uncommitted, before any body.
    let code = wire::code_for_http_status(http_status);
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let message = wire::percent_encode_message(&format!(
        "the server answered HTTP {http_status} with content-type {content_type}, not gRPC"
    ));
    let (mut parts, _body) = response.into_parts();
    parts.status = StatusCode::OK;
    parts.headers.clear();
    parts
        .headers
        .insert(wire::GRPC_STATUS, HeaderValue::from(code as i32));
    if let Ok(message) = HeaderValue::from_str(&message) {
        parts.headers.insert(wire::GRPC_MESSAGE, message);
    }
    http::Response::from_parts(parts, PeerBody::Empty)
}

/// Removes a `grpc-status-details-bin` that tonic could not decode (it would
/// panic); the rest of the status stays.
pub(crate) fn drop_invalid_details(headers: &mut HeaderMap) {
    if Head::scan(headers).invalid_details {
        drop_details(headers);
    }
}

fn drop_details(headers: &mut HeaderMap) {
    tracing::debug!("dropped a grpc-status-details-bin that is not base64");
    headers.remove(wire::GRPC_STATUS_DETAILS);
}

pin_project! {
    /// A response body whose trailers are screened like trailers-only headers.
    #[project = PeerBodyProj]
    pub(crate) enum PeerBody<B> {
        Passthrough { #[pin] inner: B },
        Empty,
    }
}

impl<B> PeerBody<B> {
    fn passthrough(inner: B) -> Self {
        PeerBody::Passthrough { inner }
    }
}

impl<B> Body for PeerBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            PeerBodyProj::Passthrough { inner } => {
                let mut frame = std::task::ready!(inner.poll_frame(cx));
                if let Some(Ok(frame)) = &mut frame
                    && let Some(trailers) = frame.trailers_mut()
                {
                    drop_invalid_details(trailers);
                }
                Poll::Ready(frame)
            }
            PeerBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PeerBody::Passthrough { inner } => inner.is_end_stream(),
            PeerBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PeerBody::Passthrough { inner } => inner.size_hint(),
            PeerBody::Empty => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head with `extra` unrelated headers besides a gRPC content type, a
    /// `grpc-status` and a `grpc-status-details-bin` of `details`.
    fn head(extra: usize, details: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for i in 0..extra {
            let name = http::HeaderName::from_bytes(format!("x-extra-{i}").as_bytes()).unwrap();
            headers.insert(name, HeaderValue::from_static("v"));
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        headers.insert(wire::GRPC_STATUS, HeaderValue::from_static("14"));
        headers.insert(wire::GRPC_STATUS_DETAILS, HeaderValue::from_static(details));
        headers
    }

    #[test]
    fn scanned_and_hashed_heads_read_the_same() {
        for extra in [0, wire::SCAN_LIMIT] {
            let bad = Head::scan(&head(extra, "!!!"));
            assert!(
                bad.status && bad.grpc_content && bad.invalid_details,
                "{extra}"
            );
            let good = Head::scan(&head(extra, "CAE"));
            assert!(
                good.status && good.grpc_content && !good.invalid_details,
                "{extra}"
            );

            let mut headers = head(extra, "!!!");
            drop_invalid_details(&mut headers);
            assert!(!headers.contains_key(wire::GRPC_STATUS_DETAILS), "{extra}");
            assert!(headers.contains_key(wire::GRPC_STATUS), "{extra}");
        }
    }

    #[test]
    fn only_the_first_content_type_counts() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html"),
        );
        headers.append(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        assert!(!Head::scan(&headers).grpc_content);
    }
}
