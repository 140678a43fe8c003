//! The policy grammar, written once: one table row per policy field.
//!
//! Each row says how the field is spelled in the `#[resilient]` attribute and in the
//! `.proto` option, what kind of value it takes, which sub-policy holds it, its
//! default and one line of documentation, and how to read and write it in a
//! [`PolicySpec`]. Everything that used to repeat the keys reads this table instead:
//! the macro's parser and its "valid keys are" message, tai-build's printer of the
//! attribute ([`attribute_args`]) and its reader of proto options, and the field
//! paths both front ends put in their errors ([`Field::attr_path`],
//! [`Field::proto_path`]). Adding a policy field is one row here (plus its
//! [`PolicySpec`] slot, its validation rules and its runtime code).
//!
//! The table is a `const` slice of plain rows with `fn` pointers for access, not a
//! trait per field: a front end walks it generically, and a row reads like the
//! documentation table it replaces. The file is one concept — the table, the
//! accessors its rows use, and its printer — and is long because the table is.

use std::time::Duration;

use crate::spec::{
    AuthSpec, BreakerSpec, HedgingSpec, RateRuleSpec, RetrySpec, ThrottleSpec, Toggle,
};
use crate::{Balancer, Code, PolicySpec, format_duration};

/// A policy field, named the same way in both front ends' messages. The variants are
/// in [`FIELDS`] order: `FIELDS[field as usize].field == field`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Field {
    Idempotent,
    Timeout,
    MaxTimeout,
    Retry,
    RetryMaxAttempts,
    RetryInitialBackoff,
    RetryMaxBackoff,
    RetryMultiplier,
    RetryCodes,
    Hedging,
    HedgingMaxAttempts,
    HedgingDelay,
    HedgingNonFatalCodes,
    Breaker,
    BreakerFailureThreshold,
    BreakerOpenTimeout,
    BreakerMaxOpenTimeout,
    BreakerHalfOpenMaxCalls,
    BreakerFailureRate,
    BreakerWindow,
    BreakerMinCalls,
    BreakerFailureCodes,
    Throttle,
    ThrottleMaxTokens,
    ThrottleTokenRatio,
    Balancer,
    Auth,
    AuthRequired,
    AuthPublic,
    AuthScopes,
    AuthRoles,
}

/// What a field's value is, which decides how each front end reads and writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A flag: `idempotent` alone means `true`, `idempotent = false`. Proto: `bool`.
    Flag,
    /// A duration string with a unit: `"2s"`. Proto: `string`.
    Duration,
    /// A duration, or `none` to remove an inherited one. Proto: `string`, `"none"`.
    DurationOrNone,
    /// A whole number: `3`. Proto: `uint32`.
    Count,
    /// A number: `0.5`. Proto: `double`.
    Number,
    /// Status codes: `[UNAVAILABLE, ABORTED]`. Proto: `repeated string`.
    Codes,
    /// A balancer name: `"least_loaded"`. Proto: `string`.
    Balancer,
    /// Names of scopes or roles: `["policies.write"]`, each checked by
    /// [`check_access_name`](crate::check_access_name). Proto: `repeated string`.
    Names,
    /// A sub-policy holding the rows whose parent it is: `key(..)`, `key = default`,
    /// `key = none`, and `key = N` setting the `shorthand` row. Proto: a message, with
    /// `disabled: true` for `none`.
    Policy {
        /// The count row `key = N` sets, if the shorthand exists.
        shorthand: Option<Field>,
    },
    /// A number that switches on a rule of its policy (`failure_rate = 0.5`); `none`
    /// turns the rule off, and with it the sibling rows that configure it. Proto: a
    /// `double`, with the bool `proto_off` beside it for `none`.
    Rule {
        /// What `none` turns off, for messages: `"the failure-rate rule"`.
        rule: &'static str,
        /// The proto bool that stands for `none`.
        proto_off: &'static str,
    },
}

/// A field's value, as the front ends exchange it with a [`PolicySpec`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A [`ValueKind::Flag`].
    Flag(bool),
    /// A [`ValueKind::Duration`] or [`ValueKind::DurationOrNone`].
    Duration(Duration),
    /// A [`ValueKind::Count`].
    Count(u32),
    /// A [`ValueKind::Number`] or [`ValueKind::Rule`].
    Number(f64),
    /// A [`ValueKind::Codes`].
    Codes(Vec<Code>),
    /// A [`ValueKind::Balancer`].
    Balancer(Balancer),
    /// A [`ValueKind::Names`].
    Names(Vec<String>),
    /// A [`ValueKind::Policy`] turned on; its fields are rows of their own.
    On,
    /// `none`: a policy, a rule or a timeout turned off.
    Off,
}

/// One row of the grammar.
#[derive(Clone, Copy)]
pub struct FieldDef {
    /// The field.
    pub field: Field,
    /// The key in the attribute: `max_attempts` (inside `retry(..)`).
    pub key: &'static str,
    /// The field name in the proto message: `max_attempts` (inside `Retry`).
    pub proto: &'static str,
    /// The value it takes.
    pub kind: ValueKind,
    /// The sub-policy that holds it; `None` at the top of a policy.
    pub parent: Option<Field>,
    /// The default as written in the attribute (`"100ms"`), or `""` for none.
    pub default: &'static str,
    /// One line of documentation.
    pub doc: &'static str,
    /// The value the spec holds for this field, if it sets one that takes effect.
    pub get: fn(&PolicySpec) -> Option<Value>,
    /// Writes a value of this row's kind into a spec; a value of another kind, or one
    /// under a sub-policy or rule that is off, is ignored.
    pub set: fn(&mut PolicySpec, Value),
}

impl std::fmt::Debug for FieldDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldDef")
            .field("field", &self.field)
            .field("key", &self.key)
            .field("proto", &self.proto)
            .field("kind", &self.kind)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

/// The sub-policy `t` as a value: on, off or unset.
fn toggle_value<T>(t: &Option<Toggle<T>>) -> Option<Value> {
    match t {
        Some(Toggle::On(_)) => Some(Value::On),
        Some(Toggle::Off) => Some(Value::Off),
        None => None,
    }
}

/// Turns a sub-policy on (keeping what it holds) or off.
fn set_toggle<T: Default>(t: &mut Option<Toggle<T>>, value: Value) {
    match value {
        Value::Off => *t = Some(Toggle::Off),
        Value::On => {
            on_mut(t);
        }
        _ => {}
    }
}

/// The fields of a sub-policy that is on.
fn on<T>(t: &Option<Toggle<T>>) -> Option<&T> {
    match t {
        Some(Toggle::On(v)) => Some(v),
        _ => None,
    }
}

/// The fields of a sub-policy, turning an unset one on; `None` if it is off.
fn on_mut<T: Default>(t: &mut Option<Toggle<T>>) -> Option<&mut T> {
    if t.is_none() {
        *t = Some(Toggle::On(T::default()));
    }
    match t {
        Some(Toggle::On(v)) => Some(v),
        _ => None,
    }
}

/// A value that converts to and from [`Value`].
trait Leaf: Sized + Clone {
    fn into_value(self) -> Value;
    fn from_value(value: Value) -> Option<Self>;
}

macro_rules! leaf {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl Leaf for $ty {
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
            fn from_value(value: Value) -> Option<Self> {
                match value {
                    Value::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}

leaf!(bool => Flag, Duration => Duration, u32 => Count, f64 => Number, Vec<Code> => Codes, Balancer => Balancer,
    Vec<String> => Names);

/// Reads a leaf slot.
fn get<T: Leaf>(slot: Option<&Option<T>>) -> Option<Value> {
    slot?.clone().map(Leaf::into_value)
}

/// Writes a leaf slot, if the sub-policy holding it is not off.
fn put<T: Leaf>(slot: Option<&mut Option<T>>, value: Value) {
    if let (Some(slot), Some(v)) = (slot, T::from_value(value)) {
        *slot = Some(v);
    }
}

fn retry(s: &PolicySpec) -> Option<&RetrySpec> {
    on(&s.retry)
}
fn retry_mut(s: &mut PolicySpec) -> Option<&mut RetrySpec> {
    on_mut(&mut s.retry)
}
fn hedging(s: &PolicySpec) -> Option<&HedgingSpec> {
    on(&s.hedging)
}
fn hedging_mut(s: &mut PolicySpec) -> Option<&mut HedgingSpec> {
    on_mut(&mut s.hedging)
}
fn breaker(s: &PolicySpec) -> Option<&BreakerSpec> {
    on(&s.breaker)
}
fn breaker_mut(s: &mut PolicySpec) -> Option<&mut BreakerSpec> {
    on_mut(&mut s.breaker)
}
fn rate(s: &PolicySpec) -> Option<&RateRuleSpec> {
    breaker(s).and_then(|b| on(&b.rate))
}
fn rate_mut(s: &mut PolicySpec) -> Option<&mut RateRuleSpec> {
    breaker_mut(s).and_then(|b| on_mut(&mut b.rate))
}
fn throttle(s: &PolicySpec) -> Option<&ThrottleSpec> {
    on(&s.throttle)
}
fn throttle_mut(s: &mut PolicySpec) -> Option<&mut ThrottleSpec> {
    on_mut(&mut s.throttle)
}
fn auth(s: &PolicySpec) -> Option<&AuthSpec> {
    on(&s.auth)
}
fn auth_mut(s: &mut PolicySpec) -> Option<&mut AuthSpec> {
    on_mut(&mut s.auth)
}

use Field as F;
use ValueKind as K;

/// A row of a leaf field: `row!(Field, parent, "key", "proto", Kind, "default", "doc",
/// |spec| Option<&slot>, |spec| Option<&mut slot>)`.
macro_rules! row {
    ($field:ident, $parent:expr, $key:literal, $proto:literal, $kind:expr, $default:literal, $doc:literal,
     |$s:ident| $get:expr, |$m:ident| $get_mut:expr) => {
        FieldDef {
            field: F::$field,
            key: $key,
            proto: $proto,
            kind: $kind,
            parent: $parent,
            default: $default,
            doc: $doc,
            get: |$s| get($get),
            set: |$m, v| put($get_mut, v),
        }
    };
}

/// A row of a sub-policy held in `PolicySpec::$slot`.
macro_rules! policy {
    ($field:ident, $slot:ident, $shorthand:expr, $doc:literal) => {
        FieldDef {
            field: F::$field,
            key: stringify!($slot),
            proto: stringify!($slot),
            kind: K::Policy {
                shorthand: $shorthand,
            },
            parent: None,
            default: "",
            doc: $doc,
            get: |s| toggle_value(&s.$slot),
            set: |s, v| set_toggle(&mut s.$slot, v),
        }
    };
}

/// Every policy field, in the order keys are listed and printed. A sub-policy's
/// fields follow it.
#[rustfmt::skip] // one row a few lines, so that the table reads as one
pub const FIELDS: &[FieldDef] = &[
    row!(Idempotent, None, "idempotent", "idempotent", K::Flag, "false",
        "The method is safe to run more than once.",
        |s| Some(&s.idempotent), |s| Some(&mut s.idempotent)),
    FieldDef {
        field: F::Timeout,
        key: "timeout",
        proto: "timeout",
        kind: K::DurationOrNone,
        parent: None,
        default: "",
        doc: "Deadline of the whole call, all attempts included; `none` removes an inherited one.",
        get: |s| match s.timeout {
            Some(Toggle::On(d)) => Some(Value::Duration(d)),
            Some(Toggle::Off) => Some(Value::Off),
            None => None,
        },
        set: |s, v| match v {
            Value::Off => s.timeout = Some(Toggle::Off),
            Value::Duration(d) => s.timeout = Some(Toggle::On(d)),
            _ => {}
        },
    },
    row!(MaxTimeout, None, "max_timeout", "max_timeout", K::Duration, "",
        "Upper bound on any deadline, including one a caller asks for; also clamps `timeout`.",
        |s| Some(&s.max_timeout), |s| Some(&mut s.max_timeout)),
    policy!(Retry, retry, Some(F::RetryMaxAttempts),
        "gRFC A6 retry; `retry = N` sets `max_attempts`."),
    row!(RetryMaxAttempts, Some(F::Retry), "max_attempts", "max_attempts", K::Count, "3",
        "Attempts including the first; at least 2; above 5 runs as 5.",
        |s| retry(s).map(|r| &r.max_attempts), |s| retry_mut(s).map(|r| &mut r.max_attempts)),
    row!(RetryInitialBackoff, Some(F::Retry), "initial_backoff", "initial_backoff", K::Duration, "\"100ms\"",
        "Backoff before the first retry.",
        |s| retry(s).map(|r| &r.initial_backoff), |s| retry_mut(s).map(|r| &mut r.initial_backoff)),
    row!(RetryMaxBackoff, Some(F::Retry), "max_backoff", "max_backoff", K::Duration, "\"10s\"",
        "Cap on the backoff before the ±20 % jitter.",
        |s| retry(s).map(|r| &r.max_backoff), |s| retry_mut(s).map(|r| &mut r.max_backoff)),
    row!(RetryMultiplier, Some(F::Retry), "multiplier", "backoff_multiplier", K::Number, "2.0",
        "Growth of the backoff per retry; greater than 0.",
        |s| retry(s).map(|r| &r.multiplier), |s| retry_mut(s).map(|r| &mut r.multiplier)),
    row!(RetryCodes, Some(F::Retry), "codes", "retryable_codes", K::Codes, "[UNAVAILABLE]",
        "Retried status codes; not empty.",
        |s| retry(s).map(|r| &r.codes), |s| retry_mut(s).map(|r| &mut r.codes)),
    policy!(Hedging, hedging, None,
        "gRFC A6 hedging: send again after `delay` without waiting for a failure."),
    row!(HedgingMaxAttempts, Some(F::Hedging), "max_attempts", "max_attempts", K::Count, "2",
        "Attempts including the first; at least 2.",
        |s| hedging(s).map(|h| &h.max_attempts), |s| hedging_mut(s).map(|h| &mut h.max_attempts)),
    row!(HedgingDelay, Some(F::Hedging), "delay", "delay", K::Duration, "\"100ms\"",
        "Delay between starting one attempt and the next.",
        |s| hedging(s).map(|h| &h.delay), |s| hedging_mut(s).map(|h| &mut h.delay)),
    row!(HedgingNonFatalCodes, Some(F::Hedging), "non_fatal_codes", "non_fatal_codes", K::Codes, "[]",
        "Codes that let the other attempts go on.",
        |s| hedging(s).map(|h| &h.non_fatal_codes), |s| hedging_mut(s).map(|h| &mut h.non_fatal_codes)),
    policy!(Breaker, breaker, None, "Circuit breaker per method."),
    row!(BreakerFailureThreshold, Some(F::Breaker), "failure_threshold", "failure_threshold", K::Count, "5",
        "Consecutive failures that trip it.",
        |s| breaker(s).map(|b| &b.failure_threshold), |s| breaker_mut(s).map(|b| &mut b.failure_threshold)),
    row!(BreakerOpenTimeout, Some(F::Breaker), "open_timeout", "open_timeout", K::Duration, "\"30s\"",
        "Open time before probing; doubles per failed probe.",
        |s| breaker(s).map(|b| &b.open_timeout), |s| breaker_mut(s).map(|b| &mut b.open_timeout)),
    row!(BreakerMaxOpenTimeout, Some(F::Breaker), "max_open_timeout", "max_open_timeout", K::Duration, "\"5m\"",
        "Cap on the open time.",
        |s| breaker(s).map(|b| &b.max_open_timeout), |s| breaker_mut(s).map(|b| &mut b.max_open_timeout)),
    row!(BreakerHalfOpenMaxCalls, Some(F::Breaker), "half_open_max_calls", "half_open_max_calls", K::Count, "3",
        "Probes while half-open; all must succeed to close.",
        |s| breaker(s).map(|b| &b.half_open_max_calls), |s| breaker_mut(s).map(|b| &mut b.half_open_max_calls)),
    FieldDef {
        field: F::BreakerFailureRate,
        key: "failure_rate",
        proto: "failure_rate",
        kind: K::Rule {
            rule: "the failure-rate rule",
            proto_off: "rate_disabled",
        },
        parent: Some(F::Breaker),
        default: "0.5",
        doc: "Trip ratio in (0, 1] of the failure-rate rule; `none` turns the rule off.",
        get: |s| match &breaker(s)?.rate {
            Some(Toggle::Off) => Some(Value::Off),
            Some(Toggle::On(r)) => r.threshold.map(Value::Number),
            None => None,
        },
        set: |s, v| match v {
            Value::Off => {
                if let Some(b) = breaker_mut(s) {
                    b.rate = Some(Toggle::Off);
                }
            }
            v => put(rate_mut(s).map(|r| &mut r.threshold), v),
        },
    },
    row!(BreakerWindow, Some(F::Breaker), "window", "window", K::Duration, "\"10s\"",
        "Sliding window of the failure-rate rule.",
        |s| rate(s).map(|r| &r.window), |s| rate_mut(s).map(|r| &mut r.window)),
    row!(BreakerMinCalls, Some(F::Breaker), "min_calls", "min_calls", K::Count, "20",
        "Calls in the window before the failure-rate rule may trip.",
        |s| rate(s).map(|r| &r.min_calls), |s| rate_mut(s).map(|r| &mut r.min_calls)),
    row!(BreakerFailureCodes, Some(F::Breaker), "failure_codes", "failure_codes", K::Codes, "[UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED]",
        "Codes that count as failures; not empty.",
        |s| breaker(s).map(|b| &b.failure_codes), |s| breaker_mut(s).map(|b| &mut b.failure_codes)),
    policy!(Throttle, throttle, None,
        "gRFC A6 retry throttling, shared by the whole client: service or file only."),
    row!(ThrottleMaxTokens, Some(F::Throttle), "max_tokens", "max_tokens", K::Count, "10",
        "Token bucket size, 1..=1000.",
        |s| throttle(s).map(|t| &t.max_tokens), |s| throttle_mut(s).map(|t| &mut t.max_tokens)),
    row!(ThrottleTokenRatio, Some(F::Throttle), "token_ratio", "token_ratio", K::Number, "0.1",
        "Tokens returned per success; greater than 0.",
        |s| throttle(s).map(|t| &t.token_ratio), |s| throttle_mut(s).map(|t| &mut t.token_ratio)),
    row!(Balancer, None, "balancer", "balancer", K::Balancer, "\"round_robin\"",
        "The client's default load balancer: service or file only.",
        |s| Some(&s.balancer), |s| Some(&mut s.balancer)),
    policy!(Auth, auth, None,
        "Who may call, checked by the server; `none` leaves the method to the server's default."),
    row!(AuthRequired, Some(F::Auth), "required", "required", K::Flag, "true",
        "A caller must present an identity (implied by scopes and roles).",
        |s| auth(s).map(|a| &a.required), |s| auth_mut(s).map(|a| &mut a.required)),
    row!(AuthPublic, Some(F::Auth), "public", "public", K::Flag, "false",
        "Anyone may call, without an identity; replaces an inherited rule, excludes the others.",
        |s| auth(s).map(|a| &a.public), |s| auth_mut(s).map(|a| &mut a.public)),
    row!(AuthScopes, Some(F::Auth), "scopes", "scopes", K::Names, "[]",
        "Scopes the caller's token must all hold: `[\"policies.write\"]`.",
        |s| auth(s).map(|a| &a.scopes), |s| auth_mut(s).map(|a| &mut a.scopes)),
    row!(AuthRoles, Some(F::Auth), "roles", "roles", K::Names, "[]",
        "Roles the caller's token must all hold.",
        |s| auth(s).map(|a| &a.roles), |s| auth_mut(s).map(|a| &mut a.roles)),
];

impl Field {
    /// This field's row of [`FIELDS`].
    pub fn def(self) -> &'static FieldDef {
        &FIELDS[self as usize]
    }

    /// The sub-policy that holds this field.
    pub fn parent(self) -> Option<Field> {
        self.def().parent
    }

    /// The rows whose parent is `parent` (`None`: the top level), in order.
    pub fn children(parent: Option<Field>) -> impl Iterator<Item = &'static FieldDef> {
        FIELDS.iter().filter(move |d| d.parent == parent)
    }

    /// The row of `key` under `parent`.
    pub fn find(parent: Option<Field>, key: &str) -> Option<&'static FieldDef> {
        Field::children(parent).find(|d| d.key == key)
    }

    /// The field's path in the `#[resilient]` attribute, e.g. `retry(max_attempts)`.
    pub fn attr_path(self) -> String {
        let key = self.def().key;
        match self.parent() {
            Some(parent) => format!("{}({key})", parent.def().key),
            None => key.to_owned(),
        }
    }

    /// The field's path in the `.proto` option, e.g. `retry.max_attempts`.
    pub fn proto_path(self) -> String {
        let proto = self.def().proto;
        match self.parent() {
            Some(parent) => format!("{}.{proto}", parent.def().proto),
            None => proto.to_owned(),
        }
    }
}

/// The `#[resilient(...)]` arguments for what one level sets, as text in the
/// attribute grammar, in table order: `["idempotent", "retry(max_attempts = 4)"]`.
/// Only what the spec sets is written, never filled-in defaults; a policy that is on
/// with nothing set is `key = default`. tai-build writes these into generated code,
/// and `tai-macros` parses them back (a test proves every row round-trips).
pub fn attribute_args(spec: &PolicySpec) -> Vec<String> {
    Field::children(None)
        .filter_map(|def| entry(def, spec))
        .collect()
}

/// Every field the spec sets, one `(path, value)` pair per field in table order,
/// both in the attribute grammar: `("retry(max_attempts)", "4")`,
/// `("hedging", "none")`. A sub-policy that is on shows through its fields (or as
/// `default` if it sets none). What `tai_runtime`'s printed policies are made of.
///
/// ```
/// use tai_model::{PolicySpec, Toggle, field_values};
/// let spec = PolicySpec { idempotent: Some(true), hedging: Some(Toggle::Off), ..Default::default() };
/// assert_eq!(field_values(&spec), [
///     ("idempotent".to_owned(), "true".to_owned()),
///     ("hedging".to_owned(), "none".to_owned()),
/// ]);
/// ```
pub fn field_values(spec: &PolicySpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for def in FIELDS {
        // A field under a sub-policy or rule that is off reads as unset.
        let Some(value) = (def.get)(spec) else {
            continue;
        };
        let text = match value {
            Value::On if Field::children(Some(def.field)).any(|c| (c.get)(spec).is_some()) => {
                continue;
            }
            other => value_text(&other),
        };
        out.push((def.field.attr_path(), text));
    }
    out
}

/// A value as written after `key = ` in the attribute (flags and `On` aside).
fn value_text(value: &Value) -> String {
    match value {
        Value::Flag(b) => b.to_string(),
        Value::Duration(d) => format!("\"{}\"", format_duration(*d)),
        Value::Count(n) => n.to_string(),
        Value::Number(x) => float(*x),
        Value::Codes(codes) => {
            let names: Vec<&str> = codes.iter().map(|c| c.name()).collect();
            format!("[{}]", names.join(", "))
        }
        Value::Balancer(b) => format!("\"{}\"", b.name()),
        Value::Names(names) => {
            let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            format!("[{}]", quoted.join(", "))
        }
        Value::Off => "none".to_owned(),
        Value::On => "default".to_owned(),
    }
}

/// One `key ..` entry, if the spec sets the field.
fn entry(def: &FieldDef, spec: &PolicySpec) -> Option<String> {
    let key = def.key;
    let text = match (def.get)(spec)? {
        Value::Flag(true) => key.to_owned(),
        Value::Flag(false) => format!("{key} = false"),
        Value::On => {
            let fields: Vec<String> = Field::children(Some(def.field))
                .filter_map(|child| entry(child, spec))
                .collect();
            if fields.is_empty() {
                format!("{key} = default")
            } else {
                format!("{key}({})", fields.join(", "))
            }
        }
        other => format!("{key} = {}", value_text(&other)),
    };
    Some(text)
}

/// A float as a Rust literal: always with a decimal point (`2.0`), the sign apart.
fn float(x: f64) -> String {
    let text = x.to_string();
    if text.contains(['.', 'e', 'i', 'N']) {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_field_order() {
        for (i, def) in FIELDS.iter().enumerate() {
            assert_eq!(def.field as usize, i, "{def:?}");
            if let Some(parent) = def.parent {
                assert!(matches!(parent.def().kind, ValueKind::Policy { .. }));
                assert!(parent < def.field, "a sub-policy's fields follow it");
            }
        }
        assert_eq!(Field::Balancer.def().field, Field::Balancer);
        assert_eq!(Field::AuthRoles.def().field, Field::AuthRoles);
    }

    #[test]
    fn keys_are_unique_per_list() {
        for parent in [None]
            .into_iter()
            .chain(FIELDS.iter().map(|d| Some(d.field)))
        {
            let keys: Vec<&str> = Field::children(parent).map(|d| d.key).collect();
            let protos: Vec<&str> = Field::children(parent).map(|d| d.proto).collect();
            for (i, key) in keys.iter().enumerate() {
                assert!(!keys[..i].contains(key), "{key}");
                assert!(!protos[..i].contains(&protos[i]), "{}", protos[i]);
            }
        }
    }

    #[test]
    fn paths() {
        assert_eq!(Field::RetryMaxAttempts.attr_path(), "retry(max_attempts)");
        assert_eq!(
            Field::RetryMultiplier.proto_path(),
            "retry.backoff_multiplier"
        );
        assert_eq!(Field::Balancer.attr_path(), "balancer");
        assert_eq!(Field::BreakerWindow.proto_path(), "breaker.window");
        assert_eq!(Field::AuthScopes.attr_path(), "auth(scopes)");
    }

    #[test]
    fn set_then_get() {
        let mut spec = PolicySpec::default();
        (Field::BreakerWindow.def().set)(&mut spec, Value::Duration(Duration::from_secs(3)));
        assert_eq!(
            (Field::BreakerWindow.def().get)(&spec),
            Some(Value::Duration(Duration::from_secs(3)))
        );
        assert_eq!((Field::Breaker.def().get)(&spec), Some(Value::On));
        // `failure_rate = none` turns the rule off, and the window with it.
        (Field::BreakerFailureRate.def().set)(&mut spec, Value::Off);
        assert_eq!((Field::BreakerWindow.def().get)(&spec), None);
        assert_eq!(
            attribute_args(&spec),
            ["breaker(failure_rate = none)".to_owned()]
        );
    }

    #[test]
    fn prints_the_attribute_grammar() {
        let mut spec = PolicySpec {
            idempotent: Some(true),
            timeout: Some(Toggle::Off),
            hedging: Some(Toggle::Off),
            throttle: Some(Toggle::On(ThrottleSpec::default())),
            ..PolicySpec::default()
        };
        (Field::RetryMaxAttempts.def().set)(&mut spec, Value::Count(4));
        (Field::RetryMultiplier.def().set)(&mut spec, Value::Number(2.0));
        (Field::RetryCodes.def().set)(&mut spec, Value::Codes(vec![Code::Unavailable]));
        (Field::Balancer.def().set)(&mut spec, Value::Balancer(Balancer::Random));
        assert_eq!(
            attribute_args(&spec).join(", "),
            "idempotent, timeout = none, retry(max_attempts = 4, multiplier = 2.0, \
             codes = [UNAVAILABLE]), hedging = none, throttle = default, balancer = \"random\""
        );
    }

    #[test]
    fn prints_access_rules() {
        let mut spec = PolicySpec::default();
        (Field::AuthScopes.def().set)(
            &mut spec,
            Value::Names(vec!["policies.write".into(), "admin".into()]),
        );
        assert_eq!(
            attribute_args(&spec),
            ["auth(scopes = [\"policies.write\", \"admin\"])".to_owned()]
        );
        let mut spec = PolicySpec::default();
        (Field::AuthPublic.def().set)(&mut spec, Value::Flag(true));
        assert_eq!(attribute_args(&spec), ["auth(public)".to_owned()]);
    }
}
