//! What the validator finds: a [`Problem`] names the field and the level it is about
//! and says what is wrong as a [`ProblemKind`], not as text.
//!
//! The kind is data so that callers can match on it (a test, a service-config loader
//! deciding what to reject); its `Display` is the one wording both front ends show,
//! each behind its own path to the field (`retry(max_attempts): ..` in the attribute,
//! `option (tai.v1.method).retry.max_attempts: ..` in a `.proto` file).

use std::fmt;
use std::time::Duration;

use crate::{Code, Field};

/// One thing wrong with a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The field the problem is about.
    pub field: Field,
    /// Index into the levels passed to [`validate`](crate::validate) of the level that
    /// wrote the field (for cross-field problems: the innermost level that wrote
    /// either field).
    pub level: usize,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// The problem with the field's path in the attribute grammar:
    /// `retry(max_attempts): is 1, but must be at least 2`.
    pub fn in_attribute(&self) -> String {
        format!("{}: {}", self.field.attr_path(), self.kind)
    }
}

/// Shows what is wrong and what to write instead, without the location.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Problem {}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A duration of zero where time must pass.
    Zero,
    /// A count below its minimum.
    TooFew {
        /// The value written.
        value: u32,
        /// The least allowed.
        min: u32,
    },
    /// A number that must be greater than 0 (and finite).
    NotPositive {
        /// The value written.
        value: f64,
    },
    /// A value outside its range.
    OutOfRange {
        /// The value written, as text.
        value: String,
        /// The range, as written in the message: `(0, 1]`, `1..=1000`.
        range: &'static str,
    },
    /// A code list that may not be empty.
    NoCodes {
        /// What to do instead.
        hint: &'static str,
    },
    /// A code list holding OK.
    ContainsOk,
    /// Retry and hedging on one level.
    RetryAndHedging,
    /// Retry or hedging asked for on a method whose requests are a stream.
    StreamedRequests,
    /// A setting of the whole client written on a method.
    PerClient {
        /// Why it belongs to the client.
        why: &'static str,
    },
    /// `initial_backoff` above `max_backoff`.
    BackoffOrder {
        /// The initial backoff.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// Retry on codes that do not prove the server never ran a non-idempotent call.
    UnsafeRetry {
        /// The codes.
        codes: Vec<Code>,
    },
    /// Hedging a method that is not idempotent.
    UnsafeHedging,
    /// A scope or role name that is empty or holds characters a token cannot carry.
    BadName {
        /// The name written.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `public` beside a rule that asks for an identity.
    PublicWithRule,
    /// Scopes or roles on a rule that says `required = false`.
    NamesWithoutIdentity,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::Zero => f.write_str("must be greater than zero"),
            ProblemKind::TooFew { value, min } => {
                write!(f, "is {value}, but must be at least {min}")
            }
            ProblemKind::NotPositive { value } => {
                write!(f, "is {value}, but must be greater than 0")
            }
            ProblemKind::OutOfRange { value, range } => {
                write!(f, "is {value}, but must be in {range}")
            }
            ProblemKind::NoCodes { hint } => write!(f, "is empty: {hint}"),
            ProblemKind::ContainsOk => f.write_str("cannot contain OK: OK is a success"),
            ProblemKind::RetryAndHedging => f.write_str(
                "cannot be combined with retry on the same method: a call either retries \
                 after a failure or hedges ahead of one; keep one",
            ),
            ProblemKind::StreamedRequests => f.write_str(
                "cannot apply to a client-streaming or bidi method: its requests are a \
                 stream that cannot be re-sent",
            ),
            ProblemKind::PerClient { why } => {
                write!(
                    f,
                    "{why}: set it on the service or the file, not on a method"
                )
            }
            ProblemKind::BackoffOrder { initial, max } => {
                write!(f, "is {initial:?}, larger than max_backoff {max:?}")
            }
            ProblemKind::UnsafeRetry { codes } => {
                let names: Vec<&str> = codes.iter().map(|c| c.name()).collect();
                write!(
                    f,
                    "retries a method that is not marked idempotent on {}, which does not \
                     prove the server never ran it; mark the method idempotent or retry \
                     only on UNAVAILABLE",
                    names.join(", ")
                )
            }
            ProblemKind::BadName { value, why } => {
                write!(f, "`{value}` {why}")?;
                if value.is_empty() {
                    f.write_str(": name a scope or role, or leave it out")?;
                }
                Ok(())
            }
            ProblemKind::PublicWithRule => f.write_str(
                "cannot be combined with `public`: a public method takes calls without an \
                 identity; remove `public` or this",
            ),
            ProblemKind::NamesWithoutIdentity => f.write_str(
                "needs an identity to check, but the rule says `required = false`; remove \
                 one of them",
            ),
            ProblemKind::UnsafeHedging => f.write_str(
                "sends the same call more than once by design, so the method must be \
                 marked idempotent",
            ),
        }
    }
}
