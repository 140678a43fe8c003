//! What one level (file, service, method) says, and how levels combine.

use std::time::Duration;

use crate::{Code, CodeSet};

/// A setting that a level can turn on (with values) or off, overriding what it inherits.
#[derive(Clone, Debug, PartialEq)]
pub enum Toggle<T> {
    /// Turned off at this level (`retry = none`, `breaker: { disabled: true }`).
    Off,
    /// Turned on, with the fields this level sets; unset fields are inherited or defaulted.
    On(T),
}

/// Retry fields as written; `None` means "inherit, else default".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetrySpec {
    /// Attempts including the first call.
    pub max_attempts: Option<u32>,
    /// Backoff before the first retry.
    pub initial_backoff: Option<Duration>,
    /// Cap on the backoff before jitter.
    pub max_backoff: Option<Duration>,
    /// Growth factor of the backoff per retry.
    pub multiplier: Option<f64>,
    /// Status codes that are retried.
    pub codes: Option<Vec<Code>>,
}

/// Hedging fields as written (gRFC A6 hedging policy).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HedgingSpec {
    /// Attempts including the first call.
    pub max_attempts: Option<u32>,
    /// Delay between starting one attempt and the next.
    pub delay: Option<Duration>,
    /// Codes that do not end the call: the other attempts continue.
    pub non_fatal_codes: Option<Vec<Code>>,
}

/// Failure-rate trip rule fields as written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateRuleSpec {
    /// Failure ratio (0, 1] at or above which the breaker trips.
    pub threshold: Option<f64>,
    /// Length of the sliding window.
    pub window: Option<Duration>,
    /// Fewest calls in the window before the rule may trip.
    pub min_calls: Option<u32>,
}

/// Circuit-breaker fields as written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BreakerSpec {
    /// Consecutive failures that trip the breaker.
    pub failure_threshold: Option<u32>,
    /// Time open before the first half-open probe.
    pub open_timeout: Option<Duration>,
    /// Cap on the open time as it grows after failed probes.
    pub max_open_timeout: Option<Duration>,
    /// Probes admitted while half-open.
    pub half_open_max_calls: Option<u32>,
    /// The failure-rate rule; `Toggle::Off` disables it.
    pub rate: Option<Toggle<RateRuleSpec>>,
    /// Codes that count as failures.
    pub failure_codes: Option<Vec<Code>>,
}

/// Retry-throttling fields as written (gRFC A6 `retryThrottling`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThrottleSpec {
    /// Token bucket size, 1..=1000.
    pub max_tokens: Option<u32>,
    /// Tokens given back per successful call.
    pub token_ratio: Option<f64>,
}

/// Everything one level says. All fields optional: `None` inherits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySpec {
    /// The method is safe to run more than once.
    pub idempotent: Option<bool>,
    /// Deadline for the whole call; `Toggle::Off` removes an inherited one.
    pub timeout: Option<Toggle<Duration>>,
    /// Upper bound on any deadline, including one a caller asks for.
    pub max_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: Option<Toggle<RetrySpec>>,
    /// Hedging policy.
    pub hedging: Option<Toggle<HedgingSpec>>,
    /// Circuit breaker.
    pub breaker: Option<Toggle<BreakerSpec>>,
    /// Retry throttling (service or file level only).
    pub throttle: Option<Toggle<ThrottleSpec>>,
}

/// The shape of a method, which decides which policies can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    Bidi,
}

impl MethodKind {
    /// Whether the client sends a stream; such calls cannot be re-sent (no replay buffer yet).
    pub const fn streams_requests(self) -> bool {
        matches!(self, MethodKind::ClientStreaming | MethodKind::Bidi)
    }
}

/// The defaults every unset field falls back to. One place, documented, so the
/// attribute and the proto agree.
pub struct Defaults;

impl Defaults {
    /// `retry = N` or `retry(...)` without `max_attempts`.
    pub const RETRY_MAX_ATTEMPTS: u32 = 3;
    /// First backoff.
    pub const RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
    /// Backoff cap.
    pub const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(10);
    /// Backoff growth.
    pub const RETRY_MULTIPLIER: f64 = 2.0;
    /// Retried codes: only UNAVAILABLE, the one code gRPC servers use for "not processed".
    pub const RETRY_CODES: &'static [Code] = &[Code::Unavailable];
    /// Hedged attempts.
    pub const HEDGING_MAX_ATTEMPTS: u32 = 2;
    /// Delay between hedged attempts.
    pub const HEDGING_DELAY: Duration = Duration::from_millis(100);
    /// Consecutive failures that trip a breaker.
    pub const BREAKER_FAILURE_THRESHOLD: u32 = 5;
    /// First open period.
    pub const BREAKER_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Cap on the open period after repeated failed probes.
    pub const BREAKER_MAX_OPEN_TIMEOUT: Duration = Duration::from_secs(300);
    /// Half-open probes.
    pub const BREAKER_HALF_OPEN_MAX_CALLS: u32 = 3;
    /// Failure ratio of the rate rule.
    pub const BREAKER_RATE_THRESHOLD: f64 = 0.5;
    /// Window of the rate rule.
    pub const BREAKER_RATE_WINDOW: Duration = Duration::from_secs(10);
    /// Minimum calls before the rate rule can trip.
    pub const BREAKER_RATE_MIN_CALLS: u32 = 20;
    /// Codes that count as breaker failures.
    pub const BREAKER_FAILURE_CODES: &'static [Code] = &[
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Internal,
        Code::Unknown,
        Code::ResourceExhausted,
    ];
    /// Throttle bucket size.
    pub const THROTTLE_MAX_TOKENS: u32 = 10;
    /// Throttle refill per success.
    pub const THROTTLE_TOKEN_RATIO: f64 = 0.1;
}

/// A resolved retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRetry {
    /// Attempts including the first (not yet capped at 5; the runtime caps, per A6).
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Backoff growth.
    pub multiplier: f64,
    /// Retried codes.
    pub codes: CodeSet,
}

/// A resolved hedging policy.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedHedging {
    /// Attempts including the first.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub delay: Duration,
    /// Codes that let the other attempts continue.
    pub non_fatal_codes: CodeSet,
}

/// A resolved failure-rate rule.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRateRule {
    /// Trip ratio.
    pub threshold: f64,
    /// Window length.
    pub window: Duration,
    /// Minimum calls.
    pub min_calls: u32,
}

/// A resolved circuit breaker.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedBreaker {
    /// Consecutive failures that trip.
    pub failure_threshold: u32,
    /// First open period.
    pub open_timeout: Duration,
    /// Open period cap.
    pub max_open_timeout: Duration,
    /// Half-open probes.
    pub half_open_max_calls: u32,
    /// Failure-rate rule, if on.
    pub rate: Option<ResolvedRateRule>,
    /// Codes counted as failures.
    pub failure_codes: CodeSet,
}

/// A resolved throttle.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedThrottle {
    /// Bucket size.
    pub max_tokens: u32,
    /// Refill per success.
    pub token_ratio: f64,
}

/// The policy of one method after its levels are combined and defaults filled in.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ResolvedPolicy {
    /// Safe to run more than once.
    pub idempotent: bool,
    /// Whole-call deadline.
    pub timeout: Option<Duration>,
    /// Deadline cap.
    pub max_timeout: Option<Duration>,
    /// Retry, if on.
    pub retry: Option<ResolvedRetry>,
    /// Hedging, if on.
    pub hedging: Option<ResolvedHedging>,
    /// Breaker, if on.
    pub breaker: Option<ResolvedBreaker>,
    /// Throttle, if on.
    pub throttle: Option<ResolvedThrottle>,
}

/// Combines a field-wise override: later `Some` wins.
fn over<T: Clone>(base: &mut Option<T>, top: &Option<T>) {
    if top.is_some() {
        base.clone_from(top);
    }
}

/// Folds toggled sub-specs: `Off` clears, `On` merges its set fields over what is inherited.
fn fold_toggle<'a, T: Clone + Default + 'a>(
    levels: impl Iterator<Item = &'a Option<Toggle<T>>>,
    merge: impl Fn(&mut T, &T),
) -> Option<T> {
    let mut acc: Option<T> = None;
    for level in levels {
        match level {
            None => {}
            Some(Toggle::Off) => acc = None,
            Some(Toggle::On(spec)) => merge(acc.get_or_insert_with(T::default), spec),
        }
    }
    acc
}

/// Combines levels, outermost first (file, service, method), into one policy.
///
/// Fields override one by one, so a method can change a service's `max_attempts`
/// and keep its backoff. Retry and hedging exclude each other: a level that turns one
/// on turns the inherited other off.
pub fn resolve(levels: &[&PolicySpec]) -> ResolvedPolicy {
    let mut idempotent = None;
    let mut timeout = None;
    let mut max_timeout = None;
    for level in levels {
        over(&mut idempotent, &level.idempotent);
        over(&mut timeout, &level.timeout);
        over(&mut max_timeout, &level.max_timeout);
    }
    // Retry and hedging: the one set last wins; the same level setting both is a
    // validation error, reported by `validate`.
    let mut retry_levels = Vec::with_capacity(levels.len());
    let mut hedging_levels = Vec::with_capacity(levels.len());
    for level in levels {
        let (mut r, mut h) = (level.retry.clone(), level.hedging.clone());
        if matches!(r, Some(Toggle::On(_))) && h.is_none() {
            h = Some(Toggle::Off);
        }
        if matches!(h, Some(Toggle::On(_))) && r.is_none() {
            r = Some(Toggle::Off);
        }
        retry_levels.push(r);
        hedging_levels.push(h);
    }
    let retry = fold_toggle(retry_levels.iter(), |acc: &mut RetrySpec, s| {
        over(&mut acc.max_attempts, &s.max_attempts);
        over(&mut acc.initial_backoff, &s.initial_backoff);
        over(&mut acc.max_backoff, &s.max_backoff);
        over(&mut acc.multiplier, &s.multiplier);
        over(&mut acc.codes, &s.codes);
    })
    .map(|s| ResolvedRetry {
        max_attempts: s.max_attempts.unwrap_or(Defaults::RETRY_MAX_ATTEMPTS),
        initial_backoff: s.initial_backoff.unwrap_or(Defaults::RETRY_INITIAL_BACKOFF),
        max_backoff: s.max_backoff.unwrap_or(Defaults::RETRY_MAX_BACKOFF),
        multiplier: s.multiplier.unwrap_or(Defaults::RETRY_MULTIPLIER),
        codes: CodeSet::of(s.codes.as_deref().unwrap_or(Defaults::RETRY_CODES)),
    });
    let hedging = fold_toggle(hedging_levels.iter(), |acc: &mut HedgingSpec, s| {
        over(&mut acc.max_attempts, &s.max_attempts);
        over(&mut acc.delay, &s.delay);
        over(&mut acc.non_fatal_codes, &s.non_fatal_codes);
    })
    .map(|s| ResolvedHedging {
        max_attempts: s.max_attempts.unwrap_or(Defaults::HEDGING_MAX_ATTEMPTS),
        delay: s.delay.unwrap_or(Defaults::HEDGING_DELAY),
        non_fatal_codes: CodeSet::of(s.non_fatal_codes.as_deref().unwrap_or(&[])),
    });
    let breaker = fold_toggle(
        levels.iter().map(|l| &l.breaker),
        |acc: &mut BreakerSpec, s| {
            over(&mut acc.failure_threshold, &s.failure_threshold);
            over(&mut acc.open_timeout, &s.open_timeout);
            over(&mut acc.max_open_timeout, &s.max_open_timeout);
            over(&mut acc.half_open_max_calls, &s.half_open_max_calls);
            over(&mut acc.failure_codes, &s.failure_codes);
            acc.rate = match (acc.rate.take(), &s.rate) {
                (inherited, None) => inherited,
                (_, Some(Toggle::Off)) => Some(Toggle::Off),
                (Some(Toggle::On(mut base)), Some(Toggle::On(top))) => {
                    over(&mut base.threshold, &top.threshold);
                    over(&mut base.window, &top.window);
                    over(&mut base.min_calls, &top.min_calls);
                    Some(Toggle::On(base))
                }
                (_, Some(on)) => Some(on.clone()),
            };
        },
    )
    .map(|s| ResolvedBreaker {
        failure_threshold: s
            .failure_threshold
            .unwrap_or(Defaults::BREAKER_FAILURE_THRESHOLD),
        open_timeout: s.open_timeout.unwrap_or(Defaults::BREAKER_OPEN_TIMEOUT),
        max_open_timeout: s
            .max_open_timeout
            .unwrap_or(Defaults::BREAKER_MAX_OPEN_TIMEOUT)
            .max(s.open_timeout.unwrap_or(Defaults::BREAKER_OPEN_TIMEOUT)),
        half_open_max_calls: s
            .half_open_max_calls
            .unwrap_or(Defaults::BREAKER_HALF_OPEN_MAX_CALLS),
        rate: match s.rate {
            Some(Toggle::Off) => None,
            Some(Toggle::On(r)) => Some(rate_rule(&r)),
            None => Some(rate_rule(&RateRuleSpec::default())),
        },
        failure_codes: CodeSet::of(
            s.failure_codes
                .as_deref()
                .unwrap_or(Defaults::BREAKER_FAILURE_CODES),
        ),
    });
    let throttle = fold_toggle(
        levels.iter().map(|l| &l.throttle),
        |acc: &mut ThrottleSpec, s| {
            over(&mut acc.max_tokens, &s.max_tokens);
            over(&mut acc.token_ratio, &s.token_ratio);
        },
    )
    .map(|s| ResolvedThrottle {
        max_tokens: s.max_tokens.unwrap_or(Defaults::THROTTLE_MAX_TOKENS),
        token_ratio: s.token_ratio.unwrap_or(Defaults::THROTTLE_TOKEN_RATIO),
    });
    ResolvedPolicy {
        idempotent: idempotent.unwrap_or(false),
        timeout: match timeout {
            Some(Toggle::On(d)) => Some(d),
            _ => None,
        },
        max_timeout,
        retry,
        hedging,
        breaker,
        throttle,
    }
}

fn rate_rule(r: &RateRuleSpec) -> ResolvedRateRule {
    ResolvedRateRule {
        threshold: r.threshold.unwrap_or(Defaults::BREAKER_RATE_THRESHOLD),
        window: r.window.unwrap_or(Defaults::BREAKER_RATE_WINDOW),
        min_calls: r.min_calls.unwrap_or(Defaults::BREAKER_RATE_MIN_CALLS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(attempts: u32) -> Option<Toggle<RetrySpec>> {
        Some(Toggle::On(RetrySpec {
            max_attempts: Some(attempts),
            ..RetrySpec::default()
        }))
    }

    #[test]
    fn method_overrides_service_field_by_field() {
        let service = PolicySpec {
            timeout: Some(Toggle::On(Duration::from_secs(30))),
            retry: Some(Toggle::On(RetrySpec {
                max_attempts: Some(4),
                initial_backoff: Some(Duration::from_millis(7)),
                ..RetrySpec::default()
            })),
            ..PolicySpec::default()
        };
        let method = PolicySpec {
            timeout: Some(Toggle::On(Duration::from_secs(2))),
            retry: retry(2),
            ..PolicySpec::default()
        };
        let p = resolve(&[&service, &method]);
        assert_eq!(p.timeout, Some(Duration::from_secs(2)));
        let r = p.retry.unwrap();
        assert_eq!(r.max_attempts, 2);
        assert_eq!(r.initial_backoff, Duration::from_millis(7));
        assert_eq!(r.codes, CodeSet::of(&[Code::Unavailable]));
    }

    #[test]
    fn off_clears_inherited() {
        let file = PolicySpec {
            retry: retry(3),
            breaker: Some(Toggle::On(BreakerSpec::default())),
            timeout: Some(Toggle::On(Duration::from_secs(1))),
            ..PolicySpec::default()
        };
        let method = PolicySpec {
            retry: Some(Toggle::Off),
            breaker: Some(Toggle::Off),
            timeout: Some(Toggle::Off),
            ..PolicySpec::default()
        };
        let p = resolve(&[&file, &method]);
        assert_eq!(p.retry, None);
        assert_eq!(p.breaker, None);
        assert_eq!(p.timeout, None);
    }

    #[test]
    fn hedging_on_a_method_replaces_inherited_retry() {
        let service = PolicySpec {
            retry: retry(3),
            ..PolicySpec::default()
        };
        let method = PolicySpec {
            hedging: Some(Toggle::On(HedgingSpec::default())),
            ..PolicySpec::default()
        };
        let p = resolve(&[&service, &method]);
        assert!(p.retry.is_none());
        assert_eq!(
            p.hedging.unwrap().max_attempts,
            Defaults::HEDGING_MAX_ATTEMPTS
        );
    }

    #[test]
    fn breaker_defaults() {
        let method = PolicySpec {
            breaker: Some(Toggle::On(BreakerSpec::default())),
            ..PolicySpec::default()
        };
        let b = resolve(&[&method]).breaker.unwrap();
        assert_eq!(b.failure_threshold, 5);
        assert_eq!(b.rate.unwrap().min_calls, 20);
        assert!(b.failure_codes.contains(Code::ResourceExhausted));
    }
}
