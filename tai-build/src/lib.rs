//! # tai-build
//!
//! Build-time code generation for **tai**: `.proto` files whose RPCs carry tai policy
//! options become prost messages, tonic servers, and typed resilient clients.
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     tai_build::compile("proto/").unwrap();
//! }
//! ```
//!
//! ```ignore
//! // src/lib.rs — the crate depends on `tai-runtime` only (and `tai-build` as a
//! // build-dependency): generated code reaches tonic and prost through it.
//! pub mod governance {
//!     tai_runtime::include_proto!("tai.v1");
//! }
//! ```
//!
//! No `protoc` is needed: [protox](https://docs.rs/protox) parses and links the files.
//!
//! ## Writing policies
//!
//! Import tai's options (tai-build ships the file; don't copy it) and set them on the
//! file, a service or a method:
//!
//! ```proto
//! syntax = "proto3";
//! package tai.v1;
//! import "tai/v1/options.proto";
//!
//! // Defaults for every service in this file.
//! option (tai.v1.file) = { timeout: "30s" };
//!
//! service Governor {
//!   option (tai.v1.service) = { breaker: { failure_threshold: 5 } };
//!
//!   // Proposes a policy.
//!   rpc ProposePolicy(Policy) returns (Receipt) {
//!     option (tai.v1.method) = {
//!       idempotent: true
//!       timeout: "2s"
//!       retry: { max_attempts: 4, retryable_codes: ["UNAVAILABLE", "ABORTED"] }
//!     };
//!   }
//! }
//! ```
//!
//! Levels resolve file < service < method, field by field: a method that sets
//! `retry.max_attempts` keeps the backoff its service set.
//!
//! ## Option reference
//!
//! Every option is a `tai.v1.Policy` message (`tai/v1/options.proto` is the source of
//! truth and documents each field). Durations are strings with a unit — `"250ms"`,
//! `"2s"`, `"1.5m"` (units `ns`, `us`, `ms`, `s`, `m`, `h`); status codes are their
//! spec names, `"UNAVAILABLE"`.
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `idempotent` | safe to run more than once; needed for hedging and for retrying on codes other than `UNAVAILABLE` | `false` |
//! | `timeout` | deadline of the whole call, all attempts included; `"none"` removes an inherited one | none |
//! | `max_timeout` | upper bound on any deadline, a caller's included | none |
//! | `retry { max_attempts, initial_backoff, max_backoff, backoff_multiplier, retryable_codes, disabled }` | gRFC A6 retry | `3`, `"100ms"`, `"10s"`, `2.0`, `["UNAVAILABLE"]` |
//! | `hedging { max_attempts, delay, non_fatal_codes, disabled }` | gRFC A6 hedging; idempotent methods only; excludes retry | `2`, `"100ms"`, `[]` |
//! | `breaker { failure_threshold, open_timeout, max_open_timeout, half_open_max_calls, failure_rate, window, min_calls, rate_disabled, failure_codes, disabled }` | circuit breaker | `5`, `"30s"`, `"5m"`, `3`, `0.5`, `"10s"`, `20`, on, `UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED` |
//! | `throttle { max_tokens, token_ratio, disabled }` | A6 retry throttling, shared by a client; file or service level only | `10`, `0.1` |
//! | `balancer` | the generated client's default balancer: `round_robin`, `least_loaded`, `peak_ewma`, `random`; file or service level only | `round_robin` |
//!
//! A present sub-message turns that policy on with the fields it sets (the rest
//! inherited, else defaulted); `disabled: true` turns an inherited one off (and then
//! must stand alone); `rate_disabled: true` turns off the breaker's failure-rate rule.
//! The rules on values (`max_attempts` at least 2, no retry on non-idempotent methods
//! for codes other than `UNAVAILABLE`, ...) are tai's one validator, `tai_model`,
//! shared with the `#[resilient]` attribute.
//!
//! ## Service config
//!
//! [`Builder::service_config`] reads a gRPC service config JSON (`methodConfig` with
//! `timeout`, `retryPolicy`, `hedgingPolicy`; `retryThrottling`; a `tai` object for
//! the breaker, balancer, `idempotent`, `max_timeout`) as one more level: the entry
//! gRPC picks for a method sits just below its `(tai.v1.method)` options (which win),
//! over the file and service options. Problems name the JSON file and path:
//! `svc.json: methodConfig[0].retryPolicy.maxAttempts: is 1, but must be at least 2`.
//!
//! ## Errors
//!
//! A bad option fails the build with one error listing every problem, each with the
//! file, line, service, method and option field:
//!
//! ```text
//! 2 problems in tai options:
//! proto/governor.proto:14: tai.v1.Governor/ProposePolicy: option (tai.v1.method).retry.max_attempts: is 1, but must be at least 2
//! proto/governor.proto:15: tai.v1.Governor/ProposePolicy: option (tai.v1.method).retry.retryable_codes: unknown status code `UNAVAILBLE`; valid codes are: OK, CANCELLED, ...
//! ```
//!
//! A syntax or link error is protox's, with its file, line and column.
//!
//! ## What is generated
//!
//! One `{package}.rs` per proto package in `OUT_DIR` (read it with
//! `tai_runtime::include_proto!("{package}")`), and `OUT_DIR/tai_descriptor.bin`, the
//! encoded `FileDescriptorSet` with every import (for `tonic-reflection`). Each
//! package file holds prost's messages and, per service, tonic's `{service}_server`
//! module and tai's `{service}_client` module:
//!
//! ```ignore
//! /// Generated client of `tai.v1.Governor`.
//! pub mod governor_client {
//!     #[::tai_runtime::resilient(
//!         service = "tai.v1.Governor",
//!         timeout = "30s",
//!         breaker(failure_threshold = 5)
//!     )]
//!     pub trait Governor {
//!         /// Proposes a policy.
//!         #[resilient(
//!             name = "ProposePolicy",
//!             idempotent,
//!             timeout = "2s",
//!             retry(max_attempts = 4, codes = [UNAVAILABLE, ABORTED])
//!         )]
//!         fn propose_policy(&self, request: super::Policy) -> impl ::core::future::Future<
//!             Output = ::core::result::Result<super::Receipt, ::tai_runtime::Status>,
//!         > + ::core::marker::Send;
//!     }
//! }
//! ```
//!
//! tai-build writes no policy code: `#[resilient]` (tai-macros) expands the trait into
//! the typed client, exactly as for a trait written by hand.
//!
//! - The trait attribute carries the file and service levels **merged** into one level
//!   that means the same (the service's fields over the file's, field by field, as
//!   `tai_model::resolve` combines them); each method attribute carries that method's
//!   own level. Only fields the `.proto` wrote are emitted — never filled-in defaults —
//!   so the attribute reads like the source.
//! - Streaming methods take `::tai_runtime::RequestStream<T>` (client and bidi
//!   streaming) and return `::tai_runtime::ResponseStream<T>` (server and bidi).
//! - Method names are snake case (Rust keywords become raw identifiers, `r#type`);
//!   the trait is named like the service.
//! - Generated code names tonic, prost and prost-types only through
//!   `::tai_runtime::__private`, so it compiles in a crate whose one dependency is
//!   `tai-runtime`.

#![forbid(unsafe_code)]
// The examples are build scripts: their `fn main` is the point.
#![allow(clippy::needless_doctest_main)]

mod access;
mod builder;
mod check;
mod client;
mod compile;
mod error;
mod format;
mod generator;
mod options;
mod prost_paths;
mod sources;

use std::path::Path;

pub use builder::Builder;
pub use error::{Error, ErrorKind};

/// Compiles every `.proto` file under `dir` (recursively; `dir` is also the include
/// path) into `OUT_DIR`. Meant for a build script; see [`Builder`] for the knobs.
///
/// ```no_run
/// // build.rs
/// fn main() {
///     tai_build::compile("proto/").unwrap();
/// }
/// ```
pub fn compile(dir: impl AsRef<Path>) -> Result<(), Error> {
    Builder::new().include(dir).compile()
}
