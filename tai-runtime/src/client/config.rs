//! The gRPC service config at run time: a [`ServiceConfig`] read from the standard
//! JSON, checked against a client's compiled policy, and swapped in whole.
//!
//! The JSON is read by the one reader tai-build also uses (`tai_model::ServiceConfig`,
//! which follows grpc-go's parse rules and reports every problem with its JSON path).
//! Applying it to a client combines, per method, the compiled policy with the entry
//! gRPC would pick for that method (the one naming the method, else its service, else
//! the default) and validates the result by the rules of the `#[resilient]` attribute
//! and tai-build. Only a config that passes for every method is installed — atomically,
//! so a call sees the old policies or the new ones, never a mix, and calls in flight
//! finish under the policy they started with.
//!
//! Precedence, lowest first: the compiled policy, then the run-time config (field by
//! field: a config that sets only `timeout` keeps the compiled retry), then a caller's
//! own timeout (`tonic::Request::set_timeout`) — still clamped by `max_timeout`.
//!
//! A run-time config may change everything the JSON and the `tai` object name
//! except the balancer:
//!
//! - per method, `timeout`, `retryPolicy`, `hedgingPolicy`, and the `tai` object's
//!   `idempotent`, `max_timeout` and `breaker`. A method compiled without retry or
//!   hedging may gain either: its calls then run the retry engine (the generated
//!   client picks the path per call from the policy in effect; see `route.rs`).
//! - `retryThrottling`: a config that sets it brings a new throttle, its bucket
//!   full (gRFC A6; grpc-go builds a new throttler for every config that has
//!   one), in place of the client's; a config without it keeps the compiled one.
//! - a `breaker` in a method's `tai` object: the config builds that method a new
//!   breaker, closed. Compiled breakers and the compiled throttle are shared by
//!   every client of the same policy to the same target (see `state.rs`); a swap
//!   never touches that shared state: the client (and its clones) uses its own
//!   new breakers and throttle under the config, while the other clients of the
//!   target keep the shared ones, and clearing the config returns the client to
//!   them, in whatever state they have reached. Each new config builds its
//!   breakers and throttle afresh, even when they equal the last config's.
//!
//! A call in flight finishes with what it started with: its policy, its retry
//! and hedging decisions against the throttle of its start, and each attempt's
//! outcome recorded in the breaker that admitted it (the attempt holds it). A
//! success refills the throttle in place when it ends.
//!
//! The balancer is refused ("cannot change at run time"). Reading it per pick
//! would be cheap, but it is not a client's to change: it belongs to the
//! [`Channel`](crate::Channel), chosen when the channel is built and shared by
//! every client over it (clones, and clients of other services), so one
//! client's config would silently change the others'. And a switch is not just
//! a new picker: peak-EWMA keeps per-endpoint latency only while it balances,
//! so a channel switched to it would pick blind. Set it in `ClientConfig` or at
//! build time.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderValue;
use tai_model::{
    ConfigProblem, Field, MethodConfig, PolicySpec, Problem, ResolvedPolicy, json_path,
};

use crate::client::breaker::CircuitBreaker;
use crate::metrics::MethodMetrics;
use crate::policy::{
    BreakerPolicy, CodeSet, HedgingPolicy, MethodPolicy, RateRule, RetryPolicy, ServicePolicy,
    ThrottlePolicy,
};
use crate::throttle::RetryThrottle;

/// A gRPC service config, read and checked on its own (see the crate docs of
/// `tai_model` for the JSON, and the README's "Service config" section).
///
/// ```
/// use tai_runtime::ServiceConfig;
///
/// let config: ServiceConfig = r#"{
///   "methodConfig": [{
///     "name": [{ "service": "demo.Echo" }],
///     "timeout": "0.5s",
///     "retryPolicy": {
///       "maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
///       "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
///     }
///   }]
/// }"#.parse()?;
/// # drop(config);
///
/// let err = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{}], "timeout": "3c"}]}"#)
///     .unwrap_err();
/// assert!(err.to_string().starts_with("methodConfig[0].timeout: `3c` is not a duration"));
/// # Ok::<(), tai_runtime::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    model: tai_model::ServiceConfig,
}

impl ServiceConfig {
    /// Reads a service config from its JSON, with every problem found.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        tai_model::ServiceConfig::parse(json)
            .map(|model| ServiceConfig { model })
            .map_err(|problems| ConfigError { problems })
    }
}

impl FromStr for ServiceConfig {
    type Err = ConfigError;

    fn from_str(json: &str) -> Result<Self, ConfigError> {
        ServiceConfig::from_json(json)
    }
}

/// Why a service config was refused: every problem, each with its JSON path.
///
/// Displayed one problem per line, e.g.
/// `methodConfig[0].retryPolicy.maxAttempts: is 1, but must be at least 2`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// Every problem, in the order found.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            p.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One method's policy under a run-time config, with its `grpc-timeout` header
/// encoded once (as the compiled policies' are).
#[derive(Debug)]
pub(crate) struct Configured {
    pub(crate) policy: MethodPolicy,
    pub(crate) timeout_header: Option<HeaderValue>,
    /// `None` if the config sets no breaker for the method (the compiled one
    /// stays); else the breaker it built, fresh and closed (`Some(None)`: the
    /// config turned it off).
    pub(crate) breaker: Option<Option<Arc<CircuitBreaker>>>,
}

/// Every method's policy under a run-time config, in the compiled order, and
/// the retry throttle the client runs with under it.
#[derive(Debug)]
pub(crate) struct Effective {
    pub(crate) methods: Box<[Configured]>,
    /// A fresh, full bucket if the config sets `retryThrottling` (as grpc-go
    /// builds a new throttler for every config that has one); else the
    /// compiled throttle, shared as before.
    pub(crate) throttle: Option<Arc<RetryThrottle>>,
}

impl Effective {
    /// Applies `config` to `compiled`, or says every reason it cannot.
    /// `throttle` is the client's compiled retry throttle; `metrics` its
    /// methods' metrics (a breaker the config builds reports to its method's
    /// `breaker_open` gauge).
    pub(crate) fn new(
        compiled: &'static ServicePolicy,
        config: &ServiceConfig,
        throttle: Option<&Arc<RetryThrottle>>,
        metrics: &[MethodMetrics],
    ) -> Result<Effective, ConfigError> {
        let mut problems = Vec::new();
        let mut fail = |path: String, message: String| {
            if !problems
                .iter()
                .any(|p: &ConfigProblem| p.path == path && p.message == message)
            {
                problems.push(ConfigProblem { path, message });
            }
        };
        let client = &config.model.client;
        if (Field::Balancer.def().get)(client).is_some() {
            fail(
                json_path(Field::Balancer),
                "cannot change at run time: the balancer is chosen when the channel is \
                 built; set it in ClientConfig or at build time"
                    .to_owned(),
            );
        }
        let mut methods = Vec::with_capacity(compiled.methods.len());
        let mut replaced = Vec::with_capacity(compiled.methods.len());
        for (m, metrics) in compiled.methods.iter().zip(metrics) {
            let (policy, sets_breaker) = match config.model.level_for(compiled.name, m.name, m.kind)
            {
                None => (*m, false),
                Some((entry, level)) => match configure(m, entry, &level) {
                    Ok(policy) => (policy, level.breaker.is_some()),
                    Err(found) => {
                        for (path, message) in found {
                            fail(path, message);
                        }
                        (*m, false)
                    }
                },
            };
            methods.push(Configured {
                timeout_header: crate::client::deadline::policy_timeout(&policy)
                    .and_then(crate::wire::timeout::encode),
                // Built below, once the whole config has passed: a breaker's
                // gauge reads closed from the moment it exists.
                breaker: None,
                policy,
            });
            replaced.push((sets_breaker, metrics));
        }
        if problems.is_empty() {
            for (method, (sets_breaker, metrics)) in methods.iter_mut().zip(replaced) {
                method.breaker = sets_breaker.then(|| {
                    method
                        .policy
                        .breaker
                        .map(|b| Arc::new(CircuitBreaker::new(b).with_gauge(metrics.open.clone())))
                });
            }
            let throttle = match tai_model::resolve(&[client]).throttle {
                Some(t) => Some(Arc::new(RetryThrottle::new(&ThrottlePolicy {
                    max_tokens: t.max_tokens,
                    token_ratio: t.token_ratio,
                }))),
                None => throttle.cloned(),
            };
            Ok(Effective {
                methods: methods.into(),
                throttle,
            })
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// One method's compiled policy under a config entry, or the problems as
/// `(path, message)` pairs.
fn configure(
    m: &'static MethodPolicy,
    entry: &MethodConfig,
    level: &PolicySpec,
) -> Result<MethodPolicy, Vec<(String, String)>> {
    let at = |field: Field| format!("{}.{}", entry.path(), json_path(field));
    let say = |what: &dyn fmt::Display| format!("{}: {what}", m.path);
    let compiled = m.spec();
    let resolved = tai_model::validate(&[&compiled, level], m.kind, Some(1)).map_err(
        |problems: Vec<Problem>| {
            problems
                .into_iter()
                .map(|p| (at(p.field), say(&p.kind)))
                .collect::<Vec<_>>()
        },
    )?;
    Ok(method_policy(m, &resolved))
}

/// A resolved policy as the engine's data, named like the compiled method.
fn method_policy(m: &'static MethodPolicy, r: &ResolvedPolicy) -> MethodPolicy {
    // The model's code sets use the same bits (bit n is code n).
    let codes = |set: tai_model::CodeSet| CodeSet(set.0);
    MethodPolicy {
        idempotent: r.idempotent,
        timeout: r.timeout,
        max_timeout: r.max_timeout,
        retry: r.retry.as_ref().map(|r| RetryPolicy {
            max_attempts: r.max_attempts,
            initial_backoff: r.initial_backoff,
            max_backoff: r.max_backoff,
            multiplier: r.multiplier,
            retryable: codes(r.codes),
        }),
        hedging: r.hedging.as_ref().map(|h| HedgingPolicy {
            max_attempts: h.max_attempts,
            delay: h.delay,
            non_fatal: codes(h.non_fatal_codes),
        }),
        breaker: r.breaker.as_ref().map(|b| BreakerPolicy {
            failure_threshold: b.failure_threshold,
            open_timeout: b.open_timeout,
            max_open_timeout: b.max_open_timeout,
            half_open_max_calls: b.half_open_max_calls,
            rate: b.rate.as_ref().map(|r| RateRule {
                threshold: r.threshold,
                window: r.window,
                min_calls: r.min_calls,
            }),
            failure_codes: codes(b.failure_codes),
        }),
        ..*m
    }
}
