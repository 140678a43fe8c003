//! The attribute grammar: every form, every error, and the round trip through the
//! grammar table's printer.

use super::*;
use quote::quote;
use std::time::Duration;
use tai_model::{
    BreakerSpec, Code, CodeSet, FIELDS, RateRuleSpec, RetrySpec, ThrottleSpec, Toggle,
    attribute_args, resolve,
};

fn parse_ok(scope: Scope, tokens: TokenStream) -> Args {
    let mut ctxt = Ctxt::default();
    let args = parse(tokens, Span::call_site(), scope, &mut ctxt);
    if let Err(e) = ctxt.finish() {
        panic!("unexpected errors: {:?}", messages(e));
    }
    args
}

fn parse_err(scope: Scope, tokens: TokenStream) -> Vec<String> {
    let mut ctxt = Ctxt::default();
    parse(tokens, Span::call_site(), scope, &mut ctxt);
    messages(ctxt.finish().expect_err("expected errors"))
}

fn messages(e: syn::Error) -> Vec<String> {
    e.into_iter().map(|e| e.to_string()).collect()
}

#[test]
fn service_level_full_grammar() {
    let args = parse_ok(
        Scope::Service,
        quote!(
            service = "tai.v1.Governor",
            idempotent,
            timeout = "2s",
            max_timeout = "1m",
            retry(
                max_attempts = 4,
                initial_backoff = "50ms",
                max_backoff = "5s",
                multiplier = 1.5,
                codes = [UNAVAILABLE, Aborted, "INTERNAL"]
            ),
            breaker(
                failure_threshold = 7,
                open_timeout = "1s",
                max_open_timeout = "10s",
                half_open_max_calls = 2,
                failure_rate = 0.25,
                window = "20s",
                min_calls = 10,
                failure_codes = [INTERNAL]
            ),
            throttle(max_tokens = 100, token_ratio = 0.5),
        ),
    );
    assert_eq!(args.name.unwrap().value(), "tai.v1.Governor");
    let s = args.level.spec;
    assert_eq!(s.idempotent, Some(true));
    assert_eq!(s.timeout, Some(Toggle::On(Duration::from_secs(2))));
    assert_eq!(s.max_timeout, Some(Duration::from_secs(60)));
    let Some(Toggle::On(r)) = s.retry else {
        panic!()
    };
    assert_eq!(r.max_attempts, Some(4));
    assert_eq!(r.initial_backoff, Some(Duration::from_millis(50)));
    assert_eq!(r.max_backoff, Some(Duration::from_secs(5)));
    assert_eq!(r.multiplier, Some(1.5));
    assert_eq!(
        CodeSet::of(&r.codes.unwrap()),
        CodeSet::of(&[Code::Unavailable, Code::Aborted, Code::Internal])
    );
    let Some(Toggle::On(b)) = s.breaker else {
        panic!()
    };
    assert_eq!(b.failure_threshold, Some(7));
    assert_eq!(b.half_open_max_calls, Some(2));
    assert_eq!(
        b.rate,
        Some(Toggle::On(RateRuleSpec {
            threshold: Some(0.25),
            window: Some(Duration::from_secs(20)),
            min_calls: Some(10)
        }))
    );
    assert_eq!(b.failure_codes, Some(vec![Code::Internal]));
    assert_eq!(
        s.throttle,
        Some(Toggle::On(ThrottleSpec {
            max_tokens: Some(100),
            token_ratio: Some(0.5)
        }))
    );
    for field in [
        Field::Timeout,
        Field::Retry,
        Field::RetryCodes,
        Field::BreakerWindow,
        Field::ThrottleTokenRatio,
    ] {
        assert!(args.level.spans.contains_key(&field), "{field:?}");
    }
}

#[test]
fn shorthands() {
    let s = parse_ok(
        Scope::Method,
        quote!(
            name = "Get",
            idempotent = false,
            retry = 3,
            hedging = none,
            breaker = default,
            timeout = none
        ),
    )
    .level
    .spec;
    assert_eq!(s.idempotent, Some(false));
    assert_eq!(
        s.retry,
        Some(Toggle::On(RetrySpec {
            max_attempts: Some(3),
            ..RetrySpec::default()
        }))
    );
    assert_eq!(s.hedging, Some(Toggle::Off));
    assert_eq!(s.breaker, Some(Toggle::On(BreakerSpec::default())));
    assert_eq!(s.timeout, Some(Toggle::Off));
    let s = parse_ok(
        Scope::Method,
        quote!(retry = default, breaker(failure_rate = none)),
    )
    .level
    .spec;
    assert_eq!(s.retry, Some(Toggle::On(RetrySpec::default())));
    let Some(Toggle::On(b)) = s.breaker else {
        panic!()
    };
    assert_eq!(b.rate, Some(Toggle::Off));
}

#[test]
fn negative_numbers_reach_the_validator() {
    let s = parse_ok(Scope::Method, quote!(retry(multiplier = -2)))
        .level
        .spec;
    let Some(Toggle::On(r)) = s.retry else {
        panic!()
    };
    assert_eq!(r.multiplier, Some(-2.0));
}

#[test]
fn every_error_is_collected() {
    let errors = parse_err(
        Scope::Service,
        quote!(
            retires = 3,
            timeout = "2 parsecs",
            retry(max_attempts = 2, codes = [UNAVAILABLE, BOGUS]),
            timeout = "1s",
            breaker(windw = "1s"),
            name = "X",
        ),
    );
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert!(
        errors[0]
            .starts_with("unknown key `retires`; valid keys are: service, idempotent, timeout")
    );
    assert!(errors[1].contains("unknown unit"), "{}", errors[1]);
    assert!(
        errors[2].starts_with(
            "retry(codes): unknown status code `BOGUS`; valid codes are: OK, CANCELLED"
        )
    );
    assert_eq!(errors[3], "`timeout` is set more than once; keep one");
    assert!(errors[4].starts_with("unknown key `windw`; valid keys are: failure_threshold"));
    assert!(errors[5].starts_with("unknown key `name`"), "{}", errors[5]);
}

#[test]
fn value_errors_say_what_is_expected() {
    let errors = parse_err(
        Scope::Method,
        quote!(
            retry = "x",
            timeout = 5,
            hedging = 2,
            idempotent = yes,
            max_timeout = none,
            breaker(min_calls = -1)
        ),
    );
    assert_eq!(
        errors,
        [
            "expected `retry = N`, `retry = default`, `retry = none` or `retry(...)`",
            "`timeout` takes a duration string with a unit, e.g. `timeout = \"5s\"`",
            "expected `hedging = default`, `hedging = none` or `hedging(...)`",
            "expected boolean literal",
            "`max_timeout` takes a duration string, e.g. `max_timeout = \"250ms\"` or `\"2s\"`",
            "`min_calls` counts something, so it cannot be negative",
        ]
    );
}

#[test]
fn missing_commas_and_names() {
    let errors = parse_err(
        Scope::Method,
        quote!(idempotent timeout = "1s", name = "not valid"),
    );
    assert_eq!(errors[0], "expected `,` between entries");
    assert!(errors[1].starts_with("`not valid` is not a proto method name"));
    let errors = parse_err(Scope::Service, quote!(service = "tai..Governor"));
    assert!(errors[0].starts_with("`tai..Governor` is not a fully qualified proto service name"));
}

#[test]
fn rate_fields_conflict_with_rate_none() {
    let errors = parse_err(
        Scope::Method,
        quote!(breaker(failure_rate = none, window = "1s")),
    );
    assert_eq!(
        errors,
        [
            "breaker(window): has no effect, because `failure_rate = none` turns the failure-rate rule off"
        ]
    );
}

#[test]
fn bad_access_names_are_reported_at_their_string() {
    let errors = parse_err(
        Scope::Method,
        quote!(auth(scopes = ["ok", "", "two words"], roles = [admin])),
    );
    assert_eq!(
        errors,
        [
            "auth(scopes): `` is empty",
            "auth(scopes): `two words` may hold only visible ASCII characters other than `\"` and `\\` (no spaces)",
            "`roles` takes names as strings, e.g. `roles = [\"admin\"]`",
        ]
    );
}

#[test]
fn problem_spans_fall_back_to_the_policy_then_the_attribute() {
    let args = parse_ok(Scope::Method, quote!(retry = 3));
    let level = args.level;
    assert!(level.spans.contains_key(&Field::Retry));
    assert!(!level.spans.contains_key(&Field::RetryCodes));
    // No panics and a span for every field, written or not.
    let _ = level.span_of(Field::RetryCodes);
    let _ = level.span_of(Field::Throttle);
}

/// Sample values of a row's kind: each is printed by the grammar table (as
/// tai-build writes it) and must parse back to the same level.
fn samples(kind: ValueKind) -> Vec<Value> {
    match kind {
        ValueKind::Flag => vec![Value::Flag(true), Value::Flag(false)],
        ValueKind::Duration => vec![Value::Duration(Duration::from_millis(1500))],
        ValueKind::DurationOrNone => vec![Value::Duration(Duration::from_secs(2)), Value::Off],
        ValueKind::Count => vec![Value::Count(4)],
        ValueKind::Number => vec![Value::Number(0.25), Value::Number(-2.0)],
        ValueKind::Rule { .. } => vec![Value::Number(0.75), Value::Off],
        ValueKind::Codes => vec![Value::Codes(vec![Code::Unavailable, Code::Aborted])],
        ValueKind::Balancer => vec![Value::Balancer(tai_model::Balancer::PeakEwma)],
        ValueKind::Names => vec![Value::Names(vec![
            "policies.write".to_owned(),
            "https://api.example.com/x:y".to_owned(),
        ])],
        ValueKind::Policy { .. } => vec![Value::On, Value::Off],
    }
}

fn round_trip(spec: &PolicySpec) {
    let text = attribute_args(spec).join(", ");
    let tokens: TokenStream = text.parse().expect("the printer writes tokens");
    let parsed = parse_ok(Scope::Service, tokens).level.spec;
    assert_eq!(&parsed, spec, "{text}");
    assert_eq!(resolve(&[&parsed]), resolve(&[spec]), "{text}");
}

#[test]
fn every_row_round_trips_through_the_printer() {
    let mut all = PolicySpec::default();
    for def in FIELDS {
        for value in samples(def.kind) {
            let mut spec = PolicySpec::default();
            (def.set)(&mut spec, value.clone());
            assert_eq!((def.get)(&spec).as_ref(), Some(&value), "{def:?}");
            round_trip(&spec);
            if value != Value::Off {
                (def.set)(&mut all, value);
            }
        }
    }
    round_trip(&all);
}
