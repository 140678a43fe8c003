//! The one validator: every rule about what a policy may say lives here.

use std::time::Duration;

use crate::spec::{AuthSpec, BreakerSpec, HedgingSpec, RetrySpec, Toggle};
use crate::{Code, Field, MethodKind, PolicySpec, Problem, ProblemKind, ResolvedPolicy, resolve};

/// Codes whose presence proves the server did not run the call, so that even a
/// non-idempotent method may retry on them. By gRPC convention (AIP-194) a server
/// returns UNAVAILABLE only when it did not process the request.
const SAFE_FOR_ANY_METHOD: &[Code] = &[Code::Unavailable];

/// The most attempts A6 allows; more are capped, not rejected.
pub const MAX_ATTEMPTS_CAP: u32 = 5;

struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn fail(&mut self, field: Field, level: usize, kind: ProblemKind) {
        self.problems.push(Problem { field, level, kind });
    }

    fn positive_duration(&mut self, field: Field, level: usize, value: Option<Duration>) {
        if value == Some(Duration::ZERO) {
            self.fail(field, level, ProblemKind::Zero);
        }
    }

    fn count_at_least(&mut self, field: Field, level: usize, value: Option<u32>, min: u32) {
        if let Some(v) = value.filter(|v| *v < min) {
            self.fail(field, level, ProblemKind::TooFew { value: v, min });
        }
    }

    /// The rules about one level on its own (its values, and what may be written
    /// on a method), before levels are combined.
    fn level(&mut self, i: usize, level: &PolicySpec, is_method: bool) {
        self.positive_duration(Field::MaxTimeout, i, level.max_timeout);
        if let Some(Toggle::On(t)) = level.timeout {
            self.positive_duration(Field::Timeout, i, Some(t));
        }
        if let Some(r) = retry_of(level) {
            self.count_at_least(Field::RetryMaxAttempts, i, r.max_attempts, 2);
            self.positive_duration(Field::RetryInitialBackoff, i, r.initial_backoff);
            self.positive_duration(Field::RetryMaxBackoff, i, r.max_backoff);
            if let Some(m) = r.multiplier.filter(|m| !(*m > 0.0 && m.is_finite())) {
                self.fail(
                    Field::RetryMultiplier,
                    i,
                    ProblemKind::NotPositive { value: m },
                );
            }
            if r.codes.as_ref().is_some_and(Vec::is_empty) {
                self.fail(
                    Field::RetryCodes,
                    i,
                    ProblemKind::NoCodes {
                        hint: "list at least one code to retry, or turn retry off",
                    },
                );
            }
            self.no_ok(Field::RetryCodes, i, &r.codes);
        }
        if let Some(h) = hedging_of(level) {
            self.count_at_least(Field::HedgingMaxAttempts, i, h.max_attempts, 2);
            self.no_ok(Field::HedgingNonFatalCodes, i, &h.non_fatal_codes);
        }
        if retry_of(level).is_some() && hedging_of(level).is_some() {
            self.fail(Field::Hedging, i, ProblemKind::RetryAndHedging);
        }
        if let Some(b) = breaker_of(level) {
            self.count_at_least(Field::BreakerFailureThreshold, i, b.failure_threshold, 1);
            self.count_at_least(Field::BreakerHalfOpenMaxCalls, i, b.half_open_max_calls, 1);
            self.positive_duration(Field::BreakerOpenTimeout, i, b.open_timeout);
            self.positive_duration(Field::BreakerMaxOpenTimeout, i, b.max_open_timeout);
            self.no_ok(Field::BreakerFailureCodes, i, &b.failure_codes);
            if let Some(Toggle::On(r)) = &b.rate {
                if let Some(t) = r.threshold.filter(|t| !(*t > 0.0 && *t <= 1.0)) {
                    self.fail(
                        Field::BreakerFailureRate,
                        i,
                        ProblemKind::OutOfRange {
                            value: t.to_string(),
                            range: "(0, 1]",
                        },
                    );
                }
                self.positive_duration(Field::BreakerWindow, i, r.window);
                self.count_at_least(Field::BreakerMinCalls, i, r.min_calls, 1);
            }
        }
        if level.balancer.is_some() && is_method {
            self.fail(
                Field::Balancer,
                i,
                ProblemKind::PerClient {
                    why: "is chosen per client",
                },
            );
        }
        if let Some(Toggle::On(a)) = &level.auth {
            self.auth(i, a);
        }
        if let Some(Toggle::On(t)) = &level.throttle {
            if is_method {
                self.fail(
                    Field::Throttle,
                    i,
                    ProblemKind::PerClient {
                        why: "is shared by every method of a client",
                    },
                );
            }
            if let Some(n) = t.max_tokens.filter(|n| !(1..=1000).contains(n)) {
                self.fail(
                    Field::ThrottleMaxTokens,
                    i,
                    ProblemKind::OutOfRange {
                        value: n.to_string(),
                        range: "1..=1000",
                    },
                );
            }
            if let Some(r) = t.token_ratio.filter(|r| !(*r > 0.0 && r.is_finite())) {
                self.fail(
                    Field::ThrottleTokenRatio,
                    i,
                    ProblemKind::NotPositive { value: r },
                );
            }
        }
    }

    /// An access rule on its own: names well formed, `public` alone, no scope or
    /// role on a rule that does not require an identity.
    fn auth(&mut self, i: usize, auth: &AuthSpec) {
        for (field, names) in [
            (Field::AuthScopes, &auth.scopes),
            (Field::AuthRoles, &auth.roles),
        ] {
            for name in names.iter().flatten() {
                if let Err(why) = check_access_name(name) {
                    self.fail(
                        field,
                        i,
                        ProblemKind::BadName {
                            value: name.clone(),
                            why,
                        },
                    );
                }
            }
        }
        let listed = |n: &Option<Vec<String>>| n.as_ref().is_some_and(|n| !n.is_empty());
        if auth.public == Some(true) {
            for (field, set) in [
                (Field::AuthRequired, auth.required == Some(true)),
                (Field::AuthScopes, listed(&auth.scopes)),
                (Field::AuthRoles, listed(&auth.roles)),
            ] {
                if set {
                    self.fail(field, i, ProblemKind::PublicWithRule);
                }
            }
        } else if auth.required == Some(false) {
            for field in [Field::AuthScopes, Field::AuthRoles] {
                let names = if field == Field::AuthScopes {
                    &auth.scopes
                } else {
                    &auth.roles
                };
                if listed(names) {
                    self.fail(field, i, ProblemKind::NamesWithoutIdentity);
                }
            }
        }
    }

    fn no_ok(&mut self, field: Field, level: usize, codes: &Option<Vec<Code>>) {
        if codes.as_ref().is_some_and(|c| c.contains(&Code::Ok)) {
            self.fail(field, level, ProblemKind::ContainsOk);
        }
    }
}

/// Checks the name of a scope or a role: not empty, and only visible ASCII other
/// than `"` and `\` (the characters of an OAuth scope token, RFC 6749 §3.3), so that
/// it reads the same in a token, a log line and a status message. `Err` says why.
///
/// ```
/// use tai_model::check_access_name;
/// assert!(check_access_name("policies.write").is_ok());
/// assert!(check_access_name("").is_err());
/// assert!(check_access_name("policies write").is_err());
/// ```
pub fn check_access_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name.len() > MAX_ACCESS_NAME {
        Err("is longer than 128 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        Err("may hold only visible ASCII characters other than `\"` and `\\` (no spaces)")
    } else {
        Ok(())
    }
}

/// The longest scope or role name accepted, in bytes.
const MAX_ACCESS_NAME: usize = 128;

/// The innermost level that sets `get`, if any.
fn origin(levels: &[&PolicySpec], get: impl Fn(&PolicySpec) -> bool) -> Option<usize> {
    levels.iter().rposition(|l| get(l))
}

fn retry_of(l: &PolicySpec) -> Option<&RetrySpec> {
    match &l.retry {
        Some(Toggle::On(r)) => Some(r),
        _ => None,
    }
}

fn hedging_of(l: &PolicySpec) -> Option<&HedgingSpec> {
    match &l.hedging {
        Some(Toggle::On(h)) => Some(h),
        _ => None,
    }
}

fn breaker_of(l: &PolicySpec) -> Option<&BreakerSpec> {
    match &l.breaker {
        Some(Toggle::On(b)) => Some(b),
        _ => None,
    }
}

/// The rules about one level on its own, before it is combined with others: its
/// values (`max_attempts` at least 2, durations above zero, ...), retry beside
/// hedging, and, if `is_method`, the settings of a whole client written on a method.
/// What needs the combined policy (unsafe retry on a method that is not idempotent,
/// backoff order, streamed requests) is left to [`validate`]. The service-config
/// reader uses it to reject a bad `methodConfig` before it knows the methods.
///
/// ```
/// use tai_model::{Field, PolicySpec, RetrySpec, Toggle, check_level};
/// let level = PolicySpec {
///     retry: Some(Toggle::On(RetrySpec { max_attempts: Some(1), ..RetrySpec::default() })),
///     ..PolicySpec::default()
/// };
/// assert_eq!(check_level(&level, true)[0].field, Field::RetryMaxAttempts);
/// ```
pub fn check_level(level: &PolicySpec, is_method: bool) -> Vec<Problem> {
    let mut check = Check {
        problems: Vec::new(),
    };
    check.level(0, level, is_method);
    check.problems
}

/// Validates the levels of one method (outermost first: file, service, method) and
/// returns the resolved policy, or every problem found — never just the first.
///
/// `method_level` is the index of the method's own level, if the last level is one;
/// some settings (retry throttling) belong to a whole client and are rejected there.
pub fn validate(
    levels: &[&PolicySpec],
    kind: MethodKind,
    method_level: Option<usize>,
) -> Result<ResolvedPolicy, Vec<Problem>> {
    let mut check = Check {
        problems: Vec::new(),
    };
    for (i, level) in levels.iter().enumerate() {
        check.level(i, level, method_level == Some(i));
    }
    if !check.problems.is_empty() {
        return Err(check.problems);
    }

    let mut resolved = resolve(levels);
    let innermost = levels.len().saturating_sub(1);

    if kind.streams_requests() {
        // A stream of requests cannot be re-sent without a replay buffer; an inherited
        // retry or hedge simply does not apply, but asking for one here is an error.
        if let Some(m) = method_level {
            if retry_of(levels[m]).is_some() {
                check.fail(Field::Retry, m, ProblemKind::StreamedRequests);
            }
            if hedging_of(levels[m]).is_some() {
                check.fail(Field::Hedging, m, ProblemKind::StreamedRequests);
            }
        }
        resolved.retry = None;
        resolved.hedging = None;
    }

    if let Some(r) = &resolved.retry {
        if r.initial_backoff > r.max_backoff {
            let level = origin(levels, |l| {
                retry_of(l).is_some_and(|r| r.initial_backoff.is_some() || r.max_backoff.is_some())
            });
            check.fail(
                Field::RetryInitialBackoff,
                level.unwrap_or(innermost),
                ProblemKind::BackoffOrder {
                    initial: r.initial_backoff,
                    max: r.max_backoff,
                },
            );
        }
        if !resolved.idempotent {
            let unsafe_codes: Vec<Code> = r
                .codes
                .codes()
                .into_iter()
                .filter(|c| !SAFE_FOR_ANY_METHOD.contains(c))
                .collect();
            if !unsafe_codes.is_empty() {
                let level = origin(levels, |l| retry_of(l).is_some_and(|r| r.codes.is_some()))
                    .unwrap_or(innermost);
                check.fail(
                    Field::RetryCodes,
                    level,
                    ProblemKind::UnsafeRetry {
                        codes: unsafe_codes,
                    },
                );
            }
        }
    }
    if resolved.hedging.is_some() && !resolved.idempotent {
        let level = origin(levels, |l| hedging_of(l).is_some()).unwrap_or(innermost);
        check.fail(Field::Hedging, level, ProblemKind::UnsafeHedging);
    }
    if let (Some(t), Some(max)) = (resolved.timeout, resolved.max_timeout) {
        // Not an error: the clamp is the point of max_timeout. Apply it now so the
        // runtime never has to.
        resolved.timeout = Some(t.min(max));
    }
    if resolved
        .breaker
        .as_ref()
        .is_some_and(|b| b.failure_codes.is_empty())
    {
        let level = origin(levels, |l| {
            breaker_of(l).is_some_and(|b| b.failure_codes.is_some())
        })
        .unwrap_or(innermost);
        check.fail(
            Field::BreakerFailureCodes,
            level,
            ProblemKind::NoCodes {
                hint: "the breaker could never trip; turn it off instead",
            },
        );
    }
    if check.problems.is_empty() {
        Ok(resolved)
    } else {
        Err(check.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ThrottleSpec;

    fn method(spec: PolicySpec) -> Result<ResolvedPolicy, Vec<Problem>> {
        validate(&[&spec], MethodKind::Unary, Some(0))
    }

    fn fields(r: Result<ResolvedPolicy, Vec<Problem>>) -> Vec<Field> {
        r.unwrap_err().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn collects_every_problem() {
        let spec = PolicySpec {
            idempotent: Some(true),
            retry: Some(Toggle::On(RetrySpec {
                max_attempts: Some(1),
                initial_backoff: Some(Duration::ZERO),
                multiplier: Some(-1.0),
                codes: Some(vec![Code::Ok]),
                ..RetrySpec::default()
            })),
            throttle: Some(Toggle::On(ThrottleSpec::default())),
            ..PolicySpec::default()
        };
        assert_eq!(
            fields(method(spec)),
            vec![
                Field::RetryMaxAttempts,
                Field::RetryInitialBackoff,
                Field::RetryMultiplier,
                Field::RetryCodes,
                Field::Throttle
            ]
        );
    }

    #[test]
    fn non_idempotent_retry_only_on_unavailable() {
        let retry = |codes| PolicySpec {
            retry: Some(Toggle::On(RetrySpec {
                codes: Some(codes),
                ..RetrySpec::default()
            })),
            ..PolicySpec::default()
        };
        assert!(method(retry(vec![Code::Unavailable])).is_ok());
        let err = method(retry(vec![Code::Unavailable, Code::Aborted])).unwrap_err();
        assert_eq!(err[0].field, Field::RetryCodes);
        assert_eq!(
            err[0].kind,
            ProblemKind::UnsafeRetry {
                codes: vec![Code::Aborted]
            }
        );
        assert!(err[0].to_string().contains("ABORTED"), "{}", err[0]);
    }

    #[test]
    fn retry_and_hedging_on_one_level() {
        let spec = PolicySpec {
            idempotent: Some(true),
            retry: Some(Toggle::On(RetrySpec::default())),
            hedging: Some(Toggle::On(HedgingSpec::default())),
            ..PolicySpec::default()
        };
        assert_eq!(fields(method(spec)), vec![Field::Hedging]);
    }

    #[test]
    fn streaming_requests_drop_inherited_retry_but_reject_their_own() {
        let service = PolicySpec {
            retry: Some(Toggle::On(RetrySpec::default())),
            ..PolicySpec::default()
        };
        let plain = PolicySpec::default();
        let p = validate(&[&service, &plain], MethodKind::Bidi, Some(1)).unwrap();
        assert!(p.retry.is_none());
        let own = validate(
            &[&PolicySpec::default(), &service],
            MethodKind::ClientStreaming,
            Some(1),
        );
        assert_eq!(fields(own), vec![Field::Retry]);
    }

    #[test]
    fn balancer_belongs_to_the_client() {
        let service = PolicySpec {
            balancer: Some(crate::Balancer::LeastLoaded),
            ..PolicySpec::default()
        };
        let resolved = validate(
            &[&service, &PolicySpec::default()],
            MethodKind::Unary,
            Some(1),
        )
        .unwrap();
        assert_eq!(resolved.balancer, Some(crate::Balancer::LeastLoaded));
        let on_method = validate(
            &[&PolicySpec::default(), &service],
            MethodKind::Unary,
            Some(1),
        );
        assert_eq!(fields(on_method), vec![Field::Balancer]);
        assert_eq!(
            crate::Balancer::from_name("peak-ewma"),
            Some(crate::Balancer::PeakEwma)
        );
        assert_eq!(crate::Balancer::from_name("fastest"), None);
    }

    #[test]
    fn access_rules_are_checked() {
        let auth = |a: AuthSpec| PolicySpec {
            auth: Some(Toggle::On(a)),
            ..PolicySpec::default()
        };
        let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect());
        let bad = auth(AuthSpec {
            scopes: names(&["ok", "", "two words"]),
            roles: names(&["quote\""]),
            ..AuthSpec::default()
        });
        let problems = method(bad).unwrap_err();
        assert_eq!(
            problems.iter().map(|p| p.field).collect::<Vec<_>>(),
            [Field::AuthScopes, Field::AuthScopes, Field::AuthRoles]
        );
        assert_eq!(
            problems[0].in_attribute(),
            "auth(scopes): `` is empty: name a scope or role, or leave it out"
        );
        let public = auth(AuthSpec {
            public: Some(true),
            scopes: names(&["policies.write"]),
            ..AuthSpec::default()
        });
        assert_eq!(fields(method(public)), vec![Field::AuthScopes]);
        let anonymous = auth(AuthSpec {
            required: Some(false),
            roles: names(&["admin"]),
            ..AuthSpec::default()
        });
        assert_eq!(fields(method(anonymous)), vec![Field::AuthRoles]);
        let good = auth(AuthSpec {
            scopes: names(&["policies.write", "https://api.example.com/x:y"]),
            ..AuthSpec::default()
        });
        assert!(method(good).unwrap().auth.unwrap().required);
    }

    #[test]
    fn timeout_is_clamped_by_max_timeout() {
        let spec = PolicySpec {
            timeout: Some(Toggle::On(Duration::from_secs(9))),
            max_timeout: Some(Duration::from_secs(2)),
            ..PolicySpec::default()
        };
        assert_eq!(method(spec).unwrap().timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn cross_field_problem_points_at_the_level_that_wrote_it() {
        let service = PolicySpec {
            idempotent: Some(true),
            retry: Some(Toggle::On(RetrySpec {
                max_backoff: Some(Duration::from_millis(10)),
                ..RetrySpec::default()
            })),
            ..PolicySpec::default()
        };
        let m = PolicySpec {
            retry: Some(Toggle::On(RetrySpec {
                initial_backoff: Some(Duration::from_millis(50)),
                ..RetrySpec::default()
            })),
            ..PolicySpec::default()
        };
        let err = validate(&[&service, &m], MethodKind::Unary, Some(1)).unwrap_err();
        assert_eq!(err[0].field, Field::RetryInitialBackoff);
        assert_eq!(err[0].level, 1);
    }
}
