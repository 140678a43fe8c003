//! Policies as plain `const` data.
//!
//! The `#[resilient]` expansion writes one `static` [`ServicePolicy`] per client; every
//! value in it was validated at compile time by the shared model (`tai-model`), so the
//! runtime only reads it. Building these by hand is also fine (for a tower layer
//! without codegen); [`MethodPolicy::validate`] checks such a value.

use std::time::Duration;

pub use tai_model::{Code as ModelCode, CodeSet, MethodKind};

/// Retry per gRFC A6.
#[derive(Clone, Copy, Debug, PartialEq)]
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

/// Hedging per gRFC A6.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HedgingPolicy {
    /// Attempts including the first. Values above 5 are treated as 5.
    pub max_attempts: u32,
    /// Delay between starting attempts.
    pub delay: Duration,
    /// Codes after which the other attempts continue.
    pub non_fatal: CodeSet,
}

/// Failure-rate trip rule of a breaker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateRule {
    /// Failure ratio at or above which the breaker trips.
    pub threshold: f64,
    /// Sliding window.
    pub window: Duration,
    /// Fewest calls in the window before the rule may trip.
    pub min_calls: u32,
}

/// Circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq)]
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

/// Retry throttling per gRFC A6, shared by all methods of one client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThrottlePolicy {
    /// Bucket size (1..=1000).
    pub max_tokens: u32,
    /// Tokens returned per success.
    pub token_ratio: f64,
}

/// The policy of one method.
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// Upper bound on any deadline, including a caller's.
    pub max_timeout: Option<Duration>,
    /// Retry, if on.
    pub retry: Option<RetryPolicy>,
    /// Hedging, if on.
    pub hedging: Option<HedgingPolicy>,
    /// Breaker, if on.
    pub breaker: Option<BreakerPolicy>,
}

/// The policy of a whole client: its service name, methods and shared throttle.
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// The index of a method by its proto name (`"ProposePolicy"`) or its Rust name
    /// (`"propose_policy"`).
    pub fn method_index(&self, name: &str) -> Option<usize> {
        self.methods
            .iter()
            .position(|m| m.name == name || m.rust_name == name)
    }
}
