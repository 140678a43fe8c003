//! Policies as plain `const` data.
//!
//! The `#[resilient]` expansion writes one `static` [`ServicePolicy`] per client; every
//! value in it was validated at compile time by the shared model (`tai-model`), so the
//! runtime only reads it. Building these by hand is also fine (for a tower layer
//! without codegen); [`ServicePolicy::validate`] checks such a value by the same rules.
//!
//! The types are written so that the expansion reads like hand-written code:
//! `CodeSet::of(&[Code::Unavailable, Code::Aborted])` rather than a bit mask, with
//! `tonic::Code` (re-exported as `tai_runtime::Code`) as the one status-code type.
//! They are not `#[non_exhaustive]`: hand-built policies in tests, benches and the
//! examples use struct literals, and a constructor-only API would force edits there.

use std::time::Duration;

use tonic::Code;

pub use tai_model::MethodKind;

/// A set of gRPC status codes, as a bit mask (bit `n` is the code numbered `n`):
/// `const`, `Copy`, one instruction to test.
///
/// ```
/// use tai_runtime::Code;
/// use tai_runtime::policy::CodeSet;
///
/// const RETRIED: CodeSet = CodeSet::of(&[Code::Unavailable, Code::Aborted]);
/// assert!(RETRIED.contains(Code::Aborted));
/// assert_eq!(RETRIED.codes(), [Code::Aborted, Code::Unavailable]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodeSet(pub u32);

impl CodeSet {
    /// The empty set.
    pub const EMPTY: CodeSet = CodeSet(0);

    /// The set holding exactly `codes`.
    pub const fn of(codes: &[Code]) -> CodeSet {
        let mut bits = 0;
        let mut i = 0;
        while i < codes.len() {
            bits |= bit(codes[i]);
            i += 1;
        }
        CodeSet(bits)
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: Code) -> bool {
        self.0 & bit(code) != 0
    }

    /// The codes in the set, in numeric order.
    pub fn codes(self) -> Vec<Code> {
        (0..32)
            .filter(|n| self.0 & (1 << n) != 0)
            .map(Code::from_i32)
            .collect()
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The bit of `code` in a [`CodeSet`].
const fn bit(code: Code) -> u32 {
    1u32 << (code as u32 & 31)
}

/// Whether a status code is in `set` (OK never is): one bit test, on every
/// classification of the call path.
pub(crate) fn contains(set: CodeSet, code: Code) -> bool {
    !matches!(code, Code::Ok) && set.contains(code)
}

/// Whether a failed attempt with `code` may be tried again under `set` (a
/// retry policy's retryable codes, a hedging policy's non-fatal ones).
///
/// UNAUTHENTICATED never may, even when a policy lists it: the same
/// credentials would be refused again, and a client that hammers an
/// authentication check with them looks like an attack. The token source
/// (`tai_runtime::auth::TokenSource`) refreshes a token ahead of its expiry,
/// not after a refusal.
pub(crate) fn retries(set: CodeSet, code: Code) -> bool {
    !matches!(code, Code::Unauthenticated) && contains(set, code)
}

/// The codes of `set` in the shared model's terms, for its validator.
fn model_codes(set: CodeSet) -> Vec<tai_model::Code> {
    tai_model::Code::ALL
        .into_iter()
        .filter(|c| set.0 & (1 << *c as u32) != 0)
        .collect()
}

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

/// Who may call a method: the access rule a `.proto` file or `#[resilient]`
/// attribute declares (`auth: { required: true, scopes: ["policies.write"] }`),
/// enforced by the server's [`AccessLayer`](crate::server::auth::AccessLayer).
///
/// A `public` rule lets every call through, with or without an identity.
/// Otherwise a call without an identity is refused as UNAUTHENTICATED (if
/// `required`, which scopes and roles imply), and one whose identity lacks a
/// listed scope or role as PERMISSION_DENIED.
///
/// ```
/// use tai_runtime::policy::AccessRule;
///
/// const WRITE: AccessRule = AccessRule::scopes(&["policies.write"]);
/// assert!(WRITE.required && !WRITE.public);
/// assert!(AccessRule::PUBLIC.public);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// A caller must present an identity.
    pub required: bool,
    /// Anyone may call; the other fields are then empty.
    pub public: bool,
    /// Scopes the caller's identity must all hold.
    pub scopes: &'static [&'static str],
    /// Roles the caller's identity must all hold.
    pub roles: &'static [&'static str],
}

impl AccessRule {
    /// Anyone may call.
    pub const PUBLIC: AccessRule = AccessRule {
        required: false,
        public: true,
        scopes: &[],
        roles: &[],
    };

    /// Any caller with an identity may call.
    pub const AUTHENTICATED: AccessRule = AccessRule {
        required: true,
        public: false,
        scopes: &[],
        roles: &[],
    };

    /// A caller with an identity holding every scope in `scopes`.
    pub const fn scopes(scopes: &'static [&'static str]) -> AccessRule {
        AccessRule {
            scopes,
            ..AccessRule::AUTHENTICATED
        }
    }

    /// A caller with an identity holding every role in `roles`.
    pub const fn roles(roles: &'static [&'static str]) -> AccessRule {
        AccessRule {
            roles,
            ..AccessRule::AUTHENTICATED
        }
    }
}

/// One method's entry in an [`AccessTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodAccess {
    /// The HTTP/2 path, e.g. `"/tai.v1.Governor/ProposePolicy"`.
    pub path: &'static str,
    /// The method's rule; `None` follows the server's default.
    pub rule: Option<AccessRule>,
}

/// The access rules of one service, by method: `#[resilient]` writes one per trait
/// as `GovernorClient::ACCESS_RULES` (from its `auth(..)`), tai-build names it
/// `governor_server::ACCESS_RULES` in the generated server module, and
/// [`Server::add_service_with_rules`](crate::server::Server::add_service_with_rules)
/// enforces it.
///
/// ```
/// use tai_runtime::policy::{AccessRule, AccessTable, MethodAccess};
///
/// const RULES: AccessTable = AccessTable {
///     service: "demo.Kv",
///     methods: &[
///         MethodAccess { path: "/demo.Kv/Get", rule: Some(AccessRule::scopes(&["kv.read"])) },
///         MethodAccess { path: "/demo.Kv/Ping", rule: Some(AccessRule::PUBLIC) },
///     ],
/// };
/// assert_eq!(RULES.rule("/demo.Kv/Ping"), Some(AccessRule::PUBLIC));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessTable {
    /// The fully qualified service name, e.g. `"tai.v1.Governor"`.
    pub service: &'static str,
    /// Every method, in declaration order.
    pub methods: &'static [MethodAccess],
}

impl AccessTable {
    /// The rule of the method at `path`, if the table has one.
    pub fn rule(&self, path: &str) -> Option<AccessRule> {
        self.methods
            .iter()
            .find(|m| m.path == path)
            .and_then(|m| m.rule)
    }
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
    /// let mut policy = MethodPolicy {
    ///     name: "Get", rust_name: "get", path: "/demo.Svc/Get", kind: MethodKind::Unary,
    ///     idempotent: false, timeout: None, max_timeout: None, hedging: None, breaker: None,
    ///     retry: Some(RetryPolicy {
    ///         max_attempts: 1,
    ///         initial_backoff: Duration::from_millis(100),
    ///         max_backoff: Duration::from_secs(1),
    ///         multiplier: 2.0,
    ///         retryable: CodeSet::of(&[Code::Aborted]),
    ///     }),
    /// };
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
