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
//!
//! Every type is `#[non_exhaustive]`, so that a field can be added (the next
//! policies: auth, bulkhead, compression) without breaking anyone: outside this
//! crate a policy is built with its `const fn` constructor and `with_..` setters,
//! which the expansion uses too. The fields stay public to read (and to change on
//! a value one owns).
//!
//! One concept per file: [`CodeSet`] (`codes.rs`), the call policies a client runs
//! (`method.rs`), the access rules a server enforces (`access.rs`), and checking a
//! hand-built policy with the shared model (`validate.rs`).

mod access;
mod codes;
mod method;
mod validate;

pub use access::{AccessRule, AccessTable, MethodAccess};
pub use codes::CodeSet;
pub(crate) use codes::{contains, retries};
pub use method::{
    BreakerPolicy, HedgingPolicy, MethodPolicy, RateRule, RetryPolicy, ServicePolicy,
    ThrottlePolicy,
};
pub use tai_model::MethodKind;
pub use validate::{PolicyError, PolicyProblem};
