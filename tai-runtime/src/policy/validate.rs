//! Checking a hand-built policy by the rules the `#[resilient]` attribute and
//! tai-build apply at compile time, and [`PolicyError`], what it finds.
//!
//! Why through the shared model: a policy is turned back into the model's spec
//! ([`MethodPolicy::spec`]) and validated by `tai_model::validate`, so a
//! hand-built policy and a compiled one can never be held to different rules.

use super::codes::model_codes;
use super::{MethodKind, MethodPolicy, ServicePolicy};

impl MethodPolicy {
    /// Checks a hand-built policy by the same rules the `#[resilient]` attribute and
    /// tai-build apply at compile time (generated policies always pass). Returns
    /// every problem, each as `"retry(max_attempts): is 1, but must be at least 2"`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tai_runtime::Code;
    /// use tai_runtime::policy::{CodeSet, MethodKind, MethodPolicy, RetryPolicy};
    ///
    /// let policy = MethodPolicy::new("Get", "get", "/demo.Svc/Get", MethodKind::Unary)
    ///     .with_retry(RetryPolicy::new(
    ///         1,
    ///         Duration::from_millis(100),
    ///         Duration::from_secs(1),
    ///         2.0,
    ///         CodeSet::of(&[Code::Aborted]),
    ///     ));
    /// let error = policy.validate().unwrap_err();
    /// assert_eq!(error.problems()[0].problem.field.attr_path(), "retry(max_attempts)");
    /// assert_eq!(error.to_string(), "retry(max_attempts): is 1, but must be at least 2");
    /// ```
    pub fn validate(&self) -> Result<(), PolicyError> {
        let problems = check(&[&self.spec()], self.kind)
            .into_iter()
            .map(|problem| PolicyProblem {
                subject: None,
                problem,
            })
            .collect();
        PolicyError::result(problems)
    }

    /// This policy as one level of the shared model, every field set.
    pub(crate) fn spec(&self) -> tai_model::PolicySpec {
        use tai_model::{BreakerSpec, HedgingSpec, PolicySpec, RateRuleSpec, RetrySpec, Toggle};
        PolicySpec {
            idempotent: Some(self.idempotent),
            timeout: Some(self.timeout.map_or(Toggle::Off, Toggle::On)),
            max_timeout: self.max_timeout,
            retry: Some(self.retry.map_or(Toggle::Off, |r| {
                Toggle::On(RetrySpec {
                    max_attempts: Some(r.max_attempts),
                    initial_backoff: Some(r.initial_backoff),
                    max_backoff: Some(r.max_backoff),
                    multiplier: Some(r.multiplier),
                    codes: Some(model_codes(r.retryable)),
                })
            })),
            hedging: Some(self.hedging.map_or(Toggle::Off, |h| {
                Toggle::On(HedgingSpec {
                    max_attempts: Some(h.max_attempts),
                    delay: Some(h.delay),
                    non_fatal_codes: Some(model_codes(h.non_fatal)),
                })
            })),
            breaker: Some(self.breaker.map_or(Toggle::Off, |b| {
                Toggle::On(BreakerSpec {
                    failure_threshold: Some(b.failure_threshold),
                    open_timeout: Some(b.open_timeout),
                    max_open_timeout: Some(b.max_open_timeout),
                    half_open_max_calls: Some(b.half_open_max_calls),
                    rate: Some(b.rate.map_or(Toggle::Off, |r| {
                        Toggle::On(RateRuleSpec {
                            threshold: Some(r.threshold),
                            window: Some(r.window),
                            min_calls: Some(r.min_calls),
                        })
                    })),
                    failure_codes: Some(model_codes(b.failure_codes)),
                })
            })),
            throttle: None,
            balancer: None,
            auth: None,
        }
    }
}

/// Validates `levels` (the last one a method's) with the shared model.
fn check(levels: &[&tai_model::PolicySpec], kind: MethodKind) -> Vec<tai_model::Problem> {
    tai_model::validate(levels, kind, Some(levels.len() - 1))
        .err()
        .unwrap_or_default()
}

/// Why a hand-built policy is invalid: every problem found, not just the first.
///
/// Displayed one problem per line, each as
/// `/pkg.Svc/Method: retry(max_attempts): is 1, but must be at least 2`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PolicyError {
    problems: Vec<PolicyProblem>,
}

/// One problem of a [`PolicyError`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PolicyProblem {
    /// The method (its path) or service the problem is about; `None` when a
    /// single method was checked.
    pub subject: Option<&'static str>,
    /// What is wrong, and with which field (see [`tai_model::Problem`]).
    pub problem: tai_model::Problem,
}

impl PolicyError {
    fn result(problems: Vec<PolicyProblem>) -> Result<(), PolicyError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError { problems })
        }
    }

    /// Every problem, in the order the model found them.
    pub fn problems(&self) -> &[PolicyProblem] {
        &self.problems
    }
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(subject) = self.subject {
            write!(f, "{subject}: ")?;
        }
        f.write_str(&self.problem.in_attribute())
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            p.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl ServicePolicy {
    /// Checks every method (see [`MethodPolicy::validate`]) and the service's
    /// throttle; each problem names the method it is about.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let service = tai_model::PolicySpec {
            throttle: self.throttle.map(|t| {
                tai_model::Toggle::On(tai_model::ThrottleSpec {
                    max_tokens: Some(t.max_tokens),
                    token_ratio: Some(t.token_ratio),
                })
            }),
            ..tai_model::PolicySpec::default()
        };
        let mut problems = Vec::new();
        let methods: Vec<(&'static str, tai_model::PolicySpec, MethodKind)> =
            if self.methods.is_empty() {
                vec![(
                    self.name,
                    tai_model::PolicySpec::default(),
                    MethodKind::Unary,
                )]
            } else {
                self.methods
                    .iter()
                    .map(|m| (m.path, m.spec(), m.kind))
                    .collect()
            };
        for (what, spec, kind) in &methods {
            for problem in check(&[&service, spec], *kind) {
                let p = PolicyProblem {
                    subject: Some(*what),
                    problem,
                };
                // A service-level problem shows up once per method; keep the first.
                if !problems
                    .iter()
                    .any(|q: &PolicyProblem| q.problem.level == 0 && q.problem == p.problem)
                {
                    problems.push(p);
                }
            }
        }
        PolicyError::result(problems)
    }
}
