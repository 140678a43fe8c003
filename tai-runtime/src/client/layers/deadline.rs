//! The whole-call deadline as a layer: [`DeadlineLayer`].
//!
//! One deadline covers the call — every attempt and backoff of the layers
//! inside, and the reading of the response body. The server is told how much is
//! left (`grpc-timeout`), the layers inside learn the deadline (a request
//! extension: a retry that would start after it is not made, each attempt's
//! `grpc-timeout` says what is left), and when it passes the caller gets
//! DEADLINE_EXCEEDED, never the CANCELLED tonic reports for its own timer.
//!
//! A call made inside a tai handler is capped by the handler's deadline too
//! (its caller's, minus the server's margin; see [`crate::context`]), and
//! fails at once, sending nothing, once that has passed; it carries the
//! handler's trace as a child `traceparent`, as a generated client's call
//! does. The layers inside (retry, hedge) apply the same cap on their own.
//!
//! Each call here has its own timer (one `tokio::time::Sleep`); the generated
//! client's calls share one per client instead.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};

use super::ByMethod;
use super::classify;
use crate::BoxError;
use crate::client::deadline as shared;
use crate::policy::ServicePolicy;
use crate::wire;

/// The deadline of a call, for the layers inside the deadline layer.
#[derive(Clone, Copy, Debug)]
struct CallDeadline(Instant);

/// The deadline of the call `request` belongs to: a deadline layer's, or else
/// the sooner of the one its `grpc-timeout` header (tonic's
/// `Request::set_timeout`) implies from now and the handler's it is made in.
pub(crate) fn of<B>(request: &http::Request<B>) -> Option<Instant> {
    if let Some(CallDeadline(at)) = request.extensions().get() {
        return Some(*at);
    }
    let own = wire::timeout::of(request.headers())
        .and_then(|timeout| Instant::now().checked_add(timeout));
    sooner(
        own,
        crate::context::outgoing_deadline_http(request.extensions()),
    )
}

fn sooner(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `grpc-timeout` for what is left before `deadline`; `Err` with
/// DEADLINE_EXCEEDED if nothing is.
pub(crate) fn header_for(
    deadline: Option<Instant>,
    path: &str,
) -> Result<Option<http::HeaderValue>, Status> {
    match deadline {
        None => Ok(None),
        Some(at) => match shared::remaining(at) {
            Some(left) => Ok(wire::timeout::encode(left)),
            None => Err(shared::exceeded(path)),
        },
    }
}

/// Puts a deadline on every call: DEADLINE_EXCEEDED when it passes, whether the
/// call is waiting for its response or reading it.
///
/// The timeout is the method's, from a [`ByMethod`] table; a caller's own — set
/// with tonic's `Request::set_timeout` — applies instead when it is sooner, and
/// so does the deadline of the tai handler the call is made in (unless the
/// request carries [`Detached`](crate::Detached)).
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::layers::{ByMethod, DeadlineLayer};
///
/// let layer = DeadlineLayer::new(ByMethod::all(Duration::from_secs(2)).method("/demo.Kv/Watch", None));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    timeouts: ByMethod<Duration>,
}

impl DeadlineLayer {
    /// A layer with these timeouts (a `Duration` alone applies to every method).
    pub fn new(timeouts: impl Into<ByMethod<Duration>>) -> Self {
        Self {
            timeouts: timeouts.into(),
        }
    }

    /// Each method's timeout from `service` (clamped by its `max_timeout`).
    pub fn for_service(service: &ServicePolicy) -> Self {
        Self::new(ByMethod::from_service(service, shared::policy_timeout))
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeouts: self.timeouts.clone(),
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    timeouts: ByMethod<Duration>,
}

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for Deadline<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<DeadlineBody<B>>;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        crate::context::write_trace_http(request.headers_mut());
        // The caller's own timeout (tonic's `Request::set_timeout` writes it here).
        let caller = wire::timeout::of(request.headers());
        let timeout = match (caller, self.timeouts.get(request.uri().path())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = Instant::now();
        let own = timeout.and_then(|t| now.checked_add(t));
        let handler = crate::context::outgoing_deadline_http(request.extensions());
        let at = sooner(own, handler);
        let path: Option<Box<str>> = at.map(|_| request.uri().path().into());
        if handler.is_some_and(|h| h <= now) {
            // The deadline of the call being handled has passed: nothing is sent.
            return DeadlineFuture {
                inner: None,
                sleep: None,
                path,
            };
        }
        if let Some(at) = at {
            if let Some(value) = wire::timeout::encode(at - now) {
                request.headers_mut().insert(wire::GRPC_TIMEOUT, value);
            }
            request.extensions_mut().insert(CallDeadline(at));
        }
        DeadlineFuture {
            inner: Some(self.inner.call(request)),
            sleep: at.map(tokio::time::sleep_until),
            path,
        }
    }
}

pin_project! {
    /// The response future of [`Deadline`].
    pub struct DeadlineFuture<F> {
        // `None`: the deadline had passed before the call was made.
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        // The method's path, for the message; `None` without a deadline.
        path: Option<Box<str>>,
    }
}

impl<F, B, E> std::future::Future for DeadlineFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<DeadlineBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let deadline = this.sleep.as_ref().as_pin_ref().map(|s| s.deadline());
        let path = this.path.as_deref().unwrap_or_default();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(shared::handler_passed(path).into()));
        };
        if let Poll::Ready(result) = inner.poll(cx) {
            return Poll::Ready(match result {
                Ok(response) => Ok(response.map(|inner| DeadlineBody {
                    inner,
                    sleep: deadline.map(tokio::time::sleep_until),
                    path: this.path.take(),
                })),
                Err(error) => {
                    let error = error.into();
                    // tonic's own `grpc-timeout` timer (which it calls
                    // CANCELLED), or any failure after the deadline, is the
                    // deadline; a status of the layers inside is kept as it is.
                    let timed_out = !error.is::<Status>()
                        && (classify::error(&*error).code == Code::DeadlineExceeded
                            || deadline.is_some_and(|d| Instant::now() >= d));
                    match deadline {
                        Some(_) if timed_out => Err(shared::exceeded(path).into()),
                        _ => Err(error),
                    }
                }
            });
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(shared::exceeded(path).into())),
            _ => Poll::Pending,
        }
    }
}

pin_project! {
    /// A response body that ends with DEADLINE_EXCEEDED when the call's
    /// deadline passes before it does.
    #[derive(Debug)]
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<Sleep>,
        path: Option<Box<str>>,
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                this.sleep.set(None);
            }
            return Poll::Ready(frame.map(|f| f.map_err(|e| Status::from_error(e.into()))));
        }
        match this.sleep.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => {
                this.sleep.set(None);
                let path = this.path.as_deref().unwrap_or_default();
                Poll::Ready(Some(Err(shared::exceeded(path))))
            }
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
