//! Fault injection in user space: a tower layer in front of a server's services
//! that refuses calls, slows them, or loses their responses *after* the service
//! ran them.
//!
//! The kernel's traffic shaping (netem) is not available on the machines tai is
//! developed on, and a layer is more precise anyway: it can lose exactly the
//! response of a call that was applied, which is the fault that tells a
//! deduplicating server from one that is merely retried.
//!
//! ```no_run
//! use std::time::Duration;
//! use tai_examples::fault::{FaultInjector, FaultPlan};
//!
//! let faults = FaultInjector::new("replica-1");
//! // Hand `faults.layer()` to the server (see `MeshServer::faults`), then, at run time:
//! faults.set(FaultPlan { latency: Duration::from_millis(200), ..FaultPlan::default() });
//! faults.set(FaultPlan::unavailable());
//! faults.clear();
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::Status;
use tower::{Layer, Service};

/// The header gRPC clients put on retries and hedged attempts (gRFC A6).
const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// What to do to calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Refuse every call with UNAVAILABLE before it reaches a service.
    pub unavailable: bool,
    /// Delay every call by this much before it reaches a service.
    pub latency: Duration,
    /// Lose the response of one call in `drop_every`: the service runs the call,
    /// then the client gets UNAVAILABLE, as if the connection broke on the way
    /// back. 0 turns it off; 1 loses every response.
    pub drop_every: u32,
    /// Lose responses of first attempts only (calls without the
    /// `grpc-previous-rpc-attempts` header), so a retry always gets through.
    pub drop_first_attempts_only: bool,
    /// Only calls whose path starts with one of these are touched, e.g.
    /// `/tai.v1.mesh.Governor/ProposePolicy`; empty touches every call, the
    /// standard health service's included.
    pub paths: Vec<String>,
}

impl FaultPlan {
    /// Refuse every call with UNAVAILABLE.
    pub fn unavailable() -> Self {
        Self {
            unavailable: true,
            ..Self::default()
        }
    }

    /// Slow every call by `latency`.
    pub fn latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// Lose the response of the first attempt of one call in `every` to `paths`
    /// (empty: every call), after the service ran it.
    pub fn lose_first_responses(every: u32, paths: &[&str]) -> Self {
        Self {
            drop_every: every,
            drop_first_attempts_only: true,
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            ..Self::default()
        }
    }

    fn is_active(&self) -> bool {
        self.unavailable || !self.latency.is_zero() || self.drop_every > 0
    }

    fn touches(&self, path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// What a [`FaultInjector`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Calls that went through the layer.
    pub calls: u64,
    /// Calls refused with UNAVAILABLE.
    pub refused: u64,
    /// Calls delayed.
    pub delayed: u64,
    /// Calls run whose response was lost.
    pub dropped: u64,
}

/// A handle on the faults of one server: change the plan at any time; every
/// clone controls the same layer.
#[derive(Clone, Debug)]
pub struct FaultInjector {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    plan: RwLock<FaultPlan>,
    calls: AtomicU64,
    refused: AtomicU64,
    delayed: AtomicU64,
    dropped: AtomicU64,
    drop_candidates: AtomicU64,
}

impl FaultInjector {
    /// An injector with no faults; `name` appears in the injected errors.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Shared {
                name: name.into(),
                plan: RwLock::new(FaultPlan::default()),
                calls: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                delayed: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                drop_candidates: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces the plan.
    pub fn set(&self, plan: FaultPlan) {
        *self.inner.plan.write().unwrap_or_else(|e| e.into_inner()) = plan;
        self.inner.drop_candidates.store(0, Ordering::Relaxed);
    }

    /// No faults from now on.
    pub fn clear(&self) {
        self.set(FaultPlan::default());
    }

    /// The current plan.
    pub fn plan(&self) -> FaultPlan {
        self.inner
            .plan
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What it did so far.
    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            calls: self.inner.calls.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
            delayed: self.inner.delayed.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
        }
    }

    /// The tower layer to put in front of a server's services.
    pub fn layer(&self) -> FaultLayer {
        FaultLayer {
            injector: self.clone(),
        }
    }
}

/// The layer of a [`FaultInjector`].
#[derive(Clone, Debug)]
pub struct FaultLayer {
    injector: FaultInjector,
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            injector: self.injector.clone(),
        }
    }
}

/// The service of a [`FaultLayer`].
#[derive(Clone, Debug)]
pub struct FaultService<S> {
    inner: S,
    injector: FaultInjector,
}

impl<S, B> Service<http::Request<B>> for FaultService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the ready one serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.injector.inner);
        shared.calls.fetch_add(1, Ordering::Relaxed);
        let plan = self.injector.plan();
        if !plan.is_active() || !plan.touches(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        if plan.unavailable {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let status =
                Status::unavailable(format!("injected fault: {} is refusing calls", shared.name));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let first_attempt = !request.headers().contains_key(PREVIOUS_ATTEMPTS);
        let lose = plan.drop_every > 0
            && (first_attempt || !plan.drop_first_attempts_only)
            && shared
                .drop_candidates
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(plan.drop_every));
        Box::pin(async move {
            if !plan.latency.is_zero() {
                shared.delayed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(plan.latency).await;
            }
            let response = inner.call(request).await?;
            if lose {
                // For a unary call the response exists only once the handler has
                // returned, so the call was applied; now it is lost.
                drop(response);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                let status = Status::unavailable(format!(
                    "injected fault: the response from {} was lost after the call ran",
                    shared.name
                ));
                return Ok(status.into_http());
            }
            Ok(response)
        })
    }
}
