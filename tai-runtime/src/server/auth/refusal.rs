//! Why a call was not authenticated: the [`Reason`] (a small closed set, the
//! metric's label) and the sentence the caller reads.
//!
//! Why it is shaped so: a refusal goes three ways — to the caller as
//! UNAUTHENTICATED, to the log, and to a counter. The caller needs a sentence a
//! person understands ("token expired"), the counter needs a bounded label, and
//! neither may carry the token or the key. So the reason is an enum (its
//! [`as_str`](Reason::as_str) is the label) and the sentence is built only from
//! the reason and from values this server chose (claim names, algorithm names
//! it knows), never from text the peer sent.

use std::borrow::Cow;
use std::fmt;

use prometheus_client::metrics::counter::Counter;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::metrics::Metrics;

/// The `www-authenticate` metadata key a refusal carries (RFC 6750 §3).
const WWW_AUTHENTICATE: &str = "www-authenticate";

/// Why a call was refused; see the [module docs](super).
///
/// Each reason is one value of the `reason` label of `tai_server_auth_refusals`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No `authorization` metadata.
    MissingToken,
    /// `authorization` is there but is not `Bearer <token>` (another scheme, or
    /// bytes that are not visible ASCII).
    NotBearer,
    /// `Bearer` with nothing after it.
    EmptyToken,
    /// The token is longer than [`MAX_TOKEN_BYTES`](super::MAX_TOKEN_BYTES); it
    /// was not parsed.
    TokenTooLarge,
    /// Not three base64url parts, or a header or payload that is not JSON.
    Malformed,
    /// `alg: none`: an unsigned token.
    Unsigned,
    /// The token's algorithm is not in the server's allow-list, or not the one
    /// its key is used with.
    AlgorithmNotAllowed,
    /// The token's `kid` names no key this server has (or it has none and the
    /// server holds several).
    UnknownKey,
    /// The signature does not verify with the key.
    BadSignature,
    /// `exp` is past, by more than the leeway.
    Expired,
    /// `nbf` is in the future, by more than the leeway.
    NotYetValid,
    /// A required claim (`exp`, `aud`, `iss`) is absent.
    MissingClaim,
    /// A claim has the wrong type (e.g. `exp` as a string).
    InvalidClaim,
    /// `aud` names none of the audiences this server accepts.
    WrongAudience,
    /// `iss` is not an issuer this server accepts.
    WrongIssuer,
}

impl Reason {
    /// Every reason, in declaration order (the metric's label set).
    pub const ALL: [Reason; 15] = [
        Reason::MissingToken,
        Reason::NotBearer,
        Reason::EmptyToken,
        Reason::TokenTooLarge,
        Reason::Malformed,
        Reason::Unsigned,
        Reason::AlgorithmNotAllowed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::MissingClaim,
        Reason::InvalidClaim,
        Reason::WrongAudience,
        Reason::WrongIssuer,
    ];

    /// The reason as the metric label and log field: `"expired"`.
    ///
    /// ```
    /// use tai_runtime::server::auth::Reason;
    ///
    /// assert_eq!(Reason::WrongAudience.as_str(), "wrong_audience");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::NotBearer => "not_bearer",
            Reason::EmptyToken => "empty_token",
            Reason::TokenTooLarge => "token_too_large",
            Reason::Malformed => "malformed",
            Reason::Unsigned => "unsigned",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::MissingClaim => "missing_claim",
            Reason::InvalidClaim => "invalid_claim",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongIssuer => "wrong_issuer",
        }
    }

    /// The RFC 6750 `error` code: none when no credentials came at all.
    fn error_code(self) -> Option<&'static str> {
        match self {
            Reason::MissingToken | Reason::EmptyToken => None,
            Reason::NotBearer => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }

    /// The place in [`Reason::ALL`] (declaration order; a test holds them equal).
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call refused: its [`Reason`] and the sentence the caller reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    reason: Reason,
    message: Cow<'static, str>,
}

impl Refusal {
    /// A refusal for `reason` that says `message`. The message goes to the
    /// peer: build it only from what the server chose, never from the token.
    pub(super) fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A token claim of the wrong type, e.g. `exp` as a string. `claim` is a
    /// name the server chose (a checked or configured claim), never the peer's.
    pub(super) fn wrong_type(claim: &str) -> Self {
        let expected = match claim {
            "exp" | "nbf" | "iat" => "a number",
            "sub" | "iss" => "a string",
            "scope" => "a space-separated string",
            _ => "a string or a list of strings",
        };
        Self::new(
            Reason::InvalidClaim,
            format!("token claim `{claim}` is not {expected}"),
        )
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// What the caller is told, e.g. `"token expired"`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The UNAUTHENTICATED status the caller gets, with a `www-authenticate`
    /// entry in the form of RFC 6750 (`Bearer error="invalid_token",
    /// error_description="token expired"`).
    pub fn to_status(&self) -> Status {
        let mut status = Status::unauthenticated(self.message.clone());
        let challenge = match self.reason.error_code() {
            None => "Bearer".to_owned(),
            Some(code) => format!(
                "Bearer error=\"{code}\", error_description=\"{}\"",
                self.message.replace(['"', '\\'], "'")
            ),
        };
        if let Ok(value) = MetadataValue::try_from(challenge) {
            status.metadata_mut().insert(WWW_AUTHENTICATE, value);
        }
        status
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// One refusal counter per [`Reason`], resolved once.
#[derive(Clone, Debug)]
pub(super) struct RefusalCounters(Box<[Counter; Reason::ALL.len()]>);

impl RefusalCounters {
    pub(super) fn new() -> Self {
        Self(Box::new(
            Reason::ALL.map(|r| Metrics::global().server_auth_refusals(r.as_str())),
        ))
    }

    pub(super) fn count(&self, reason: Reason) {
        self.0[reason.index()].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_index_matches() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(
                Reason::ALL
                    .iter()
                    .filter(|o| o.as_str() == r.as_str())
                    .count(),
                1
            );
        }
    }

    #[test]
    fn status_carries_a_challenge() {
        let status = Refusal::new(Reason::Expired, "token expired").to_status();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            status.metadata().get(WWW_AUTHENTICATE).unwrap(),
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );
        let status = Refusal::new(Reason::MissingToken, "no bearer token").to_status();
        assert_eq!(status.metadata().get(WWW_AUTHENTICATE).unwrap(), "Bearer");
    }
}
