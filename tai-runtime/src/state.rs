//! The run-time state of one client: a breaker per method, the retry throttle, and
//! the jitter source. Shared by every clone of the client.

use std::sync::Mutex;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::metrics::{MethodMetrics, Metrics};
use crate::policy::ServicePolicy;
use crate::throttle::RetryThrottle;
use crate::timer::DeadlineTimer;

/// The run-time state behind a generated client.
#[derive(Debug)]
pub struct ClientState {
    policy: &'static ServicePolicy,
    breakers: Box<[Option<CircuitBreaker>]>,
    metrics: Box<[MethodMetrics]>,
    /// Each method's `grpc-timeout` for its own timeout, encoded once: a call's
    /// first attempt sends a shared copy instead of formatting it again.
    timeout_headers: Box<[Option<http::HeaderValue>]>,
    throttle: Option<RetryThrottle>,
    rng: Mutex<SmallRng>,
    /// Every call's deadline, on one timer.
    deadlines: DeadlineTimer,
}

impl ClientState {
    /// Fresh state for `policy`: breakers closed, throttle bucket full.
    pub fn new(policy: &'static ServicePolicy) -> Self {
        let metrics: Box<[MethodMetrics]> = policy
            .methods
            .iter()
            .map(|m| Metrics::global().client_method(policy.name, m.name))
            .collect();
        Self {
            policy,
            breakers: policy
                .methods
                .iter()
                .zip(metrics.iter())
                .map(|(m, metrics)| {
                    m.breaker
                        .map(|b| CircuitBreaker::new(b).with_gauge(metrics.open.clone()))
                })
                .collect(),
            metrics,
            timeout_headers: policy
                .methods
                .iter()
                .map(|m| crate::deadline::policy_timeout(m).and_then(crate::deadline::grpc_timeout))
                .collect(),
            throttle: policy.throttle.as_ref().map(RetryThrottle::new),
            rng: Mutex::new(SmallRng::from_os_rng()),
            deadlines: DeadlineTimer::default(),
        }
    }

    /// The policy the client runs.
    pub fn policy(&self) -> &'static ServicePolicy {
        self.policy
    }

    /// The breaker of the method at `index`, if it has one.
    pub(crate) fn breaker_at(&self, index: usize) -> Option<&CircuitBreaker> {
        self.breakers.get(index).and_then(Option::as_ref)
    }

    pub(crate) fn metrics_at(&self, index: usize) -> &MethodMetrics {
        &self.metrics[index]
    }

    pub(crate) fn deadlines(&self) -> &DeadlineTimer {
        &self.deadlines
    }

    /// The `grpc-timeout` header of the method's own timeout, if it has one.
    pub(crate) fn timeout_header(&self, index: usize) -> Option<&http::HeaderValue> {
        self.timeout_headers.get(index).and_then(Option::as_ref)
    }

    /// The breaker of a method by proto name (`"ProposePolicy"`) or Rust name
    /// (`"propose_policy"`).
    pub fn breaker(&self, method: &str) -> Option<&CircuitBreaker> {
        self.breaker_at(self.policy.method_index(method)?)
    }

    /// The retry throttle, if the service has one.
    pub fn throttle(&self) -> Option<&RetryThrottle> {
        self.throttle.as_ref()
    }

    /// Makes retry jitter deterministic, for tests and reproducible benchmarks.
    pub fn seed_jitter(&self, seed: u64) {
        *crate::sync::lock(&self.rng) = SmallRng::seed_from_u64(seed);
    }

    pub(crate) fn with_rng<R>(&self, f: impl FnOnce(&mut SmallRng) -> R) -> R {
        f(&mut crate::sync::lock(&self.rng))
    }
}

/// What every generated client offers besides its RPC methods.
///
/// These live on a trait, not on the client, so that no RPC name can clash with
/// them: a service may well have a method called `BreakerState`.
///
/// ```ignore
/// use tai_runtime::{BreakerState, Resilient};
/// if let Some(BreakerState::Open { reason, .. }) = client.breaker_state("ProposePolicy") {
///     eprintln!("ProposePolicy is failing fast: {reason}");
/// }
/// ```
pub trait Resilient {
    /// The client's run-time state.
    fn client_state(&self) -> &ClientState;

    /// The breaker state of a method by proto or Rust name; `None` if the method
    /// has no breaker or does not exist.
    fn breaker_state(&self, method: &str) -> Option<BreakerState> {
        self.client_state()
            .breaker(method)
            .map(CircuitBreaker::state)
    }

    /// The compiled-in policy of the whole client.
    fn service_policy(&self) -> &'static ServicePolicy {
        self.client_state().policy()
    }

    /// Current retry-throttle tokens, if the service throttles retries.
    fn retry_tokens(&self) -> Option<f64> {
        self.client_state().throttle().map(RetryThrottle::tokens)
    }
}
