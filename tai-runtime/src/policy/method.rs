//! The call policies a client runs: retry, hedging, breaker (with its rate rule)
//! and throttle, gathered per method ([`MethodPolicy`]) and per service
//! ([`ServicePolicy`]).
//!
//! Why `const fn` constructors with `with_..` setters: the types are
//! `#[non_exhaustive]` so that a policy can grow a field without breaking anyone;
//! a constructor takes what a policy always has, a setter names each optional
//! part, and both work in the `static` the `#[resilient]` expansion writes.

use std::time::Duration;

use super::{CodeSet, MethodKind};

/// Retry per gRFC A6.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::policy::{CodeSet, RetryPolicy};
///
/// const RETRY: RetryPolicy = RetryPolicy::new(
///     4,
///     Duration::from_millis(100),
///     Duration::from_secs(1),
///     2.0,
///     CodeSet::of(&[Code::Unavailable]),
/// );
/// assert_eq!(RETRY.max_attempts, 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts including the first call. Values above 5 are treated as 5 (A6).
    pub max_attempts: u32,
    /// Backoff before the first retry.
    pub initial_backoff: Duration,
    /// Cap on the backoff before jitter.
    pub max_backoff: Duration,
    /// Growth factor per retry.
    pub multiplier: f64,
    /// Codes that are retried.
    pub retryable: CodeSet,
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts (the first included), retrying a failure with a
    /// code in `retryable` after a backoff that starts at `initial_backoff` and grows
    /// by `multiplier` up to `max_backoff` (before jitter). See the type's example.
    pub const fn new(
        max_attempts: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
        multiplier: f64,
        retryable: CodeSet,
    ) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff,
            max_backoff,
            multiplier,
            retryable,
        }
    }
}

/// Hedging per gRFC A6.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::policy::{CodeSet, HedgingPolicy};
///
/// const HEDGE: HedgingPolicy =
///     HedgingPolicy::new(3, Duration::from_millis(50), CodeSet::of(&[Code::Unavailable]));
/// assert_eq!(HEDGE.delay, Duration::from_millis(50));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct HedgingPolicy {
    /// Attempts including the first. Values above 5 are treated as 5.
    pub max_attempts: u32,
    /// Delay between starting attempts.
    pub delay: Duration,
    /// Codes after which the other attempts continue.
    pub non_fatal: CodeSet,
}

impl HedgingPolicy {
    /// Up to `max_attempts` attempts (the first included), one more started every
    /// `delay` until one succeeds or fails with a code not in `non_fatal`. See the
    /// type's example.
    pub const fn new(max_attempts: u32, delay: Duration, non_fatal: CodeSet) -> HedgingPolicy {
        HedgingPolicy {
            max_attempts,
            delay,
            non_fatal,
        }
    }
}

/// Failure-rate trip rule of a breaker.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::policy::RateRule;
///
/// const HALF: RateRule = RateRule::new(0.5, Duration::from_secs(10), 20);
/// assert_eq!(HALF.min_calls, 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateRule {
    /// Failure ratio at or above which the breaker trips.
    pub threshold: f64,
    /// Sliding window.
    pub window: Duration,
    /// Fewest calls in the window before the rule may trip.
    pub min_calls: u32,
}

impl RateRule {
    /// Trips when at least `threshold` (a ratio, 0..=1) of the calls in the last
    /// `window` failed, once the window holds `min_calls` calls. See the type's
    /// example.
    pub const fn new(threshold: f64, window: Duration, min_calls: u32) -> RateRule {
        RateRule {
            threshold,
            window,
            min_calls,
        }
    }
}

/// Circuit breaker.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::policy::{BreakerPolicy, CodeSet, RateRule};
///
/// const BREAKER: BreakerPolicy = BreakerPolicy::new(
///     5,
///     Duration::from_secs(1),
///     Duration::from_secs(30),
///     1,
///     CodeSet::of(&[Code::Unavailable]),
/// )
/// .with_rate(RateRule::new(0.5, Duration::from_secs(10), 20));
/// assert!(BREAKER.rate.is_some());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct BreakerPolicy {
    /// Consecutive failures that trip it.
    pub failure_threshold: u32,
    /// Open time before the first probe.
    pub open_timeout: Duration,
    /// Cap on the open time, which doubles after each failed probe.
    pub max_open_timeout: Duration,
    /// Probes admitted while half-open; all must succeed to close.
    pub half_open_max_calls: u32,
    /// Failure-rate rule, if on.
    pub rate: Option<RateRule>,
    /// Codes that count as failures.
    pub failure_codes: CodeSet,
}

impl BreakerPolicy {
    /// Trips after `failure_threshold` consecutive failures (codes in
    /// `failure_codes`), stays open `open_timeout` (doubling after each failed probe,
    /// up to `max_open_timeout`), then admits `half_open_max_calls` probes. No
    /// failure-rate rule: add one with [`with_rate`](Self::with_rate). See the type's
    /// example.
    pub const fn new(
        failure_threshold: u32,
        open_timeout: Duration,
        max_open_timeout: Duration,
        half_open_max_calls: u32,
        failure_codes: CodeSet,
    ) -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold,
            open_timeout,
            max_open_timeout,
            half_open_max_calls,
            rate: None,
            failure_codes,
        }
    }

    /// This breaker, also tripping by failure rate under `rate`.
    pub const fn with_rate(mut self, rate: RateRule) -> BreakerPolicy {
        self.rate = Some(rate);
        self
    }
}

/// Retry throttling per gRFC A6, shared by all methods of one client.
///
/// ```
/// use tai_runtime::policy::ThrottlePolicy;
///
/// const THROTTLE: ThrottlePolicy = ThrottlePolicy::new(100, 0.1);
/// assert_eq!(THROTTLE.max_tokens, 100);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ThrottlePolicy {
    /// Bucket size (1..=1000).
    pub max_tokens: u32,
    /// Tokens returned per success.
    pub token_ratio: f64,
}

impl ThrottlePolicy {
    /// A bucket of `max_tokens` tokens, `token_ratio` of a token returned per
    /// success. See the type's example.
    pub const fn new(max_tokens: u32, token_ratio: f64) -> ThrottlePolicy {
        ThrottlePolicy {
            max_tokens,
            token_ratio,
        }
    }
}

/// The policy of one method.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::Code;
/// use tai_runtime::policy::{CodeSet, HedgingPolicy, MethodKind, MethodPolicy};
///
/// const GET: MethodPolicy = MethodPolicy::new("Get", "get", "/demo.Kv/Get", MethodKind::Unary)
///     .with_idempotent(true)
///     .with_timeout(Duration::from_secs(2))
///     .with_hedging(HedgingPolicy::new(
///         3,
///         Duration::from_millis(50),
///         CodeSet::of(&[Code::Unavailable]),
///     ));
/// assert_eq!(GET.retry, None);
/// assert!(GET.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct MethodPolicy {
    /// The method's proto name, e.g. `"ProposePolicy"`.
    pub name: &'static str,
    /// The client method's Rust name, e.g. `"propose_policy"`.
    pub rust_name: &'static str,
    /// The HTTP/2 path, e.g. `"/tai.v1.Governor/ProposePolicy"`.
    pub path: &'static str,
    /// Unary, server-streaming, client-streaming or bidi.
    pub kind: MethodKind,
    /// Safe to run more than once.
    pub idempotent: bool,
    /// Deadline of the whole call (already clamped by `max_timeout`).
    pub timeout: Option<Duration>,
    /// Upper bound on any deadline, including one a caller asks for with
    /// with `Request::set_timeout`; a call with no timeout gets this one.
    pub max_timeout: Option<Duration>,
    /// Retry, if on.
    pub retry: Option<RetryPolicy>,
    /// Hedging, if on.
    pub hedging: Option<HedgingPolicy>,
    /// Breaker, if on.
    pub breaker: Option<BreakerPolicy>,
}

impl MethodPolicy {
    /// The method `name` (its proto name; `rust_name` is the client method's) at the
    /// HTTP/2 `path`: not idempotent, no timeout, no retry, hedging or breaker until
    /// a `with_..` setter turns one on. See the type's example.
    pub const fn new(
        name: &'static str,
        rust_name: &'static str,
        path: &'static str,
        kind: MethodKind,
    ) -> MethodPolicy {
        MethodPolicy {
            name,
            rust_name,
            path,
            kind,
            idempotent: false,
            timeout: None,
            max_timeout: None,
            retry: None,
            hedging: None,
            breaker: None,
        }
    }

    /// This policy, marked safe (or not) to run more than once.
    pub const fn with_idempotent(mut self, idempotent: bool) -> MethodPolicy {
        self.idempotent = idempotent;
        self
    }

    /// This policy with a deadline of `timeout` over the whole call.
    pub const fn with_timeout(mut self, timeout: Duration) -> MethodPolicy {
        self.timeout = Some(timeout);
        self
    }

    /// This policy with `max_timeout` as the bound on any deadline.
    pub const fn with_max_timeout(mut self, max_timeout: Duration) -> MethodPolicy {
        self.max_timeout = Some(max_timeout);
        self
    }

    /// This policy retrying by `retry`.
    pub const fn with_retry(mut self, retry: RetryPolicy) -> MethodPolicy {
        self.retry = Some(retry);
        self
    }

    /// This policy hedging by `hedging`.
    pub const fn with_hedging(mut self, hedging: HedgingPolicy) -> MethodPolicy {
        self.hedging = Some(hedging);
        self
    }

    /// This policy behind the circuit breaker `breaker`.
    pub const fn with_breaker(mut self, breaker: BreakerPolicy) -> MethodPolicy {
        self.breaker = Some(breaker);
        self
    }
}

/// The policy of a whole client: its service name, methods and shared throttle.
///
/// ```
/// use tai_runtime::config::BalancerKind;
/// use tai_runtime::policy::{MethodKind, MethodPolicy, ServicePolicy, ThrottlePolicy};
///
/// static KV: ServicePolicy = ServicePolicy::new(
///     "demo.Kv",
///     &[MethodPolicy::new("Get", "get", "/demo.Kv/Get", MethodKind::Unary)],
/// )
/// .with_throttle(ThrottlePolicy::new(100, 0.1))
/// .with_balancer(BalancerKind::LeastLoaded);
/// assert_eq!(KV.method_index("get"), Some(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServicePolicy {
    /// The fully qualified service name, e.g. `"tai.v1.Governor"`.
    pub name: &'static str,
    /// Every method, in declaration order; the expansion refers to them by index.
    pub methods: &'static [MethodPolicy],
    /// Retry throttling shared by all methods, if on.
    pub throttle: Option<ThrottlePolicy>,
    /// The balancer the generated `connect` uses, if the policy names one (a
    /// [`ClientConfig`](crate::config::ClientConfig) of your own overrides it).
    pub balancer: Option<crate::config::BalancerKind>,
}

impl ServicePolicy {
    /// The service `name` (fully qualified) with `methods`, in declaration order; no
    /// throttle and no balancer of its own until a `with_..` setter adds one. See the
    /// type's example.
    pub const fn new(name: &'static str, methods: &'static [MethodPolicy]) -> ServicePolicy {
        ServicePolicy {
            name,
            methods,
            throttle: None,
            balancer: None,
        }
    }

    /// This policy with retry throttling `throttle`, shared by all its methods.
    pub const fn with_throttle(mut self, throttle: ThrottlePolicy) -> ServicePolicy {
        self.throttle = Some(throttle);
        self
    }

    /// This policy naming `balancer` for the generated `connect`.
    pub const fn with_balancer(mut self, balancer: crate::config::BalancerKind) -> ServicePolicy {
        self.balancer = Some(balancer);
        self
    }

    /// The index of a method by its proto name (`"ProposePolicy"`) or its Rust name
    /// (`"propose_policy"`).
    pub fn method_index(&self, name: &str) -> Option<usize> {
        self.methods
            .iter()
            .position(|m| m.name == name || m.rust_name == name)
    }
}
