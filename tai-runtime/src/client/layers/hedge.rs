//! gRFC A6 hedging as a layer: [`HedgeLayer`].
//!
//! The generated client's hedging rules: attempt n+1 starts `delay` after
//! attempt n, at once after a non-fatal failure, or after the server's
//! pushback; the first response with headers and no `grpc-status` commits the
//! call (the other attempts are dropped, which cancels them), as does the first
//! OK or fatal status; no attempt starts once retries are throttled, the server
//! said stop, a breaker refused one, or the call's deadline would pass first.
//!
//! The future is boxed, and so is each attempt: how many attempts are in flight
//! changes at run time (up to five), each needs its own pinned future, and the
//! loop polls them by hand, as the engine does, to see which one answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tonic::{Code, Status};

use super::classify::{self, Head, Observed};
use super::request::{self, Kept, Replay};
use super::retry::{Ended, Refill, once, ready};
use super::{ByMethod, Repeat, deadline};
use crate::BoxError;
use crate::client::deadline as shared;
use crate::client::retry::MAX_ATTEMPTS;
use crate::client::throttle::RetryThrottle;
use crate::policy::{HedgingPolicy, ServicePolicy, ThrottlePolicy};
use crate::wire::pushback::Pushback;

/// Sends a call's attempts a delay apart and takes the first answer, per gRFC
/// A6 hedging, with the same rules as a generated client.
///
/// Clones share the throttle: build the layer once per backend.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::layers::{ByMethod, HedgeLayer};
/// use tai_runtime::policy::{CodeSet, HedgingPolicy};
///
/// let layer = HedgeLayer::new(
///     ByMethod::none().method(
///         "/demo.Kv/Get",
///         HedgingPolicy::new(3, Duration::from_millis(20), CodeSet::of(&[Code::Unavailable])),
///     ),
///     None,
/// );
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct HedgeLayer {
    repeat: Arc<Repeat<HedgingPolicy>>,
}

impl HedgeLayer {
    /// A layer with these policies (a `HedgingPolicy` alone applies to every
    /// method) and, if given, a retry throttle shared by all of them.
    pub fn new(
        policies: impl Into<ByMethod<HedgingPolicy>>,
        throttle: Option<ThrottlePolicy>,
    ) -> Self {
        Self {
            repeat: Arc::new(Repeat::new(policies.into(), throttle)),
        }
    }

    /// Each method's hedging policy (for methods without a retry policy, which
    /// wins, as in the engine) and the service's throttle, from `service`.
    pub fn for_service(service: &ServicePolicy) -> Self {
        let hedging = ByMethod::from_service(service, |m| m.hedging.filter(|_| m.retry.is_none()));
        Self::new(hedging, service.throttle)
    }

    /// Shares `throttle` (for instance a [`RetryLayer`](super::RetryLayer)'s)
    /// instead of this layer's own, or throttles nothing with `None`.
    pub fn with_throttle(mut self, throttle: Option<Arc<RetryThrottle>>) -> Self {
        Arc::make_mut(&mut self.repeat).throttle = throttle;
        self
    }

    /// The largest request body kept for hedging (4 MiB unless set); a larger
    /// one is sent once.
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.repeat).max_request_size = bytes;
        self
    }

    /// The retry throttle, if there is one.
    pub fn throttle(&self) -> Option<&Arc<RetryThrottle>> {
        self.repeat.throttle.as_ref()
    }
}

impl<S> tower::Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            repeat: Arc::clone(&self.repeat),
        }
    }
}

/// The service of [`HedgeLayer`].
#[derive(Clone, Debug)]
pub struct Hedge<S> {
    inner: S,
    repeat: Arc<Repeat<HedgingPolicy>>,
}

/// The response future of [`Hedge`] (boxed; see the module docs for why).
pub type HedgeFuture<B> =
    Pin<Box<dyn Future<Output = Result<http::Response<Observed<B, Refill>>, BoxError>> + Send>>;

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for Hedge<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<Observed<B, Refill>>;
    type Error = BoxError;
    type Future = HedgeFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // Made in a tai handler: its trace, as a child (see `crate::context`).
        crate::context::write_trace_http(request.headers_mut());
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let repeat = Arc::clone(&self.repeat);
        Box::pin(async move {
            match repeat.policies.get(request.uri().path()) {
                Some(policy) => hedge(inner, request, policy, &repeat).await,
                None => once(inner, request, Refill::new(repeat.throttle.as_ref())).await,
            }
        })
    }
}

type AttemptFuture<B> = Pin<Box<dyn Future<Output = Result<http::Response<B>, BoxError>> + Send>>;

/// gRFC A6 hedging of one call.
async fn hedge<S, B>(
    inner: S,
    request: http::Request<tonic::body::Body>,
    policy: HedgingPolicy,
    repeat: &Repeat<HedgingPolicy>,
) -> Result<http::Response<Observed<B, Refill>>, BoxError>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    let throttle = repeat.throttle.as_deref();
    let deadline = deadline::of(&request);
    let replay = match request::keep(request, repeat.max_request_size).await? {
        Kept::Replay(replay) => replay,
        Kept::Once(request) => {
            return once(inner, request, Refill::new(repeat.throttle.as_ref())).await;
        }
    };
    let path = replay.path();
    let mut attempts = Attempts {
        inner,
        replay: &replay,
        deadline,
    };
    let max_attempts = policy.max_attempts.min(MAX_ATTEMPTS);
    let mut in_flight: Vec<(u32, AttemptFuture<B>)> = Vec::with_capacity(max_attempts as usize);
    in_flight.push((0, attempts.start(0)?));
    let mut started = 1;
    let mut next_at = Some(Instant::now() + policy.delay);
    // No more attempts: the server said stop, or a breaker refused one.
    let mut stopped = false;
    let mut transparent = true;
    let mut last: Option<(Status, Ended<B>)> = None;
    let mut timer = std::pin::pin!(tokio::time::sleep_until(
        next_at.unwrap_or_else(Instant::now)
    ));
    std::future::poll_fn(|cx: &mut Context<'_>| {
        loop {
            let mut i = 0;
            while i < in_flight.len() {
                let Poll::Ready(result) = in_flight[i].1.as_mut().poll(cx) else {
                    i += 1;
                    continue;
                };
                let (number, _) = in_flight.swap_remove(i);
                let end = Instant::now();
                let (status, ended) = match result {
                    Ok(mut response) => match classify::head(&mut response) {
                        // A6: the first attempt to receive headers commits the call.
                        Head::Committed => {
                            let refill = Refill::new(repeat.throttle.as_ref());
                            return Poll::Ready(Ok(response.map(|b| Observed::new(b, refill))));
                        }
                        Head::Final(status) if status.code() == Code::Ok => {
                            throttle.inspect(|t| t.record_success());
                            return Poll::Ready(Ok(response.map(|b| Observed::new(b, None))));
                        }
                        Head::Final(status) => (status, Ended::Response(response)),
                    },
                    Err(error) => {
                        let class = classify::error(&*error);
                        let status = classify::error_status(&*error, class);
                        if class.rejected {
                            // A breaker refused it: start no more, but let the
                            // attempts already sent finish.
                            stopped = true;
                            last = Some((status, Ended::Error(error)));
                            continue;
                        }
                        if class.unprocessed && std::mem::take(&mut transparent) {
                            match attempts.start(number) {
                                Ok(attempt) => in_flight.push((number, attempt)),
                                Err(status) => return Poll::Ready(Err(status.into())),
                            }
                            continue;
                        }
                        (status, Ended::Error(error))
                    }
                };
                if !crate::policy::retries(policy.non_fatal, status.code()) {
                    return Poll::Ready(ended.into_result());
                }
                if let Some(t) = throttle {
                    t.record_failure();
                }
                match Pushback::from_metadata(status.metadata()) {
                    Pushback::Stop => stopped = true,
                    Pushback::After(d) => next_at = Some(end + d),
                    Pushback::None => next_at = Some(end),
                }
                last = Some((status, ended));
            }
            let now = Instant::now();
            let may_start = !stopped
                && started < max_attempts
                && !throttle.is_some_and(RetryThrottle::is_throttled);
            match next_at.filter(|_| may_start) {
                Some(at) if deadline.is_some_and(|d| at >= d) => {
                    // It would start after the deadline: it never will.
                    next_at = None;
                    if in_flight.is_empty() {
                        let status = last.as_ref().map_or_else(
                            || shared::exceeded(path),
                            |(last, _)| shared::exceeded_before_retry(path, last),
                        );
                        return Poll::Ready(Err(status.into()));
                    }
                }
                Some(at) if at <= now => {
                    match attempts.start(started) {
                        Ok(attempt) => in_flight.push((started, attempt)),
                        Err(status) => return Poll::Ready(Err(status.into())),
                    }
                    started += 1;
                    next_at = Some(now + policy.delay);
                    continue;
                }
                Some(at) => {
                    if timer.deadline() != at {
                        timer.as_mut().reset(at);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                }
                None => {}
            }
            if in_flight.is_empty() {
                return Poll::Ready(match last.take() {
                    Some((_, ended)) => ended.into_result(),
                    None => Err(Status::unavailable(format!(
                        "{path}: no hedged attempt could be made"
                    ))
                    .into()),
                });
            }
            return Poll::Pending;
        }
    })
    .await
}

/// Makes the attempts of one hedged call, each on its own clone of the service.
struct Attempts<'a, S> {
    inner: S,
    replay: &'a Replay,
    deadline: Option<Instant>,
}

impl<S, B> Attempts<'_, S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    /// Attempt number `n` (0 for the first), or DEADLINE_EXCEEDED if no time is
    /// left for it. Takes `&mut self` so that the loop holding it needs only
    /// `S: Send`, not `Sync`.
    fn start(&mut self, n: u32) -> Result<AttemptFuture<B>, Status> {
        let timeout = deadline::header_for(self.deadline, self.replay.path())?;
        let request = self.replay.attempt(n, timeout);
        let mut service = self.inner.clone();
        Ok(Box::pin(async move {
            ready(&mut service).await?;
            service.call(request).await.map_err(Into::into)
        }))
    }
}
