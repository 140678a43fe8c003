//! The policy model shared by `tai-build` and `tai-macros`.
//!
//! tai has two front ends for the same policy — `.proto` options and the
//! `#[resilient(...)]` attribute — and one rule for what is valid. This crate is that
//! rule: each front end parses its own syntax into a [`PolicySpec`] per level (file,
//! service, method), [`resolve`]s the levels, and calls [`validate`]. Errors name a
//! [`Field`]; each front end maps the field back to its own location (a token span or
//! a `.proto` file and option path), so messages agree while locations stay precise.
//!
//! The grammar itself — every field's attribute key, proto field, kind of value,
//! parent, default and doc — is one table, [`FIELDS`]; both front ends read their
//! keys from it, and [`attribute_args`] prints a level back in the attribute grammar.
//!
//! The gRPC service config JSON is a third front end ([`ServiceConfig`]): it reads
//! `methodConfig` entries into the same levels, so tai-build and tai-runtime check a
//! config by the same rules.
//!
//! Its one dependency is `serde_json`, for that JSON; it is small, and tai-runtime
//! and tai-build need it anyway.

#![forbid(unsafe_code)]

mod code;
mod duration;
mod grammar;
mod problem;
mod service_config;
mod spec;
mod validate;

pub use code::{Code, CodeSet};
pub use duration::{format_duration, parse_duration};
pub use grammar::{FIELDS, Field, FieldDef, Value, ValueKind, attribute_args, field_values};
pub use problem::{Problem, ProblemKind};
pub use service_config::{
    ConfigProblem, MethodConfig, MethodName, ServiceConfig, json_path, parse_json_duration,
};
pub use spec::{
    AuthSpec, Balancer, BreakerSpec, Defaults, HedgingSpec, MethodKind, PolicySpec, RateRuleSpec,
    ResolvedAccess, ResolvedBreaker, ResolvedHedging, ResolvedPolicy, ResolvedRateRule,
    ResolvedRetry, ResolvedThrottle, RetrySpec, ThrottleSpec, Toggle, access_table_expr, merge,
    resolve,
};
pub use validate::{MAX_ATTEMPTS_CAP, check_access_name, check_level, validate};
