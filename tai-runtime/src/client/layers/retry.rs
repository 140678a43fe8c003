//! gRFC A6 retry as a layer: [`RetryLayer`].
//!
//! Decision for decision the generated client's retry: the same
//! `Retries::next_delay` after each uncommitted failure (retryable codes,
//! attempts capped at 5, jittered exponential backoff, server pushback, the
//! retry throttle), one transparent retry of a stream the server refused
//! unprocessed, `grpc-previous-rpc-attempts` on every retry, and no retry once
//! the call is committed — a response whose headers carry no `grpc-status`.
//! Under a [`DeadlineLayer`](super::DeadlineLayer) (or with a `grpc-timeout` on
//! the request) a retry that would start after the deadline is not made, and
//! each attempt's `grpc-timeout` says what is left.
//!
//! The future is boxed: it is a loop that awaits, in turn, the request body
//! (read once, see [`request`](super::request)), the inner service's readiness,
//! an attempt and a backoff, holding the kept request across all of them; as a
//! hand-written state machine it would be several times the code for the one
//! allocation a call already makes to keep its request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tonic::Code;

use super::classify::{self, Finish, Head, Observed};
use super::request::{self, Kept};
use super::{ByMethod, Repeat, deadline};
use crate::BoxError;
use crate::client::deadline as shared;
use crate::client::retry::Retries;
use crate::client::throttle::RetryThrottle;
use crate::policy::{RetryPolicy, ServicePolicy, ThrottlePolicy};

/// Retries failed calls per gRFC A6, with the same decisions as a generated
/// client.
///
/// Clones share the throttle and the jitter source: build the layer once per
/// backend (A6 throttles retries per server).
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::layers::{ByMethod, RetryLayer};
/// use tai_runtime::policy::{CodeSet, RetryPolicy, ThrottlePolicy};
///
/// let policy = RetryPolicy::new(
///     4,
///     Duration::from_millis(100),
///     Duration::from_secs(1),
///     2.0,
///     CodeSet::of(&[Code::Unavailable]),
/// );
/// // Retry only Get; every other method passes through.
/// let layer = RetryLayer::new(
///     ByMethod::none().method("/demo.Kv/Get", policy),
///     Some(ThrottlePolicy::new(10, 0.1)),
/// );
/// assert_eq!(layer.throttle().map(|t| t.tokens()), Some(10.0));
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer {
    repeat: Arc<Repeat<RetryPolicy>>,
    rng: Arc<Mutex<SmallRng>>,
}

impl RetryLayer {
    /// A layer with these policies (a `RetryPolicy` alone applies to every
    /// method) and, if given, a retry throttle shared by all of them.
    pub fn new(
        policies: impl Into<ByMethod<RetryPolicy>>,
        throttle: Option<ThrottlePolicy>,
    ) -> Self {
        Self {
            repeat: Arc::new(Repeat::new(policies.into(), throttle)),
            rng: Arc::new(Mutex::new(SmallRng::from_os_rng())),
        }
    }

    /// Each method's retry policy and the service's throttle, from `service`.
    pub fn for_service(service: &ServicePolicy) -> Self {
        Self::new(
            ByMethod::from_service(service, |m| m.retry),
            service.throttle,
        )
    }

    /// Shares `throttle` (for instance a [`HedgeLayer`](super::HedgeLayer)'s)
    /// instead of this layer's own, or throttles nothing with `None`.
    pub fn with_throttle(mut self, throttle: Option<Arc<RetryThrottle>>) -> Self {
        Arc::make_mut(&mut self.repeat).throttle = throttle;
        self
    }

    /// The largest request body kept for a retry (4 MiB unless set); a larger
    /// one is sent once.
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.repeat).max_request_size = bytes;
        self
    }

    /// The retry throttle, if there is one.
    pub fn throttle(&self) -> Option<&Arc<RetryThrottle>> {
        self.repeat.throttle.as_ref()
    }

    /// Makes the backoff jitter deterministic, for tests.
    pub fn seed_jitter(&self, seed: u64) {
        *crate::sync::lock(&self.rng) = SmallRng::seed_from_u64(seed);
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

/// Refills the retry throttle when a call ends OK (gRFC A6 counts successes).
#[derive(Debug)]
pub struct Refill(Arc<RetryThrottle>);

impl Refill {
    pub(crate) fn new(throttle: Option<&Arc<RetryThrottle>>) -> Option<Self> {
        throttle.map(|t| Self(Arc::clone(t)))
    }
}

impl Finish for Refill {
    fn finish(self, code: Code) {
        if code == Code::Ok {
            self.0.record_success();
        }
    }
}

/// The response future of [`Retry`] (boxed; see the module docs for why).
pub type RetryFuture<B> =
    Pin<Box<dyn Future<Output = Result<http::Response<Observed<B, Refill>>, BoxError>> + Send>>;

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for Retry<S>
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
    type Future = RetryFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // Made in a tai handler: its trace, as a child (see `crate::context`).
        crate::context::write_trace_http(request.headers_mut());
        // The service made ready goes to this call; the layer keeps a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            match layer.repeat.policies.get(request.uri().path()) {
                Some(policy) => retry(inner, request, policy, &layer).await,
                None => {
                    let refill = Refill::new(layer.repeat.throttle.as_ref());
                    once(inner, request, refill).await
                }
            }
        })
    }
}

/// One attempt, on a service already made ready.
pub(crate) async fn once<S, B>(
    mut inner: S,
    request: http::Request<tonic::body::Body>,
    refill: Option<Refill>,
) -> Result<http::Response<Observed<B, Refill>>, BoxError>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    let mut response = inner.call(request).await.map_err(Into::into)?;
    let finish = match classify::head(&mut response) {
        Head::Committed => refill,
        Head::Final(status) => {
            if let Some(r) = refill {
                r.finish(status.code());
            }
            None
        }
    };
    Ok(response.map(|b| Observed::new(b, finish)))
}

/// Waits until `inner` can take a call.
pub(crate) async fn ready<S, R>(inner: &mut S) -> Result<(), BoxError>
where
    S: tower::Service<R>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)
}

/// How an attempt that did not succeed ended: as the inner service gave it,
/// for the caller if it is the last.
pub(super) enum Ended<B> {
    Response(http::Response<B>),
    Error(BoxError),
}

impl<B> Ended<B> {
    /// What the caller gets when this attempt is the last.
    pub(super) fn into_result(self) -> Result<http::Response<Observed<B, Refill>>, BoxError> {
        match self {
            Ended::Response(r) => Ok(r.map(|b| Observed::new(b, None))),
            Ended::Error(e) => Err(e),
        }
    }
}

/// gRFC A6 retry of one call.
async fn retry<S, B>(
    mut inner: S,
    request: http::Request<tonic::body::Body>,
    policy: RetryPolicy,
    layer: &RetryLayer,
) -> Result<http::Response<Observed<B, Refill>>, BoxError>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    let repeat = &layer.repeat;
    let throttle = repeat.throttle.as_deref();
    let deadline = deadline::of(&request);
    let replay = match request::keep(request, repeat.max_request_size).await? {
        Kept::Replay(replay) => replay,
        Kept::Once(request) => {
            return once(inner, request, Refill::new(repeat.throttle.as_ref())).await;
        }
    };
    let mut retries = Retries::default();
    // One transparent retry per call, as grpc-go allows: no attempt, no token.
    let mut transparent = true;
    loop {
        let timeout = deadline::header_for(deadline, replay.path())?;
        if retries.previous > 0 {
            ready(&mut inner).await?;
        }
        let attempt = inner.call(replay.attempt(retries.previous, timeout)).await;
        let end = Instant::now();
        let (status, ended) = match attempt.map_err(Into::into) {
            Ok(mut response) => match classify::head(&mut response) {
                Head::Committed => {
                    let refill = Refill::new(repeat.throttle.as_ref());
                    return Ok(response.map(|b| Observed::new(b, refill)));
                }
                Head::Final(status) if status.code() == Code::Ok => {
                    throttle.inspect(|t| t.record_success());
                    return Ok(response.map(|b| Observed::new(b, None)));
                }
                Head::Final(status) => (status, Ended::Response(response)),
            },
            Err(error) => {
                let class = classify::error(&*error);
                if class.rejected {
                    return Err(error);
                }
                if class.unprocessed && std::mem::take(&mut transparent) {
                    tracing::debug!(
                        path = replay.path(),
                        "transparent retry: the server never processed the attempt"
                    );
                    continue;
                }
                (classify::error_status(&*error, class), Ended::Error(error))
            }
        };
        let decision = {
            let mut rng = crate::sync::lock(&layer.rng);
            retries.next_delay(&policy, &status, throttle, &mut *rng)
        };
        let Some(delay) = decision else {
            return ended.into_result();
        };
        if deadline.is_some_and(|at| end + delay >= at) {
            return Err(shared::exceeded_before_retry(replay.path(), &status).into());
        }
        tracing::debug!(path = replay.path(), attempt = retries.previous + 1, ?delay, code = ?status.code(), "retrying");
        tokio::time::sleep(delay).await;
    }
}
