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
//! What a run-time config may change is what the call engine reads per call:
//! `timeout`, `retryPolicy`, `hedgingPolicy`, and the `tai` object's `idempotent` and
//! `max_timeout`. The breakers, the retry throttle and the balancer are built with the
//! client (and shared by the clients of one target), so a run-time config that sets
//! them is refused with a message saying to set them at build time; so is a retry or
//! hedging policy for a method compiled without either, whose calls the generated
//! client does not send through the retry engine.

use std::fmt;
use std::str::FromStr;

use http::HeaderValue;
use tai_model::{
    ConfigProblem, Field, MethodConfig, PolicySpec, Problem, ResolvedPolicy, json_path,
};

use crate::policy::{
    BreakerPolicy, CodeSet, HedgingPolicy, MethodPolicy, RateRule, RetryPolicy, ServicePolicy,
};

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
}

/// Every method's policy under a run-time config, in the compiled order.
#[derive(Debug)]
pub(crate) struct Effective {
    pub(crate) methods: Box<[Configured]>,
}

impl Effective {
    /// Applies `config` to `compiled`, or says every reason it cannot.
    pub(crate) fn new(
        compiled: &'static ServicePolicy,
        config: &ServiceConfig,
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
        for (field, why) in [
            (
                Field::Throttle,
                "cannot change at run time yet: the retry throttle is built with the client \
                 and shared by the clients of its target; set it at build time \
                 (tai_build::Builder::service_config or a .proto option)",
            ),
            (
                Field::Balancer,
                "cannot change at run time: the balancer is chosen when the channel is \
                 built; set it in ClientConfig or at build time",
            ),
        ] {
            if (field.def().get)(client).is_some() {
                fail(json_path(field), why.to_owned());
            }
        }
        let mut methods = Vec::with_capacity(compiled.methods.len());
        for m in compiled.methods {
            let policy = match config.model.level_for(compiled.name, m.name, m.kind) {
                None => *m,
                Some((entry, level)) => match configure(m, entry, &level) {
                    Ok(policy) => policy,
                    Err(found) => {
                        for (path, message) in found {
                            fail(path, message);
                        }
                        *m
                    }
                },
            };
            methods.push(Configured {
                timeout_header: crate::client::deadline::policy_timeout(&policy)
                    .and_then(crate::wire::timeout::encode),
                policy,
            });
        }
        if problems.is_empty() {
            Ok(Effective {
                methods: methods.into(),
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
    if level.breaker.is_some() {
        return Err(vec![(
            at(Field::Breaker),
            say(
                &"cannot change at run time yet: the breaker is built with the client and \
                  shared by the clients of its target; set it at build time \
                  (tai_build::Builder::service_config or a .proto option)",
            ),
        )]);
    }
    let compiled = m.spec();
    let resolved = tai_model::validate(&[&compiled, level], m.kind, Some(1)).map_err(
        |problems: Vec<Problem>| {
            problems
                .into_iter()
                .map(|p| (at(p.field), say(&p.kind)))
                .collect::<Vec<_>>()
        },
    )?;
    let engine = m.retry.is_some() || m.hedging.is_some();
    if !engine && (resolved.retry.is_some() || resolved.hedging.is_some()) {
        let field = if resolved.retry.is_some() {
            Field::Retry
        } else {
            Field::Hedging
        };
        return Err(vec![(
            at(field),
            say(
                &"was compiled without retry or hedging, so the generated client sends \
                  its calls once; give it a policy at build time (a .proto option, \
                  #[resilient], or tai_build::Builder::service_config) to change it here",
            ),
        )]);
    }
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
