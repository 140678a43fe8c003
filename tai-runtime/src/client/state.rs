//! The run-time state of one client: a breaker per method, the retry throttle, and
//! the jitter source. Shared by every clone of the client.
//!
//! Breakers and the throttle protect a backend, not a client object: a user who
//! builds a client per request must still trip a breaker and throttle retries.
//! gRFC A6 keys retry throttling by server name; tai shares breakers and throttle
//! between every client of one service policy to one target (the same compiled
//! policy over channels to the same addresses) in the process. A client over a
//! transport that names no target (tonic's `Channel`, a tower stack of your own)
//! keeps its own: build it once and clone it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::client::breaker::{BreakerState, CircuitBreaker};
use crate::client::throttle::RetryThrottle;
use crate::client::timer::DeadlineTimer;
use crate::metrics::{MethodMetrics, Metrics};
use crate::policy::ServicePolicy;

/// The run-time state behind a generated client.
#[derive(Debug)]
pub struct ClientState {
    policy: &'static ServicePolicy,
    guards: Arc<Guards>,
    metrics: Box<[MethodMetrics]>,
    /// Each method's `grpc-timeout` for its own timeout, encoded once: a call's
    /// first attempt sends a shared copy instead of formatting it again.
    timeout_headers: Box<[Option<http::HeaderValue>]>,
    rng: Mutex<SmallRng>,
    /// Every call's deadline, on one timer.
    deadlines: DeadlineTimer,
}

/// What protects a backend: the breakers and the retry throttle, shared by the
/// clients of one policy to one target.
#[derive(Debug)]
struct Guards {
    breakers: Box<[Option<CircuitBreaker>]>,
    throttle: Option<RetryThrottle>,
}

impl Guards {
    fn new(policy: &'static ServicePolicy, metrics: &[MethodMetrics]) -> Self {
        Self {
            breakers: policy
                .methods
                .iter()
                .zip(metrics)
                .map(|(m, metrics)| {
                    m.breaker
                        .map(|b| CircuitBreaker::new(b).with_gauge(metrics.open.clone()))
                })
                .collect(),
            throttle: policy.throttle.as_ref().map(RetryThrottle::new),
        }
    }
}

/// The guards of every (policy, target) pair in use, per set of metrics the
/// clients record into. They outlive their clients (a client built per request
/// must find the breaker the previous one tripped), so the map is bounded: keyed
/// by what the program's own code names (its compiled policies, the targets it
/// connects to, its [`Metrics`]), never by anything a peer sends, and capped at
/// [`MAX_SHARED_GUARDS`] pairs; when full, pairs no client holds any more are
/// dropped, and if all are held a new pair gets guards of its own.
type Registry = Mutex<HashMap<(usize, String, u64), Arc<Guards>>>;

/// The most (policy, target) pairs whose guards are kept for sharing.
const MAX_SHARED_GUARDS: usize = 1024;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl ClientState {
    /// Fresh state for `policy`: breakers closed, throttle bucket full, its own.
    pub fn new(policy: &'static ServicePolicy) -> Self {
        Self::with_metrics(policy, None, Metrics::global())
    }

    /// State for `policy` over a transport to `target`: the breakers and the
    /// throttle are those of every other client of the same policy to the same
    /// target in the process (fresh if there is none).
    pub fn for_target(policy: &'static ServicePolicy, target: &str) -> Self {
        Self::with_metrics(policy, Some(target), Metrics::global())
    }

    /// State for `policy` recording into `metrics`: with a `target`, as
    /// [`for_target`](Self::for_target) among the clients that record into the
    /// same `metrics` (a breaker's `breaker_open` gauge is in one set only);
    /// without, as [`new`](Self::new).
    pub(crate) fn with_metrics(
        policy: &'static ServicePolicy,
        target: Option<&str>,
        metrics: &Metrics,
    ) -> Self {
        let Some(target) = target else {
            return Self::with_guards(policy, metrics, |metrics| {
                Arc::new(Guards::new(policy, metrics))
            });
        };
        Self::with_guards(policy, metrics, |handles| {
            // The policy's address identifies it: each compiled policy is one static.
            let key = (
                std::ptr::from_ref(policy) as usize,
                target.to_owned(),
                metrics.id(),
            );
            let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(guards) = map.get(&key) {
                return Arc::clone(guards);
            }
            if map.len() >= MAX_SHARED_GUARDS {
                map.retain(|_, guards| Arc::strong_count(guards) > 1);
            }
            let guards = Arc::new(Guards::new(policy, handles));
            if map.len() < MAX_SHARED_GUARDS {
                map.insert(key, Arc::clone(&guards));
            }
            guards
        })
    }

    fn with_guards(
        policy: &'static ServicePolicy,
        metrics: &Metrics,
        guards: impl FnOnce(&[MethodMetrics]) -> Arc<Guards>,
    ) -> Self {
        let metrics: Box<[MethodMetrics]> = policy
            .methods
            .iter()
            .map(|m| metrics.client_method(policy.name, m.name))
            .collect();
        Self {
            policy,
            guards: guards(&metrics),
            metrics,
            timeout_headers: policy
                .methods
                .iter()
                .map(|m| {
                    crate::client::deadline::policy_timeout(m)
                        .and_then(crate::wire::timeout::encode)
                })
                .collect(),
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
        self.guards.breakers.get(index).and_then(Option::as_ref)
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
        self.guards.throttle.as_ref()
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
