//! Internals exposed for tai's own benchmarks (`tai-runtime/benches`, `bench/`) and
//! allocation tests, behind the `bench` feature (off by default). Not a public API:
//! it changes whenever the internals do.
//!
//! Everything here is a thin wrapper over the very function the call path runs, so
//! a benchmark of it measures the real thing, not a copy. What only a whole call
//! exercises (the attempt's poll order, the shared deadline timer around a
//! pending exchange) is measured through a whole call over [`FakeTransport`]
//! (the `path/*` benchmarks), not by a copy of that order here.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

pub use crate::channel::balance_bench::{Fake, Picker};
use crate::policy::{MethodPolicy, RetryPolicy};

/// The retry decisions the engine makes after a failed attempt, without the
/// attempt: backoff delay (with jitter from a seeded source) and pushback parsing.
#[derive(Debug)]
pub struct RetryDecider {
    rng: std::sync::Mutex<rand::rngs::SmallRng>,
}

impl RetryDecider {
    /// A decider whose jitter is seeded.
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: std::sync::Mutex::new(rand::rngs::SmallRng::seed_from_u64(seed)),
        }
    }

    /// The backoff before retry `n` (1-based), drawn the way the engine draws it
    /// (under the client's jitter lock).
    pub fn backoff(&self, policy: &RetryPolicy, n: u32) -> Duration {
        let mut rng = crate::sync::lock(&self.rng);
        crate::client::backoff::delay(policy, n, &mut *rng)
    }

    /// What the server's `grpc-retry-pushback-ms` says: `None` (no header),
    /// `Some(None)` (do not retry), `Some(Some(d))` (retry after `d`).
    pub fn pushback(metadata: &MetadataMap) -> Option<Option<Duration>> {
        match crate::wire::pushback::Pushback::from_metadata(metadata) {
            crate::wire::pushback::Pushback::None => None,
            crate::wire::pushback::Pushback::Stop => Some(None),
            crate::wire::pushback::Pushback::After(d) => Some(Some(d)),
        }
    }

    /// The whole decision after a failed, uncommitted attempt that ended with
    /// `status`, made by the engine's own retry step (pushback, retryable code,
    /// attempt limit, backoff), without throttling: `Some(delay)` to retry.
    pub fn decide(&self, policy: &RetryPolicy, status: &Status, previous: u32) -> Option<Duration> {
        let mut retries = crate::client::retry::Retries::after(previous);
        let mut rng = crate::sync::lock(&self.rng);
        retries.next_delay(policy, status, None, &mut *rng)
    }
}

/// The pre-resolved metric handles of one client method, as a client holds them.
#[derive(Debug, Clone)]
pub struct MethodMetrics(crate::metrics::MethodMetrics);

impl MethodMetrics {
    /// The handles of `service`/`method` in the global registry.
    pub fn new(service: &str, method: &str) -> Self {
        Self(crate::metrics::Metrics::global().client_method(service, method))
    }

    /// Records one finished call, as the engine does at the end of every call.
    pub fn record(&self, code: Code, elapsed: Duration) {
        self.0.record(code, elapsed);
    }
}

/// The deadline of a call under `policy`, as the engine computes it at call start.
pub fn deadline_for_call(policy: &MethodPolicy) -> Option<Instant> {
    crate::client::deadline::for_call(policy, Instant::now(), None).map(|d| d.at)
}

/// The per-attempt deadline check: the time left, `None` if it has passed.
pub fn deadline_remaining(deadline: Instant) -> Option<Duration> {
    crate::client::deadline::remaining(deadline)
}

/// A transport that answers every call in-process with one canned gRPC response
/// (a message, then `grpc-status: 0` trailers), after draining (and so encoding)
/// the request. With `yield_once`, each call is pending once before it answers, as
/// a call over a network is: timers armed around it then really register.
///
/// It is a transport for `ClientCore` and for `tonic::client::Grpc` alike, so a
/// benchmark over it measures what tai adds to tonic and nothing else.
#[derive(Clone, Debug)]
pub struct FakeTransport {
    frame: bytes::Bytes,
    yield_once: bool,
}

impl FakeTransport {
    /// Answers every call with `response`.
    pub fn new<M: prost::Message>(response: &M, yield_once: bool) -> Self {
        let len = response.encoded_len();
        let mut frame = Vec::with_capacity(5 + len);
        frame.push(0);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        response
            .encode(&mut frame)
            .unwrap_or_else(|_| unreachable!("the buffer has room for the message"));
        Self {
            frame: frame.into(),
            yield_once,
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for FakeTransport {
    type Response = http::Response<CannedBody>;
    type Error = std::convert::Infallible;
    type Future = FakeCall;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> FakeCall {
        FakeCall {
            request: Some(request.into_body()),
            frame: self.frame.clone(),
            pending: self.yield_once,
        }
    }
}

impl crate::Transport for FakeTransport {}

/// The future of a [`FakeTransport`] call.
#[derive(Debug)]
pub struct FakeCall {
    request: Option<tonic::body::Body>,
    frame: bytes::Bytes,
    pending: bool,
}

impl std::future::Future for FakeCall {
    type Output = Result<http::Response<CannedBody>, std::convert::Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use http_body::Body as _;
        use std::task::Poll;
        let this = &mut *self;
        if this.pending {
            this.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while let Some(body) = this.request.as_mut() {
            match std::pin::Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => this.request = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut response = http::Response::new(CannedBody {
            data: Some(std::mem::take(&mut this.frame)),
            trailers: true,
        });
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        Poll::Ready(Ok(response))
    }
}

/// The response body of a [`FakeTransport`] call.
#[derive(Debug)]
pub struct CannedBody {
    data: Option<bytes::Bytes>,
    trailers: bool,
}

impl http_body::Body for CannedBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = http::HeaderMap::with_capacity(1);
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.trailers
    }
}
