//! [`CodeSet`]: a set of gRPC status codes as one `u32`, and the two questions
//! the call path asks of it (does this code count; may this code be retried).
//!
//! Why a bit mask behind a `const fn of(&[Code])`: a policy is `const` data read on
//! every classification, so a test is one instruction, while the expansion and
//! hand-written policies still name the codes (`CodeSet::of(&[Code::Unavailable])`).

use tonic::Code;

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
pub(super) fn model_codes(set: CodeSet) -> Vec<tai_model::Code> {
    tai_model::Code::ALL
        .into_iter()
        .filter(|c| set.0 & (1 << *c as u32) != 0)
        .collect()
}
