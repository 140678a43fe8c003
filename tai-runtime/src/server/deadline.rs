//! Server deadlines: a call whose caller's deadline passes ends in
//! DEADLINE_EXCEEDED, and its handler is dropped.
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
//! nobody waits for.
//!
//! Why it is shaped so: tonic's server already arms a timer per call for
//! `grpc-timeout`, so this layer adds no timer per call: every call of a layer
//! waits on one shared deadline timer (see `timer.rs`). The future is a concrete
//! type (no `Box` per call), and a call without `grpc-timeout` costs one header
//! lookup: the clock is read only when there is a deadline to count from.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, Service};

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

impl<S> Deadline<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
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
        let limit = timeout.map(|timeout| Limit {
            at: start() + timeout.saturating_sub(DEADLINE_MARGIN),
            timeout,
            deadlines: Some(Arc::clone(&self.deadlines)),
            timer: None,
            // For the message. A `Uri` clone shares its bytes.
            uri: request.uri().clone(),
        });
        ResponseFuture {
            call: self.inner.call(request),
            limit,
        }
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for Deadline<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
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

/// The deadline of one call.
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
        limit: Option<Limit>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.call.poll(cx) {
            // Gives the timer slot back now, not when the future is dropped.
            *this.limit = None;
            return Poll::Ready(result);
        }
        let Some(limit) = this.limit else {
            return Poll::Pending;
        };
        let deadlines = &mut limit.deadlines;
        ready!(DeadlineTimer::poll_expired(
            &mut limit.timer,
            || deadlines.take().expect("taken once, at registration"),
            limit.at,
            cx,
        ));
        let status = Status::deadline_exceeded(format!(
            "{}: the caller's deadline of {:?} passed before the server answered",
            limit.uri.path(),
            limit.timeout
        ));
        *this.limit = None;
        Poll::Ready(Ok(status.into_http()))
    }
}
