//! Server deadlines: a call whose caller's deadline passes ends in
//! DEADLINE_EXCEEDED, and its handler is dropped — before its answer, or in the
//! middle of the response stream it answered with.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let (_, health) = tonic_health::server::health_reporter();
//! use tai_runtime::server::deadline::DeadlineLayer;
//!
//! tonic::transport::Server::builder()
//!     .layer(DeadlineLayer::new())
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Why a deadline layer when tonic reads `grpc-timeout` itself: tonic ends such a
//! call with CANCELLED ("Timeout expired"); gRPC says DEADLINE_EXCEEDED, and
//! clients retry or alert on the difference. This layer answers DEADLINE_EXCEEDED
//! a millisecond before the caller's deadline (so the answer arrives in time, and
//! before tonic's own timer fires) and drops the handler's future, which stops work
//! nobody waits for. tonic's timer covers only the wait for the handler's answer;
//! a response stream would run past the deadline for as long as its client stays
//! (tonic's own client, for one, enforces a timeout only until the response
//! headers). So the deadline also holds over the response body: a stream still
//! open at the deadline ends with DEADLINE_EXCEEDED in its trailers, and the
//! handler's stream is dropped.
//!
//! Why it is shaped so: tonic's server already arms a timer per call for
//! `grpc-timeout`, so this layer adds no timer per call: every call of a layer
//! waits on one shared deadline timer (see `timer.rs`). The future and the body
//! are concrete types; a call with a deadline boxes its limit once (the response
//! carries it up through the layers, and small is cheaper to move), and a call
//! without `grpc-timeout` costs one header lookup: the clock is read only when
//! there is a deadline to count from.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, Service};

use crate::client::stream::DEADLINE_CHECK_INTERVAL;
use crate::client::timer::{DeadlineTimer, Registration};

/// How much earlier than the caller's deadline the server gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// Ends calls whose caller's deadline (`grpc-timeout`) passes with
/// DEADLINE_EXCEEDED; see the [module docs](self).
///
/// Clones, and every service the layer wraps, share one timer.
#[derive(Clone, Debug, Default)]
pub struct DeadlineLayer {
    /// Every call's deadline on one timer (see `timer.rs`).
    deadlines: Arc<DeadlineTimer>,
}

impl DeadlineLayer {
    /// A layer with its own timer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            deadlines: Arc::clone(&self.deadlines),
        }
    }
}

/// The service [`DeadlineLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    deadlines: Arc<DeadlineTimer>,
}

impl<S, B> Deadline<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
{
    /// Calls the service under `timeout`, the deadline `request` carries (its
    /// `grpc-timeout`), counted from `start()` (called only if there is one).
    /// [`ServerLayer`] passes the timeout the call's context read and the
    /// instant its metrics read, so a call decodes the header and reads the
    /// clock once.
    ///
    /// [`ServerLayer`]: super::ServerLayer
    pub(super) fn call_from(
        &mut self,
        request: http::Request<tonic::body::Body>,
        timeout: Option<Duration>,
        start: impl FnOnce() -> Instant,
    ) -> ResponseFuture<S::Future> {
        let limit = timeout.map(|timeout| {
            Box::new(Limit {
                at: start() + timeout.saturating_sub(DEADLINE_MARGIN),
                timeout,
                deadlines: Some(Arc::clone(&self.deadlines)),
                timer: None,
                // For the message. A `Uri` clone shares its bytes.
                uri: request.uri().clone(),
            })
        });
        ResponseFuture {
            call: self.inner.call(request),
            limit,
        }
    }
}

/// Any response body `B` with an empty `Default` (tonic's `Body`, for one): the
/// layer's own DEADLINE_EXCEEDED answer has an empty body.
impl<S, B> Service<http::Request<tonic::body::Body>> for Deadline<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    B: Default,
{
    type Response = http::Response<ResponseBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let timeout = crate::wire::timeout::of(request.headers());
        self.call_from(request, timeout, Instant::now)
    }
}

/// The deadline of one call. Boxed: it goes from the call's future to its
/// response body, and every layer above moves the response (callgrind: inline,
/// +830 instructions of copying per call; boxed, one allocation).
struct Limit {
    /// When to give up.
    at: Instant,
    /// The caller's timeout, for the message.
    timeout: Duration,
    /// The layer's timer until the call registers with it (the registration then
    /// holds it).
    deadlines: Option<Arc<DeadlineTimer>>,
    timer: Option<Registration<Arc<DeadlineTimer>>>,
    uri: http::Uri,
}

pin_project! {
    /// The future of a call through [`Deadline`]: the handler's future, under the
    /// caller's deadline if it sent one.
    pub struct ResponseFuture<F> {
        #[pin]
        call: F,
        limit: Option<Box<Limit>>,
    }
}

impl Limit {
    /// Whether the deadline has passed (registering with the timer to be woken
    /// when it does).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadlines = &mut self.deadlines;
        DeadlineTimer::poll_expired(
            &mut self.timer,
            || deadlines.take().expect("taken once, at registration"),
            self.at,
            cx,
        )
    }

    fn exceeded(&self, before: &str) -> Status {
        Status::deadline_exceeded(format!(
            "{}: the caller's deadline of {:?} passed before the server {before}",
            self.uri.path(),
            self.timeout
        ))
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.call.poll(cx) {
            // The deadline goes on to hold over the body (an answer without
            // messages has an empty body, dropped at once with it).
            let limit = this.limit.take();
            return Poll::Ready(
                result.map(|response| response.map(|body| ResponseBody::new(body, limit))),
            );
        }
        let Some(limit) = this.limit else {
            return Poll::Pending;
        };
        ready!(limit.poll_expired(cx));
        let status = limit.exceeded("answered");
        *this.limit = None;
        Poll::Ready(Ok(status.into_http().map(ResponseBody::unlimited)))
    }
}

pin_project! {
    /// A response body under the caller's deadline: ends with DEADLINE_EXCEEDED
    /// in its trailers if the deadline passes before the body's own end.
    pub struct ResponseBody<B> {
        #[pin]
        body: B,
        limit: Option<Box<Limit>>,
        // Data frames passed since the deadline was last looked at: a body that
        // never waits is checked every `DEADLINE_CHECK_INTERVAL` frames.
        unchecked: u32,
        // Ended by the deadline: the inner body is not polled again.
        expired: bool,
    }
}

impl<B> ResponseBody<B> {
    fn new(body: B, limit: Option<Box<Limit>>) -> Self {
        Self {
            body,
            limit,
            unchecked: 0,
            expired: false,
        }
    }

    /// `body`, under no deadline.
    pub(crate) fn unlimited(body: B) -> Self {
        Self::new(body, None)
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        let Some(limit) = this.limit else {
            return this.body.poll_frame(cx);
        };
        let passed = if *this.unchecked >= DEADLINE_CHECK_INTERVAL {
            *this.unchecked = 0;
            limit.poll_expired(cx).is_ready()
        } else {
            false
        };
        if !passed {
            match this.body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if frame.is_data() {
                        *this.unchecked += 1;
                    } else {
                        // The trailers: the response is complete.
                        *this.limit = None;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(other) => {
                    *this.limit = None;
                    return Poll::Ready(other);
                }
                Poll::Pending => ready!(limit.poll_expired(cx)),
            }
        }
        let status = limit.exceeded("finished its response");
        tracing::debug!("{}", status.message());
        (*this.limit, *this.expired) = (None, true);
        Poll::Ready(Some(Ok(Frame::trailers(crate::wire::status_trailers(
            &status,
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.limit.is_some() {
            // It may yet end early, with trailers.
            SizeHint::default()
        } else {
            self.body.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// A body that never waits is still held to the deadline: it is looked at
    /// every [`DEADLINE_CHECK_INTERVAL`] data frames (the first look registers
    /// with the timer), so it ends, with DEADLINE_EXCEEDED in its trailers, at
    /// the first look after the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_waits_still_ends_at_the_deadline() {
        let frames = futures_util::stream::repeat_with(|| {
            Ok::<_, Status>(Frame::data(Bytes::from_static(b"message")))
        });
        let limit = Limit {
            at: Instant::now() + Duration::from_millis(10),
            timeout: Duration::from_millis(11),
            deadlines: Some(Arc::new(DeadlineTimer::default())),
            timer: None,
            uri: http::Uri::from_static("/test.Echo/Stream"),
        };
        let mut body = std::pin::pin!(ResponseBody::new(
            StreamBody::new(frames),
            Some(Box::new(limit))
        ));
        let interval = DEADLINE_CHECK_INTERVAL as usize;
        let mut data = 0;
        let trailers = loop {
            let frame = body.frame().await.expect("a frame").unwrap();
            match frame.into_data() {
                Ok(_) => data += 1,
                Err(frame) => break frame.into_trailers().unwrap(),
            }
            if data == interval + 1 {
                // Registered with the timer by now: let the deadline pass.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert_eq!(
            data,
            2 * interval,
            "ended at the first look after the deadline"
        );
        assert_eq!(trailers[crate::wire::GRPC_STATUS], "4", "DEADLINE_EXCEEDED");
        assert!(body.frame().await.is_none(), "and nothing after");
        assert!(body.is_end_stream());
    }
}
