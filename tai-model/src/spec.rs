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

/// Access-rule fields as written: who may call a method, checked by the server.
///
/// `public` opens the method to anyone and excludes the others; otherwise a caller
/// needs an identity (`required`, true unless written `false`) holding every scope
/// and every role listed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthSpec {
    /// A caller must present an identity.
    pub required: Option<bool>,
    /// Anyone may call, with or without an identity.
    pub public: Option<bool>,
    /// Scopes the caller's identity must all hold, e.g. `policies.write`.
    pub scopes: Option<Vec<String>>,
    /// Roles the caller's identity must all hold.
    pub roles: Option<Vec<String>>,
}

impl AuthSpec {
    /// Whether this level writes a rule that needs an identity (as opposed to `public`).
    fn asks_identity(&self) -> bool {
        self.required.is_some() || self.scopes.is_some() || self.roles.is_some()
    }
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
    /// How the client picks an endpoint (service or file level only).
    pub balancer: Option<Balancer>,
    /// Who may call, checked by the server; `Toggle::Off` leaves the method to the
    /// server's default.
    pub auth: Option<Toggle<AuthSpec>>,
}

/// How a client spreads calls over endpoints: the generated client's default, and
/// `tai_runtime::config::BalancerKind` (the same type) at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Balancer {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Power of two choices on calls in flight.
    LeastLoaded,
    /// Power of two choices on peak-EWMA latency × (calls in flight + 1).
    PeakEwma,
    /// Uniformly at random.
    Random,
}

impl Balancer {
    /// Every balancer, in documentation order.
    pub const ALL: [Balancer; 4] = [
        Balancer::RoundRobin,
        Balancer::LeastLoaded,
        Balancer::PeakEwma,
        Balancer::Random,
    ];

    /// The name written in policies: `round_robin`, `least_loaded`, `peak_ewma`, `random`.
    pub const fn name(self) -> &'static str {
        match self {
            Balancer::RoundRobin => "round_robin",
            Balancer::LeastLoaded => "least_loaded",
            Balancer::PeakEwma => "peak_ewma",
            Balancer::Random => "random",
        }
    }

    /// The Rust variant name, as in `tai_runtime::config::BalancerKind`.
    pub const fn variant(self) -> &'static str {
        match self {
            Balancer::RoundRobin => "RoundRobin",
            Balancer::LeastLoaded => "LeastLoaded",
            Balancer::PeakEwma => "PeakEwma",
            Balancer::Random => "Random",
        }
    }

    /// Parses a policy name (`least_loaded`; `-` works too).
    pub fn from_name(name: &str) -> Option<Balancer> {
        let name = name.trim().replace('-', "_");
        Balancer::ALL.into_iter().find(|b| b.name() == name)
    }

    /// All names, comma separated, for error messages.
    pub fn valid_names() -> String {
        Balancer::ALL.map(Balancer::name).join(", ")
    }
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

/// A resolved access rule: what the server checks before a call reaches its handler.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResolvedAccess {
    /// Anyone may call, with or without an identity.
    pub public: bool,
    /// A caller must present an identity (always true when scopes or roles are listed).
    pub required: bool,
    /// Scopes the caller must all hold.
    pub scopes: Vec<String>,
    /// Roles the caller must all hold.
    pub roles: Vec<String>,
}

impl ResolvedAccess {
    /// This rule as the Rust expression of its runtime counterpart, written with
    /// `tai_runtime::policy::AccessRule`'s constants and `const fn`s (the type is
    /// `#[non_exhaustive]`): the one printer tai-build and tai-macros share, so that
    /// generated tables read alike.
    ///
    /// ```
    /// use tai_model::ResolvedAccess;
    /// let rule = ResolvedAccess { required: true, scopes: vec!["a.write".into()], ..Default::default() };
    /// assert_eq!(rule.rust_expr(), "::tai_runtime::policy::AccessRule::scopes(&[\"a.write\"])");
    /// let open = ResolvedAccess { public: true, ..Default::default() };
    /// assert_eq!(open.rust_expr(), "::tai_runtime::policy::AccessRule::PUBLIC");
    /// ```
    pub fn rust_expr(&self) -> String {
        let list = |names: &[String]| {
            let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            format!("&[{}]", quoted.join(", "))
        };
        let base = if self.public {
            "PUBLIC"
        } else if self.required {
            "AUTHENTICATED"
        } else {
            "OPTIONAL"
        };
        let mut expr = format!("::tai_runtime::policy::AccessRule::{base}");
        // `scopes(..)` and `roles(..)` read as the rule they are; further lists chain.
        for (names, kind) in [(&self.scopes, "scopes"), (&self.roles, "roles")] {
            if names.is_empty() {
                continue;
            }
            expr = match expr.strip_suffix("::AUTHENTICATED") {
                Some(head) => format!("{head}::{kind}({})", list(names)),
                None => format!("{expr}.with_{kind}({})", list(names)),
            };
        }
        expr
    }
}

/// A service's access rules as the Rust expression of its runtime counterpart,
/// `::tai_runtime::policy::AccessTable::new(..)`: one entry per method, given as its
/// HTTP/2 path and resolved rule (`None` follows the server's default). The one
/// printer of the table: `#[resilient]` writes it for every trait, and tai-build
/// only when it writes no annotated trait to take it from.
///
/// ```
/// use tai_model::{ResolvedAccess, access_table_expr};
/// let public = ResolvedAccess { public: true, ..Default::default() };
/// assert_eq!(
///     access_table_expr("demo.Kv", [("/demo.Kv/Ping", Some(&public)), ("/demo.Kv/Get", None)]),
///     "::tai_runtime::policy::AccessTable::new(\"demo.Kv\", &[\
///      ::tai_runtime::policy::MethodAccess::new(\"/demo.Kv/Ping\")\
///      .with_rule(::tai_runtime::policy::AccessRule::PUBLIC), \
///      ::tai_runtime::policy::MethodAccess::new(\"/demo.Kv/Get\")])"
/// );
/// ```
pub fn access_table_expr<'a>(
    service: &str,
    methods: impl IntoIterator<Item = (&'a str, Option<&'a ResolvedAccess>)>,
) -> String {
    let methods: Vec<String> = methods
        .into_iter()
        .map(|(path, rule)| {
            let rule = rule.map_or_else(String::new, |rule| {
                format!(".with_rule({})", rule.rust_expr())
            });
            format!("::tai_runtime::policy::MethodAccess::new({path:?}){rule}")
        })
        .collect();
    format!(
        "::tai_runtime::policy::AccessTable::new({service:?}, &[{}])",
        methods.join(", ")
    )
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
    /// The client's default balancer, if the policy names one.
    pub balancer: Option<Balancer>,
    /// The access rule, if the policy writes one.
    pub auth: Option<ResolvedAccess>,
}

/// A level's retry and hedging as it means them: turning one on turns the other
/// off, unless the same level sets that one too (which validation rejects).
fn exclusive(spec: &PolicySpec) -> (Option<Toggle<RetrySpec>>, Option<Toggle<HedgingSpec>>) {
    let (mut r, mut h) = (spec.retry.clone(), spec.hedging.clone());
    if matches!(r, Some(Toggle::On(_))) && h.is_none() {
        h = Some(Toggle::Off);
    }
    if matches!(h, Some(Toggle::On(_))) && r.is_none() {
        r = Some(Toggle::Off);
    }
    (r, h)
}

/// Combines an inherited toggle with a level's: `Off` clears, `On` over `On` merges
/// field by field, `On` over nothing or `Off` starts afresh.
fn toggle<T: Clone>(
    outer: Option<Toggle<T>>,
    inner: Option<Toggle<T>>,
    over: impl Fn(&T, &T) -> T,
) -> Option<Toggle<T>> {
    match (outer, inner) {
        (outer, None) => outer,
        (Some(Toggle::On(a)), Some(Toggle::On(b))) => Some(Toggle::On(over(&a, &b))),
        (_, inner) => inner,
    }
}

/// Merges two levels into one that means the same: fields override one by one (the
/// inner level wins), `Off` clears what is inherited, and a level that turns retry
/// on turns inherited hedging off (and the other way round).
///
/// [`resolve`] is this merge folded over the levels, plus defaults; tai-build uses it
/// to write a file's and a service's policies as one trait attribute.
pub fn merge(outer: &PolicySpec, inner: &PolicySpec) -> PolicySpec {
    let (outer_retry, outer_hedging) = exclusive(outer);
    let (inner_retry, inner_hedging) = exclusive(inner);
    PolicySpec {
        idempotent: inner.idempotent.or(outer.idempotent),
        timeout: inner.timeout.clone().or_else(|| outer.timeout.clone()),
        max_timeout: inner.max_timeout.or(outer.max_timeout),
        retry: toggle(outer_retry, inner_retry, |a, b| RetrySpec {
            max_attempts: b.max_attempts.or(a.max_attempts),
            initial_backoff: b.initial_backoff.or(a.initial_backoff),
            max_backoff: b.max_backoff.or(a.max_backoff),
            multiplier: b.multiplier.or(a.multiplier),
            codes: b.codes.clone().or_else(|| a.codes.clone()),
        }),
        hedging: toggle(outer_hedging, inner_hedging, |a, b| HedgingSpec {
            max_attempts: b.max_attempts.or(a.max_attempts),
            delay: b.delay.or(a.delay),
            non_fatal_codes: b
                .non_fatal_codes
                .clone()
                .or_else(|| a.non_fatal_codes.clone()),
        }),
        breaker: toggle(outer.breaker.clone(), inner.breaker.clone(), |a, b| {
            BreakerSpec {
                failure_threshold: b.failure_threshold.or(a.failure_threshold),
                open_timeout: b.open_timeout.or(a.open_timeout),
                max_open_timeout: b.max_open_timeout.or(a.max_open_timeout),
                half_open_max_calls: b.half_open_max_calls.or(a.half_open_max_calls),
                rate: toggle(a.rate.clone(), b.rate.clone(), |x, y| RateRuleSpec {
                    threshold: y.threshold.or(x.threshold),
                    window: y.window.or(x.window),
                    min_calls: y.min_calls.or(x.min_calls),
                }),
                failure_codes: b.failure_codes.clone().or_else(|| a.failure_codes.clone()),
            }
        }),
        throttle: toggle(outer.throttle.clone(), inner.throttle.clone(), |a, b| {
            ThrottleSpec {
                max_tokens: b.max_tokens.or(a.max_tokens),
                token_ratio: b.token_ratio.or(a.token_ratio),
            }
        }),
        balancer: inner.balancer.or(outer.balancer),
        auth: toggle(outer.auth.clone(), inner.auth.clone(), merge_auth),
    }
}

/// An inner access rule over an outer one: `public` at the inner level replaces
/// the outer rule whole (a public method in a service that requires a scope), and
/// a rule that asks for an identity drops an inherited `public`; otherwise fields
/// override one by one.
fn merge_auth(a: &AuthSpec, b: &AuthSpec) -> AuthSpec {
    if b.public == Some(true) {
        return b.clone();
    }
    let public = if b.asks_identity() {
        b.public
    } else {
        b.public.or(a.public)
    };
    AuthSpec {
        required: b.required.or(a.required),
        public,
        scopes: b.scopes.clone().or_else(|| a.scopes.clone()),
        roles: b.roles.clone().or_else(|| a.roles.clone()),
    }
}

/// The rule an access spec means, with its defaults filled in.
fn access(a: AuthSpec) -> ResolvedAccess {
    if a.public == Some(true) {
        return ResolvedAccess {
            public: true,
            ..ResolvedAccess::default()
        };
    }
    let scopes = a.scopes.unwrap_or_default();
    let roles = a.roles.unwrap_or_default();
    ResolvedAccess {
        public: false,
        required: a.required.unwrap_or(true) || !scopes.is_empty() || !roles.is_empty(),
        scopes,
        roles,
    }
}

/// Combines levels, outermost first (file, service, method), into one policy with
/// every default filled in. See [`merge`] for how levels combine.
pub fn resolve(levels: &[&PolicySpec]) -> ResolvedPolicy {
    let s = levels
        .iter()
        .fold(PolicySpec::default(), |acc, level| merge(&acc, level));
    ResolvedPolicy {
        idempotent: s.idempotent.unwrap_or(false),
        timeout: on(s.timeout),
        max_timeout: s.max_timeout,
        retry: on(s.retry).map(|r: RetrySpec| ResolvedRetry {
            max_attempts: r.max_attempts.unwrap_or(Defaults::RETRY_MAX_ATTEMPTS),
            initial_backoff: r.initial_backoff.unwrap_or(Defaults::RETRY_INITIAL_BACKOFF),
            max_backoff: r.max_backoff.unwrap_or(Defaults::RETRY_MAX_BACKOFF),
            multiplier: r.multiplier.unwrap_or(Defaults::RETRY_MULTIPLIER),
            codes: CodeSet::of(r.codes.as_deref().unwrap_or(Defaults::RETRY_CODES)),
        }),
        hedging: on(s.hedging).map(|h: HedgingSpec| ResolvedHedging {
            max_attempts: h.max_attempts.unwrap_or(Defaults::HEDGING_MAX_ATTEMPTS),
            delay: h.delay.unwrap_or(Defaults::HEDGING_DELAY),
            non_fatal_codes: CodeSet::of(h.non_fatal_codes.as_deref().unwrap_or(&[])),
        }),
        breaker: on(s.breaker).map(|b: BreakerSpec| {
            let open_timeout = b.open_timeout.unwrap_or(Defaults::BREAKER_OPEN_TIMEOUT);
            ResolvedBreaker {
                failure_threshold: b
                    .failure_threshold
                    .unwrap_or(Defaults::BREAKER_FAILURE_THRESHOLD),
                open_timeout,
                max_open_timeout: b
                    .max_open_timeout
                    .unwrap_or(Defaults::BREAKER_MAX_OPEN_TIMEOUT)
                    .max(open_timeout),
                half_open_max_calls: b
                    .half_open_max_calls
                    .unwrap_or(Defaults::BREAKER_HALF_OPEN_MAX_CALLS),
                rate: match b.rate {
                    Some(Toggle::Off) => None,
                    Some(Toggle::On(r)) => Some(rate_rule(&r)),
                    None => Some(rate_rule(&RateRuleSpec::default())),
                },
                failure_codes: CodeSet::of(
                    b.failure_codes
                        .as_deref()
                        .unwrap_or(Defaults::BREAKER_FAILURE_CODES),
                ),
            }
        }),
        throttle: on(s.throttle).map(|t: ThrottleSpec| ResolvedThrottle {
            max_tokens: t.max_tokens.unwrap_or(Defaults::THROTTLE_MAX_TOKENS),
            token_ratio: t.token_ratio.unwrap_or(Defaults::THROTTLE_TOKEN_RATIO),
        }),
        balancer: s.balancer,
        auth: on(s.auth).map(access),
    }
}

/// The value of a toggle that is on.
fn on<T>(t: Option<Toggle<T>>) -> Option<T> {
    match t {
        Some(Toggle::On(v)) => Some(v),
        _ => None,
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

    fn auth(required: Option<bool>, public: Option<bool>, scopes: &[&str]) -> PolicySpec {
        PolicySpec {
            auth: Some(Toggle::On(AuthSpec {
                required,
                public,
                scopes: (!scopes.is_empty())
                    .then(|| scopes.iter().map(|s| s.to_string()).collect()),
                roles: None,
            })),
            ..PolicySpec::default()
        }
    }

    #[test]
    fn access_rules_resolve_by_level() {
        let service = auth(Some(true), None, &["policies.read"]);
        // A method adding a scope keeps the service's requirement.
        let write = auth(None, None, &["policies.write"]);
        let p = resolve(&[&service, &write]).auth.unwrap();
        assert!(p.required && !p.public);
        assert_eq!(p.scopes, ["policies.write"]);
        // `public` on a method replaces the service's rule whole.
        let open = auth(None, Some(true), &[]);
        let p = resolve(&[&service, &open]).auth.unwrap();
        assert!(p.public && !p.required && p.scopes.is_empty());
        // A method asking for an identity under a public service is not public.
        let p = resolve(&[&open, &write]).auth.unwrap();
        assert!(p.required && !p.public);
        // `auth = default` requires an identity; `auth = none` leaves no rule.
        let default = PolicySpec {
            auth: Some(Toggle::On(AuthSpec::default())),
            ..PolicySpec::default()
        };
        assert!(resolve(&[&default]).auth.unwrap().required);
        let none = PolicySpec {
            auth: Some(Toggle::Off),
            ..PolicySpec::default()
        };
        assert_eq!(resolve(&[&service, &none]).auth, None);
        assert_eq!(resolve(&[&PolicySpec::default()]).auth, None);
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
