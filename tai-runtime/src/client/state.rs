//! The run-time state of one client: a breaker per method, the retry throttle, the
//! jitter source, and the policies a run-time service config put in place of the
//! compiled ones. Shared by every clone of the client.
//!
//! The run-time policies are one `ArcSwapOption`: empty (the compiled `&'static`
//! policies apply, at no cost per call) until a [`ServiceConfig`] is set, then a
//! whole table swapped atomically, so a call reads its method's policy once, without
//! a lock, and keeps it to its end while a new config goes in beside it.
//!
//! Breakers and the throttle protect a backend, not a client object: a user who
//! builds a client per request must still trip a breaker and throttle retries.
//! gRFC A6 keys retry throttling by server name; tai shares breakers and throttle
//! between every client of one service policy to one target (the same compiled
//! policy over channels to the same addresses) in the process. A client over a
//! transport that names no target (tonic's `Channel`, a tower stack of your own)
//! keeps its own: build it once and clone it.
//!
//! That sharing is for the compiled policies. A run-time config that sets
//! `retryThrottling` or a method's breaker carries its own, fresh ones in its
//! table, for this client and its clones only: a swap never resets or replaces
//! what the other clients of the target share, and clearing the config returns
//! the client to the shared state as the others left it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::client::breaker::{BreakerState, CircuitBreaker, Permit, Rejected};
use crate::client::config::{ConfigError, Effective, ServiceConfig};
use crate::client::stats::ClientStats;
use crate::client::throttle::RetryThrottle;
use crate::client::timer::DeadlineTimer;
use crate::metrics::{MethodMetrics, Metrics};
use crate::policy::{MethodPolicy, ServicePolicy};

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
    /// The policies under the run-time service config, if one is set.
    configured: ArcSwapOption<Effective>,
    /// The tai channel the client runs over, if it does: for its endpoints'
    /// statistics in [`ClientState::snapshot`].
    channel: Option<crate::Channel>,
}

/// What protects a backend: the breakers and the retry throttle, shared by the
/// clients of one policy to one target.
#[derive(Debug)]
struct Guards {
    /// In `Arc`s so that [`ClientState::breaker`] can hand out the breaker in
    /// place, compiled or set by a run-time config, alike.
    breakers: Box<[Option<Arc<CircuitBreaker>>]>,
    /// In an `Arc` so that a run-time config that leaves the throttle alone
    /// keeps this one (see [`Effective`]).
    throttle: Option<Arc<RetryThrottle>>,
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
                        .map(|b| Arc::new(CircuitBreaker::new(b).with_gauge(metrics.open.clone())))
                })
                .collect(),
            throttle: policy
                .throttle
                .as_ref()
                .map(|t| Arc::new(RetryThrottle::new(t))),
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
            let mut map = crate::sync::lock(registry());
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
            configured: ArcSwapOption::empty(),
            channel: None,
        }
    }

    /// The state with `channel`'s endpoints in its [`snapshot`](Self::snapshot).
    pub(crate) fn with_channel(mut self, channel: Option<&crate::Channel>) -> Self {
        self.channel = channel.cloned();
        self
    }

    /// This client's statistics now (it and its clones): per method the calls,
    /// the share that ended OK, the retries and the latency (mean, p50, p99); per
    /// endpoint of its channel, the channel's [`EndpointStats`](crate::channel::EndpointStats).
    /// See [`ClientStats`].
    pub fn snapshot(&self) -> ClientStats {
        ClientStats {
            service: self.policy.name,
            methods: self
                .policy
                .methods
                .iter()
                .zip(&self.metrics)
                .map(|(p, m)| m.stats.snapshot(p.name))
                .collect(),
            endpoints: self
                .channel
                .as_ref()
                .map(crate::Channel::endpoint_stats)
                .unwrap_or_default(),
        }
    }

    /// The policy a method by proto or Rust name runs now, printable; `None` if
    /// the client has no such method.
    pub fn method_policy_view(&self, method: &str) -> Option<PolicyView> {
        let index = self.policy.method_index(method)?;
        let effective = self.method_policy(index);
        Some(PolicyView {
            service: self.policy.name,
            configured: matches!(effective.0, Source::Configured { .. }),
            policy: *effective,
        })
    }

    /// The policy the method at `index` runs now: the compiled one, or what the
    /// run-time service config made of it. A call reads it once, when it starts.
    ///
    /// # Panics
    ///
    /// If `index` is not a method of the client's policy.
    pub fn method_policy(&self, index: usize) -> EffectivePolicy<'_> {
        let configured = self.configured.load();
        match &*configured {
            None => EffectivePolicy(Source::Compiled {
                policy: &self.policy.methods[index],
                timeout_header: self.timeout_header(index),
                throttle: self.guards.throttle.as_deref(),
            }),
            Some(table) => {
                assert!(index < table.methods.len(), "no method at index {index}");
                EffectivePolicy(Source::Configured {
                    table: Arc::clone(table),
                    index,
                })
            }
        }
    }

    /// Checks `config` against every method of the compiled policy and, if all pass,
    /// puts it in place at once: the next call of each method runs under it, calls
    /// in flight finish as they started. An invalid config changes nothing and says
    /// every reason, each with its JSON path. Setting a new config replaces the
    /// previous one whole (it applies over the compiled policy, not over the last
    /// config). A config that sets `retryThrottling` or a method's breaker gives
    /// this client (and its clones) a new throttle or breaker, fresh, in place of
    /// the one shared with the other clients of its target, which it leaves as it
    /// is; see the module docs of `client::config` (in the README's "Service
    /// config" section).
    ///
    /// ```
    /// # use tai_runtime::__private::ClientState;
    /// # use tai_runtime::policy::ServicePolicy;
    /// # static POLICY: ServicePolicy = ServicePolicy::new("demo.Echo", &[]);
    /// # let state = ClientState::new(&POLICY);
    /// let throttled = r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#;
    /// state.set_service_config(&throttled.parse()?)?;
    /// assert_eq!(state.throttle().map(|t| t.tokens()), Some(10.0)); // a new, full bucket
    ///
    /// let bad = r#"{"tai": {"balancer": "random"}}"#;
    /// let err = state.set_service_config(&bad.parse()?).unwrap_err();
    /// assert!(err.to_string().starts_with("tai.balancer: cannot change at run time"));
    /// # Ok::<(), tai_runtime::ConfigError>(())
    /// ```
    pub fn set_service_config(&self, config: &ServiceConfig) -> Result<(), ConfigError> {
        let table = Effective::new(
            self.policy,
            config,
            self.guards.throttle.as_ref(),
            &self.metrics,
        )?;
        let replaced: Vec<bool> = table.methods.iter().map(|m| m.breaker.is_some()).collect();
        self.configured.store(Some(Arc::new(table)));
        self.republish_compiled(|index| !replaced[index]);
        Ok(())
    }

    /// Drops the run-time service config: the next calls run the compiled policies.
    pub fn clear_service_config(&self) {
        self.configured.store(None);
        self.republish_compiled(|_| true);
    }

    /// A breaker a config builds shares its method's `breaker_open` gauge with
    /// the compiled one; the compiled breakers back in use (`back(index)`) set
    /// it to their own state again.
    fn republish_compiled(&self, back: impl Fn(usize) -> bool) {
        for (index, breaker) in self.guards.breakers.iter().enumerate() {
            if let Some(b) = breaker
                && back(index)
            {
                b.republish();
            }
        }
    }

    /// The policy the client runs.
    pub fn policy(&self) -> &'static ServicePolicy {
        self.policy
    }

    /// The compiled breaker of the method at `index`, if it has one.
    pub(crate) fn breaker_at(&self, index: usize) -> Option<&CircuitBreaker> {
        self.guards.breakers.get(index).and_then(Option::as_deref)
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

    /// The breaker in place now of a method by proto name (`"ProposePolicy"`)
    /// or Rust name (`"propose_policy"`): the run-time service config's, if it
    /// set one for the method, else the compiled one.
    pub fn breaker(&self, method: &str) -> Option<Arc<CircuitBreaker>> {
        let index = self.policy.method_index(method)?;
        if let Some(table) = self.configured.load().as_ref()
            && let Some(replaced) = &table.methods[index].breaker
        {
            return replaced.clone();
        }
        self.guards.breakers[index].clone()
    }

    /// The retry throttle in place now, if the client throttles retries: the
    /// run-time service config's, else the compiled one (shared with the other
    /// clients of the target).
    pub fn throttle(&self) -> Option<Arc<RetryThrottle>> {
        match &*self.configured.load() {
            None => self.guards.throttle.clone(),
            Some(table) => table.throttle.clone(),
        }
    }

    /// Whether the client throttles retries now.
    pub(crate) fn throttles(&self) -> bool {
        match &*self.configured.load() {
            None => self.guards.throttle.is_some(),
            Some(table) => table.throttle.is_some(),
        }
    }

    /// Counts a successful call in the retry throttle in place now. A call that
    /// began before a run-time config replaced the throttle made its retry
    /// decisions with the old one; its success still refills the bucket that
    /// the next calls read (the old one has no reader left).
    pub(crate) fn record_success(&self) {
        let configured = self.configured.load();
        let throttle = match &*configured {
            None => self.guards.throttle.as_deref(),
            Some(table) => table.throttle.as_deref(),
        };
        if let Some(t) = throttle {
            t.record_success();
        }
    }

    /// Makes retry jitter deterministic, for tests and reproducible benchmarks.
    pub fn seed_jitter(&self, seed: u64) {
        *crate::sync::lock(&self.rng) = SmallRng::seed_from_u64(seed);
    }

    pub(crate) fn with_rng<R>(&self, f: impl FnOnce(&mut SmallRng) -> R) -> R {
        f(&mut crate::sync::lock(&self.rng))
    }
}

/// A method's policy as a call runs it (see [`ClientState::method_policy`]): the
/// compiled `&'static` one, or one from the run-time service config, held for as
/// long as the call needs it. Dereferences to the [`MethodPolicy`].
#[derive(Debug)]
pub struct EffectivePolicy<'a>(Source<'a>);

#[derive(Debug)]
enum Source<'a> {
    Compiled {
        policy: &'static MethodPolicy,
        timeout_header: Option<&'a http::HeaderValue>,
        throttle: Option<&'a RetryThrottle>,
    },
    Configured {
        table: Arc<Effective>,
        index: usize,
    },
}

impl EffectivePolicy<'_> {
    /// Asks the method's breaker in place under this policy to admit an
    /// attempt: the one the run-time config built, if it set one for the
    /// method (the permit then holds it, so a call in flight finishes with it
    /// across a swap), else the compiled one of `state`.
    pub(crate) fn admit<'s>(
        &self,
        state: &'s ClientState,
        index: usize,
    ) -> Result<Option<Permit<'s>>, Rejected> {
        if let Source::Configured { table, .. } = &self.0
            && let Some(replaced) = &table.methods[index].breaker
        {
            return replaced
                .as_ref()
                .map(CircuitBreaker::admit_shared)
                .transpose();
        }
        state
            .breaker_at(index)
            .map(CircuitBreaker::admit)
            .transpose()
    }

    /// The retry throttle of the client under this policy: a call makes its
    /// retry and hedging decisions with it to its end, even if a new run-time
    /// config replaces it meanwhile.
    pub(crate) fn throttle(&self) -> Option<&RetryThrottle> {
        match &self.0 {
            Source::Compiled { throttle, .. } => *throttle,
            Source::Configured { table, .. } => table.throttle.as_deref(),
        }
    }

    /// The `grpc-timeout` header of the method's own timeout, encoded once per
    /// policy, if it has one.
    pub(crate) fn timeout_header(&self) -> Option<http::HeaderValue> {
        match &self.0 {
            Source::Compiled { timeout_header, .. } => timeout_header.cloned(),
            Source::Configured { table, index } => table.methods[*index].timeout_header.clone(),
        }
    }
}

impl std::ops::Deref for EffectivePolicy<'_> {
    type Target = MethodPolicy;

    fn deref(&self) -> &MethodPolicy {
        match &self.0 {
            Source::Compiled { policy, .. } => policy,
            Source::Configured { table, index } => &table.methods[*index].policy,
        }
    }
}

/// A method's policy as it runs now (see [`Resilient::policy`]): compiled, or
/// as the run-time service config made it. Its `Display` writes one line per
/// field in the `#[resilient(...)]` grammar:
///
/// ```text
/// tai.v1.Governor/ProposePolicy (compiled)
///   idempotent = false
///   timeout = "30s"
///   retry = none
///   hedging = none
///   breaker(failure_threshold) = 5
///   ...
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct PolicyView {
    /// The service's full name.
    pub service: &'static str,
    /// The method's policy in effect.
    pub policy: MethodPolicy,
    /// Whether a run-time service config put it in place of the compiled one.
    pub configured: bool,
}

impl PolicyView {
    /// The view of `policy`, a method of `service` as compiled in (no service
    /// config), e.g. to print what a generated client's `SERVICE_POLICY` holds.
    ///
    /// ```
    /// use tai_runtime::PolicyView;
    /// use tai_runtime::policy::{MethodKind, MethodPolicy};
    ///
    /// let get = MethodPolicy::new("Get", "get", "/demo.Kv/Get", MethodKind::Unary);
    /// let view = PolicyView::compiled("demo.Kv", get);
    /// assert!(view.to_string().starts_with("demo.Kv/Get (compiled)"));
    /// ```
    pub const fn compiled(service: &'static str, policy: MethodPolicy) -> PolicyView {
        PolicyView {
            service,
            policy,
            configured: false,
        }
    }
}

impl std::fmt::Display for PolicyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = if self.configured {
            "service config"
        } else {
            "compiled"
        };
        writeln!(f, "{}/{} ({source})", self.service, self.policy.name)?;
        for (path, value) in tai_model::field_values(&self.policy.spec()) {
            writeln!(f, "  {path} = {value}")?;
        }
        Ok(())
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
        self.client_state().breaker(method).map(|b| b.state())
    }

    /// The compiled-in policy of the whole client.
    fn service_policy(&self) -> &'static ServicePolicy {
        self.client_state().policy()
    }

    /// The policy a method (proto or Rust name) runs now, compiled or set by a
    /// run-time service config; printable, one field a line. `None` if there is
    /// no such method.
    ///
    /// ```ignore
    /// println!("{}", client.policy("ProposePolicy").expect("a method of Governor"));
    /// ```
    fn policy(&self, method: &str) -> Option<PolicyView> {
        self.client_state().method_policy_view(method)
    }

    /// This client's statistics now; see [`ClientState::snapshot`].
    ///
    /// ```ignore
    /// print!("{}", client.stats()); // a table: per method, then per endpoint
    /// ```
    fn stats(&self) -> ClientStats {
        self.client_state().snapshot()
    }

    /// Current retry-throttle tokens, if the service throttles retries.
    fn retry_tokens(&self) -> Option<f64> {
        self.client_state().throttle().map(|t| t.tokens())
    }

    /// Puts a run-time service config in place of the compiled policies, for this
    /// client and its clones; see [`ClientState::set_service_config`].
    ///
    /// ```ignore
    /// let config: tai_runtime::ServiceConfig = std::fs::read_to_string("svc.json")?.parse()?;
    /// client.set_service_config(&config)?;
    /// ```
    fn set_service_config(&self, config: &ServiceConfig) -> Result<(), ConfigError> {
        self.client_state().set_service_config(config)
    }

    /// The client with a run-time service config set, for building one:
    /// `GovernorClient::new(channel).with_service_config(&config)?`.
    fn with_service_config(self, config: &ServiceConfig) -> Result<Self, ConfigError>
    where
        Self: Sized,
    {
        self.set_service_config(config)?;
        Ok(self)
    }
}
