//! The circuit breaker as a layer: [`BreakerLayer`].
//!
//! The same [`CircuitBreaker`] the generated client runs, one per method: each
//! call (each attempt, under a retry or hedge layer) asks it first, and a call
//! it refuses fails at once with UNAVAILABLE saying why. The outcome is
//! recorded when the call's status is known — from the response head of a
//! trailers-only answer, else from the trailers at the end of the body (see
//! [`Observed`]); a call dropped before that, or never sent, teaches the
//! breaker nothing and gives back a half-open probe slot.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tonic::{Code, Status};

use super::ByMethod;
use super::classify::{self, Finish, Head, Observed};
use crate::BoxError;
use crate::client::breaker::{BreakerState, CircuitBreaker, Ticket};
use crate::policy::{BreakerPolicy, ServicePolicy};

/// The most methods that get a breaker of their own from the default policy;
/// calls to further paths share one. Paths are what the program's own clients
/// call, but a layer in a proxy sees whatever its callers send.
const MAX_PATHS: usize = 1024;

/// Fails calls fast while a method keeps failing; see the module docs of
/// [`breaker`](crate::breaker) for the rules.
///
/// Clones share the breakers: build the layer once per backend.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::layers::BreakerLayer;
/// use tai_runtime::policy::{BreakerPolicy, CodeSet};
///
/// let layer = BreakerLayer::new(BreakerPolicy::new(
///     5,
///     Duration::from_secs(1),
///     Duration::from_secs(30),
///     1,
///     CodeSet::of(&[Code::Unavailable]),
/// ));
/// assert!(layer.state("/demo.Kv/Get").is_none(), "no breaker until first called");
/// ```
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breakers: Arc<Breakers>,
}

#[derive(Debug)]
struct Breakers {
    policies: ByMethod<BreakerPolicy>,
    by_path: Mutex<HashMap<Box<str>, Arc<CircuitBreaker>>>,
    /// Shared by the paths beyond [`MAX_PATHS`], made when first needed.
    overflow: Mutex<Option<Arc<CircuitBreaker>>>,
}

impl BreakerLayer {
    /// A layer with these policies (a `BreakerPolicy` alone applies to every
    /// method, each with a breaker of its own).
    pub fn new(policies: impl Into<ByMethod<BreakerPolicy>>) -> Self {
        Self {
            breakers: Arc::new(Breakers {
                policies: policies.into(),
                by_path: Mutex::default(),
                overflow: Mutex::default(),
            }),
        }
    }

    /// Each method's breaker policy from `service`.
    pub fn for_service(service: &ServicePolicy) -> Self {
        Self::new(ByMethod::from_service(service, |m| m.breaker))
    }

    /// The breaker of the method at `path`, once a call has made it.
    pub fn breaker(&self, path: &str) -> Option<Arc<CircuitBreaker>> {
        crate::sync::lock(&self.breakers.by_path).get(path).cloned()
    }

    /// The state of the method's breaker, once a call has made it.
    pub fn state(&self, path: &str) -> Option<BreakerState> {
        self.breaker(path).map(|b| b.state())
    }
}

impl Breakers {
    /// The breaker of `path`, made on its first call; `None` without a policy.
    fn get(&self, path: &str) -> Option<Arc<CircuitBreaker>> {
        let policy = self.policies.get(path)?;
        let mut map = crate::sync::lock(&self.by_path);
        if let Some(b) = map.get(path) {
            return Some(Arc::clone(b));
        }
        if map.len() >= MAX_PATHS {
            drop(map);
            let mut overflow = crate::sync::lock(&self.overflow);
            return Some(Arc::clone(
                overflow.get_or_insert_with(|| Arc::new(CircuitBreaker::new(policy))),
            ));
        }
        let breaker = Arc::new(CircuitBreaker::new(policy));
        map.insert(path.into(), Arc::clone(&breaker));
        Some(breaker)
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            breakers: Arc::clone(&self.breakers),
        }
    }
}

/// The service of [`BreakerLayer`].
#[derive(Clone, Debug)]
pub struct Breaker<S> {
    inner: S,
    breakers: Arc<Breakers>,
}

/// A call refused by an open breaker: nothing was sent. tonic reads the
/// UNAVAILABLE status inside it (it is this error's source); the retry and
/// hedge layers know by it that the attempt was never made.
#[derive(Debug)]
pub struct BreakerOpen {
    status: Status,
}

impl BreakerOpen {
    /// The UNAVAILABLE status the caller sees.
    pub fn status(&self) -> &Status {
        &self.status
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status.message())
    }
}

impl std::error::Error for BreakerOpen {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.status)
    }
}

/// An admitted call's permit, owned (it outlives the borrow of its breaker:
/// the response body carries it to the trailers). Dropped without an outcome,
/// it releases a half-open probe slot, as [`Permit`](crate::breaker::Permit)
/// does.
#[derive(Debug)]
pub struct Admitted {
    breaker: Arc<CircuitBreaker>,
    ticket: Option<Ticket>,
}

impl Finish for Admitted {
    fn finish(mut self, code: Code) {
        if let Some(ticket) = self.ticket.take() {
            let permit = self.breaker.resume(ticket);
            self.breaker.record(permit, self.breaker.classify(code));
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            drop(self.breaker.resume(ticket));
        }
    }
}

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for Breaker<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Observed<B, Admitted>>;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // Made in a tai handler: its trace, as a child (see `crate::context`).
        crate::context::write_trace_http(request.headers_mut());
        let path = request.uri().path();
        let admitted = match self.breakers.get(path) {
            None => None,
            Some(breaker) => match breaker.admit() {
                Ok(permit) => {
                    let ticket = Some(permit.into_ticket());
                    Some(Admitted {
                        breaker: Arc::clone(&breaker),
                        ticket,
                    })
                }
                Err(rejected) => {
                    let status = rejected.status(path);
                    return BreakerFuture {
                        state: State::Refused {
                            error: Some(BreakerOpen { status }),
                        },
                    };
                }
            },
        };
        BreakerFuture {
            state: State::Calling {
                inner: self.inner.call(request),
                admitted,
            },
        }
    }
}

pin_project! {
    /// The response future of [`Breaker`].
    pub struct BreakerFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Admitted (or no breaker): the inner call.
        Calling { #[pin] inner: F, admitted: Option<Admitted> },
        // Refused: fails at once.
        Refused { error: Option<BreakerOpen> },
    }
}

impl<F, B, E> std::future::Future for BreakerFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<Observed<B, Admitted>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("a refused call is polled to completion once")
                .into())),
            StateProj::Calling { inner, admitted } => {
                Poll::Ready(match std::task::ready!(inner.poll(cx)) {
                    Ok(mut response) => {
                        let admitted = admitted.take();
                        let finish = match classify::head(&mut response) {
                            Head::Committed => admitted,
                            Head::Final(status) => {
                                if let Some(a) = admitted {
                                    a.finish(status.code());
                                }
                                None
                            }
                        };
                        Ok(response.map(|body| Observed::new(body, finish)))
                    }
                    Err(error) => {
                        let error = error.into();
                        let class = classify::error(&*error);
                        // Never processed: nothing learnt; the permit is released.
                        if let Some(a) = admitted.take().filter(|_| !class.unprocessed) {
                            a.finish(class.code);
                        }
                        Err(error)
                    }
                })
            }
        }
    }
}
