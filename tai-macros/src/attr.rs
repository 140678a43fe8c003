//! Parsing of `#[resilient(...)]` arguments into the shared model.
//!
//! Each attribute becomes a [`Level`]: the [`PolicySpec`] the shared validator reads,
//! plus the span of every field as written, so that a [`Problem`] the validator
//! reports about a field can be shown at the token that wrote it.
//!
//! Parsing never stops at the first mistake. Every entry of an argument list is read
//! by one loop ([`entries`]) that rejects unknown and repeated keys for every list
//! alike, records the error in an [`Errors`] context, skips to the next `,` and goes
//! on; the caller reports everything at once.

use std::collections::HashMap;
use std::time::Duration;

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitBool, LitFloat, LitInt, LitStr, Token, bracketed, parenthesized};
use tai_model::{
    BreakerSpec, Code, Field, HedgingSpec, PolicySpec, Problem, RateRuleSpec, RetrySpec,
    ThrottleSpec, Toggle, parse_duration,
};

/// Keywords that appear as values.
mod kw {
    syn::custom_keyword!(none);
}

/// Collects errors so that all of them are reported together (serde_derive's `Ctxt`).
#[derive(Default)]
pub(crate) struct Errors {
    first: Option<syn::Error>,
}

impl Errors {
    /// Records one more error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.first {
            Some(first) => first.combine(error),
            None => self.first = Some(error),
        }
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Moves the errors of `other` into `self`.
    pub(crate) fn append(&mut self, other: Errors) {
        if let Some(error) = other.first {
            self.push(error);
        }
    }

    /// `Ok` if nothing was recorded, else every error combined into one.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.first.map_or(Ok(()), Err)
    }
}

/// Where an attribute appears, which decides the keys it takes besides the policy keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// On the trait: `service = "pkg.Service"`.
    Service,
    /// On a trait method: `name = "Method"`.
    Method,
}

/// The keys of every argument list, for matching and for the "valid keys are" message.
const POLICY_KEYS: [&str; 8] = [
    "idempotent",
    "timeout",
    "max_timeout",
    "retry",
    "hedging",
    "breaker",
    "throttle",
    "balancer",
];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "initial_backoff",
    "max_backoff",
    "multiplier",
    "codes",
];
const HEDGING_KEYS: &[&str] = &["max_attempts", "delay", "non_fatal_codes"];
const BREAKER_KEYS: &[&str] = &[
    "failure_threshold",
    "open_timeout",
    "max_open_timeout",
    "half_open_max_calls",
    "failure_rate",
    "window",
    "min_calls",
    "failure_codes",
];
const THROTTLE_KEYS: &[&str] = &["max_tokens", "token_ratio"];

impl Scope {
    /// The key naming the service or method.
    fn name_key(self) -> &'static str {
        match self {
            Scope::Service => "service",
            Scope::Method => "name",
        }
    }

    /// Every key of an attribute in this scope, the name key first.
    fn keys(self) -> Vec<&'static str> {
        std::iter::once(self.name_key())
            .chain(POLICY_KEYS)
            .collect()
    }
}

/// One level of policy as written in one attribute.
#[derive(Debug)]
pub(crate) struct Level {
    /// The policy, in the shared model's terms.
    pub(crate) spec: PolicySpec,
    /// Where each field was written: the value for a leaf field (`"2s"`, `4`,
    /// `[UNAVAILABLE]`), the key for a whole policy (`retry`, `breaker`).
    pub(crate) spans: HashMap<Field, Span>,
    /// The attribute itself, for problems about fields this level did not write.
    pub(crate) span: Span,
}

impl Level {
    /// An empty level (a method without an attribute), located at `span`.
    pub(crate) fn empty(span: Span) -> Level {
        Level {
            spec: PolicySpec::default(),
            spans: HashMap::new(),
            span,
        }
    }

    /// The best span for a problem about `field` at this level: the field, a related
    /// field, the policy that holds it, or else the attribute.
    pub(crate) fn span_of(&self, field: Field) -> Span {
        let related = match field {
            // `initial_backoff > max_backoff` may be caused by either one.
            Field::RetryInitialBackoff => Some(Field::RetryMaxBackoff),
            _ => None,
        };
        [Some(field), related, parent(field)]
            .into_iter()
            .flatten()
            .find_map(|f| self.spans.get(&f).copied())
            .unwrap_or(self.span)
    }

    /// A [`Problem`] the validator found at this level, as a spanned error.
    pub(crate) fn error(&self, problem: &Problem) -> syn::Error {
        syn::Error::new(
            self.span_of(problem.field),
            format!("{}: {}", problem.field.attr_path(), problem.message),
        )
    }
}

/// The policy a leaf field belongs to.
fn parent(field: Field) -> Option<Field> {
    use Field::*;
    match field {
        RetryMaxAttempts | RetryInitialBackoff | RetryMaxBackoff | RetryMultiplier | RetryCodes => {
            Some(Retry)
        }
        HedgingMaxAttempts | HedgingDelay | HedgingNonFatalCodes => Some(Hedging),
        BreakerFailureThreshold
        | BreakerOpenTimeout
        | BreakerMaxOpenTimeout
        | BreakerHalfOpenMaxCalls
        | BreakerFailureRate
        | BreakerWindow
        | BreakerMinCalls
        | BreakerFailureCodes => Some(Breaker),
        ThrottleMaxTokens | ThrottleTokenRatio => Some(Throttle),
        Idempotent | Timeout | MaxTimeout | Retry | Hedging | Breaker | Throttle | Balancer => None,
    }
}

/// A parsed attribute: the service or method name it sets, and its policy.
#[derive(Debug)]
pub(crate) struct Args {
    /// `service = "..."` on the trait, `name = "..."` on a method.
    pub(crate) name: Option<LitStr>,
    /// The policy.
    pub(crate) level: Level,
}

/// Parses the arguments of one attribute. Mistakes are recorded in `errors`; the
/// result holds everything that could be read.
pub(crate) fn parse(tokens: TokenStream, span: Span, scope: Scope, errors: &mut Errors) -> Args {
    let mut parser = LevelParser {
        level: Level::empty(span),
        name: None,
        scope,
        errors: Errors::default(),
    };
    let result = (|input: ParseStream<'_>| {
        parser.parse(input);
        Ok(())
    })
    .parse2(tokens);
    // `parse` consumes every token it is given, so only an internal bug can fail here.
    if let Err(error) = result {
        parser.errors.push(error);
    }
    errors.append(parser.errors);
    Args {
        name: parser.name,
        level: parser.level,
    }
}

/// Reads one attribute's arguments into a [`Level`].
struct LevelParser {
    level: Level,
    name: Option<LitStr>,
    scope: Scope,
    errors: Errors,
}

/// Reads `key [= value | (list)], ...` until `input` is empty, calling `entry` for
/// each key in `keys` that was not seen before. Unknown keys, repeated keys, malformed
/// values and missing commas are recorded and skipped, so one pass finds them all.
fn entries(
    input: ParseStream<'_>,
    keys: &[&str],
    errors: &mut Errors,
    mut entry: impl FnMut(&Ident, ParseStream<'_>, &mut Errors) -> syn::Result<()>,
) {
    let mut seen: Vec<Ident> = Vec::new();
    while !input.is_empty() {
        let outcome = match input.call(Ident::parse_any) {
            Err(_) => Err(input.error(format!(
                "expected a key; valid keys are: {}",
                keys.join(", ")
            ))),
            Ok(key) => {
                let name = key.unraw().to_string();
                if !keys.contains(&name.as_str()) {
                    Err(syn::Error::new(
                        key.span(),
                        format!("unknown key `{name}`; valid keys are: {}", keys.join(", ")),
                    ))
                } else if seen.contains(&key) {
                    Err(syn::Error::new(
                        key.span(),
                        format!("`{name}` is set more than once; keep one"),
                    ))
                } else {
                    seen.push(key.clone());
                    entry(&key, input, errors)
                }
            }
        };
        if let Err(error) = outcome {
            errors.push(error);
            skip_entry(input);
        }
        if input.is_empty() {
            break;
        }
        if let Err(error) = input.parse::<Token![,]>() {
            errors.push(syn::Error::new(
                error.span(),
                "expected `,` between entries",
            ));
            skip_entry(input);
            let _ = input.parse::<Token![,]>();
        }
    }
}

/// Skips the rest of an entry: up to the next `,` of this list (groups are one token).
fn skip_entry(input: ParseStream<'_>) {
    while !input.is_empty() && !input.peek(Token![,]) {
        if input.parse::<TokenTree>().is_err() {
            break;
        }
    }
}

/// `=` after a key, with a message that says what the key takes.
fn eq(input: ParseStream<'_>, key: &Ident, expected: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>().map(drop)
    } else {
        Err(input.error(format!("expected {expected} after `{key}`")))
    }
}

/// A duration string: `"250ms"`. The error of a bad string is put on the string.
fn duration(input: ParseStream<'_>, key: &Ident, field: Field) -> syn::Result<(Duration, Span)> {
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        parse_duration(&lit.value())
            .map(|d| (d, lit.span()))
            .map_err(|message| {
                syn::Error::new(lit.span(), format!("{}: {message}", field.attr_path()))
            })
    } else if input.peek(LitInt) || input.peek(LitFloat) {
        let number: TokenTree = input.parse()?;
        Err(syn::Error::new(
            number.span(),
            format!("`{key}` takes a duration string with a unit, e.g. `{key} = \"{number}s\"`"),
        ))
    } else {
        Err(input.error(format!(
            "`{key}` takes a duration string, e.g. `{key} = \"250ms\"` or `\"2s\"`"
        )))
    }
}

/// A non-negative integer that fits in `u32`.
fn count(input: ParseStream<'_>, key: &Ident) -> syn::Result<(u32, Span)> {
    let negative = |span| {
        syn::Error::new(
            span,
            format!("`{key}` counts something, so it cannot be negative"),
        )
    };
    if input.peek(Token![-]) {
        return Err(negative(input.parse::<Token![-]>()?.span));
    }
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        if lit.base10_digits().starts_with('-') {
            return Err(negative(lit.span()));
        }
        lit.base10_parse::<u32>()
            .map(|n| (n, lit.span()))
            .map_err(|e| syn::Error::new(lit.span(), format!("`{key}`: {e}")))
    } else {
        Err(input.error(format!("`{key}` takes a whole number, e.g. `{key} = 3`")))
    }
}

/// A finite number, integer or decimal, with an optional minus sign (so that the
/// validator, not the parser, explains why a negative value is wrong).
fn number(input: ParseStream<'_>, key: &Ident) -> syn::Result<(f64, Span)> {
    let minus = input.parse::<Option<Token![-]>>()?;
    let (value, span) = if input.peek(LitFloat) {
        let lit: LitFloat = input.parse()?;
        (lit.base10_parse::<f64>()?, lit.span())
    } else if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        (lit.base10_parse::<f64>()?, lit.span())
    } else {
        return Err(input.error(format!("`{key}` takes a number, e.g. `{key} = 0.5`")));
    };
    if !value.is_finite() {
        return Err(syn::Error::new(
            span,
            format!("`{key}` must be a finite number"),
        ));
    }
    let span = minus.map_or(span, |m| m.span);
    Ok((if minus.is_some() { -value } else { value }, span))
}

/// A bracketed list of status codes: `[UNAVAILABLE, Aborted, "INTERNAL"]`. Every
/// unknown code is reported at its own token.
fn codes(
    input: ParseStream<'_>,
    key: &Ident,
    field: Field,
    errors: &mut Errors,
) -> syn::Result<(Vec<Code>, Span)> {
    if !input.peek(syn::token::Bracket) {
        return Err(input.error(format!(
            "`{key}` takes a list of status codes in brackets, e.g. `{key} = [UNAVAILABLE]`"
        )));
    }
    let content;
    let brackets = bracketed!(content in input);
    let mut codes = Vec::new();
    let items = content.parse_terminated(
        |item| {
            if item.peek(LitStr) {
                let lit: LitStr = item.parse()?;
                Ok((lit.value(), lit.span()))
            } else {
                let ident = item.call(Ident::parse_any)?;
                Ok((ident.to_string(), ident.span()))
            }
        },
        Token![,],
    )?;
    for (name, span) in items {
        match Code::from_name(&name) {
            Some(code) if !codes.contains(&code) => codes.push(code),
            Some(_) => {}
            None => errors.push(syn::Error::new(
                span,
                format!(
                    "{}: unknown status code `{name}`; valid codes are: {}",
                    field.attr_path(),
                    Code::valid_names()
                ),
            )),
        }
    }
    Ok((codes, brackets.span.join()))
}

/// How a sub-policy key (`retry`, `hedging`, `breaker`, `throttle`) was written.
enum Form {
    /// `key(...)`: the list follows.
    List(TokenStream),
    /// `key = default`.
    Default,
    /// `key = none`.
    None,
    /// `key = 3` (only `retry`).
    Count(u32, Span),
}

/// Reads what follows a sub-policy key; a count only where `count_allowed`.
fn form(input: ParseStream<'_>, key: &Ident, count_allowed: bool) -> syn::Result<Form> {
    let shapes = if count_allowed {
        format!("`{key} = N`, `{key} = default`, `{key} = none` or `{key}(...)`")
    } else {
        format!("`{key} = default`, `{key} = none` or `{key}(...)`")
    };
    if input.peek(syn::token::Paren) {
        let content;
        parenthesized!(content in input);
        return content.parse::<TokenStream>().map(Form::List);
    }
    if !input.peek(Token![=]) {
        return Err(input.error(format!("expected {shapes}")));
    }
    input.parse::<Token![=]>()?;
    if input.peek(Token![default]) {
        input.parse::<Token![default]>()?;
        Ok(Form::Default)
    } else if input.peek(kw::none) {
        input.parse::<kw::none>()?;
        Ok(Form::None)
    } else if count_allowed && input.peek(LitInt) {
        let (n, span) = count(input, key)?;
        Ok(Form::Count(n, span))
    } else {
        Err(input.error(format!("expected {shapes}")))
    }
}

impl LevelParser {
    fn parse(&mut self, input: ParseStream<'_>) {
        let keys = self.scope.keys();
        let mut errors = Errors::default();
        entries(input, &keys, &mut errors, |key, input, errors| {
            self.entry(key, input, errors)
        });
        self.errors.append(errors);
    }

    fn set(&mut self, field: Field, span: Span) {
        self.level.spans.insert(field, span);
    }

    fn entry(
        &mut self,
        key: &Ident,
        input: ParseStream<'_>,
        errors: &mut Errors,
    ) -> syn::Result<()> {
        match key.unraw().to_string().as_str() {
            "service" | "name" => {
                eq(input, key, "`= \"...\"`")?;
                let lit: LitStr = input.parse()?;
                check_name(&lit, self.scope)?;
                self.name = Some(lit);
            }
            "idempotent" => {
                // A flag unless `=` follows; anything else is left for the `,` check.
                let value = if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    input.parse::<LitBool>()?.value
                } else {
                    true
                };
                self.level.spec.idempotent = Some(value);
                self.set(Field::Idempotent, key.span());
            }
            "timeout" => {
                eq(input, key, "`= \"2s\"` or `= none`")?;
                let (timeout, span) = if input.peek(kw::none) {
                    (Toggle::Off, input.parse::<kw::none>()?.span)
                } else {
                    let (d, span) = duration(input, key, Field::Timeout)?;
                    (Toggle::On(d), span)
                };
                self.level.spec.timeout = Some(timeout);
                self.set(Field::Timeout, span);
            }
            "max_timeout" => {
                eq(input, key, "`= \"60s\"`")?;
                let (d, span) = duration(input, key, Field::MaxTimeout)?;
                self.level.spec.max_timeout = Some(d);
                self.set(Field::MaxTimeout, span);
            }
            "retry" => {
                let retry = match form(input, key, true)? {
                    Form::None => Toggle::Off,
                    Form::Default => Toggle::On(RetrySpec::default()),
                    Form::Count(n, span) => {
                        self.set(Field::RetryMaxAttempts, span);
                        Toggle::On(RetrySpec {
                            max_attempts: Some(n),
                            ..RetrySpec::default()
                        })
                    }
                    Form::List(list) => Toggle::On(self.sub(list, errors, Self::retry)),
                };
                self.level.spec.retry = Some(retry);
                self.set(Field::Retry, key.span());
            }
            "hedging" => {
                let hedging = self.toggle(form(input, key, false)?, errors, Self::hedging);
                self.level.spec.hedging = Some(hedging);
                self.set(Field::Hedging, key.span());
            }
            "breaker" => {
                let breaker = self.toggle(form(input, key, false)?, errors, Self::breaker);
                self.level.spec.breaker = Some(breaker);
                self.set(Field::Breaker, key.span());
            }
            "throttle" => {
                let throttle = self.toggle(form(input, key, false)?, errors, Self::throttle);
                self.level.spec.throttle = Some(throttle);
                self.set(Field::Throttle, key.span());
            }
            "balancer" => {
                eq(
                    input,
                    key,
                    "`= \"least_loaded\"` (or round_robin, peak_ewma, random)",
                )?;
                let lit: LitStr = input.parse()?;
                let Some(balancer) = tai_model::Balancer::from_name(&lit.value()) else {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "unknown balancer `{}`; valid balancers are: {}",
                            lit.value(),
                            tai_model::Balancer::valid_names()
                        ),
                    ));
                };
                self.level.spec.balancer = Some(balancer);
                self.set(Field::Balancer, lit.span());
            }
            other => unreachable!("key `{other}` is listed but not handled"),
        }
        Ok(())
    }

    /// The policy a `key = default | none | key(...)` form stands for.
    fn toggle<T: Default>(
        &mut self,
        form: Form,
        errors: &mut Errors,
        parse_list: fn(&mut Self, ParseStream<'_>, &mut T, &mut Errors),
    ) -> Toggle<T> {
        match form {
            Form::None => Toggle::Off,
            // `form(.., false)` never yields a count.
            Form::Default | Form::Count(..) => Toggle::On(T::default()),
            Form::List(list) => Toggle::On(self.sub(list, errors, parse_list)),
        }
    }

    /// Parses the list of a sub-policy with `parse_list`, which fills a default spec.
    fn sub<T: Default>(
        &mut self,
        list: TokenStream,
        errors: &mut Errors,
        parse_list: fn(&mut Self, ParseStream<'_>, &mut T, &mut Errors),
    ) -> T {
        let mut spec = T::default();
        let result = (|input: ParseStream<'_>| {
            parse_list(self, input, &mut spec, errors);
            Ok(())
        })
        .parse2(list);
        if let Err(error) = result {
            errors.push(error);
        }
        spec
    }

    fn retry(&mut self, input: ParseStream<'_>, spec: &mut RetrySpec, errors: &mut Errors) {
        entries(input, RETRY_KEYS, errors, |key, input, errors| {
            eq(input, key, "`=`")?;
            match key.to_string().as_str() {
                "max_attempts" => {
                    let (n, span) = count(input, key)?;
                    spec.max_attempts = Some(n);
                    self.set(Field::RetryMaxAttempts, span);
                }
                "initial_backoff" => {
                    let (d, span) = duration(input, key, Field::RetryInitialBackoff)?;
                    spec.initial_backoff = Some(d);
                    self.set(Field::RetryInitialBackoff, span);
                }
                "max_backoff" => {
                    let (d, span) = duration(input, key, Field::RetryMaxBackoff)?;
                    spec.max_backoff = Some(d);
                    self.set(Field::RetryMaxBackoff, span);
                }
                "multiplier" => {
                    let (m, span) = number(input, key)?;
                    spec.multiplier = Some(m);
                    self.set(Field::RetryMultiplier, span);
                }
                "codes" => {
                    let (codes, span) = codes(input, key, Field::RetryCodes, errors)?;
                    spec.codes = Some(codes);
                    self.set(Field::RetryCodes, span);
                }
                other => unreachable!("key `{other}` is listed but not handled"),
            }
            Ok(())
        });
    }

    fn hedging(&mut self, input: ParseStream<'_>, spec: &mut HedgingSpec, errors: &mut Errors) {
        entries(input, HEDGING_KEYS, errors, |key, input, errors| {
            eq(input, key, "`=`")?;
            match key.to_string().as_str() {
                "max_attempts" => {
                    let (n, span) = count(input, key)?;
                    spec.max_attempts = Some(n);
                    self.set(Field::HedgingMaxAttempts, span);
                }
                "delay" => {
                    let (d, span) = duration(input, key, Field::HedgingDelay)?;
                    spec.delay = Some(d);
                    self.set(Field::HedgingDelay, span);
                }
                "non_fatal_codes" => {
                    let (codes, span) = codes(input, key, Field::HedgingNonFatalCodes, errors)?;
                    spec.non_fatal_codes = Some(codes);
                    self.set(Field::HedgingNonFatalCodes, span);
                }
                other => unreachable!("key `{other}` is listed but not handled"),
            }
            Ok(())
        });
    }

    fn breaker(&mut self, input: ParseStream<'_>, spec: &mut BreakerSpec, errors: &mut Errors) {
        // The rate rule is written flat (`failure_rate`, `window`, `min_calls`); collect
        // its fields first, then decide whether it is on, off or inherited.
        let mut rate = RateRuleSpec::default();
        let mut rate_off = None;
        let mut rate_fields = Vec::new();
        entries(input, BREAKER_KEYS, errors, |key, input, errors| {
            eq(input, key, "`=`")?;
            match key.to_string().as_str() {
                "failure_threshold" => {
                    let (n, span) = count(input, key)?;
                    spec.failure_threshold = Some(n);
                    self.set(Field::BreakerFailureThreshold, span);
                }
                "open_timeout" => {
                    let (d, span) = duration(input, key, Field::BreakerOpenTimeout)?;
                    spec.open_timeout = Some(d);
                    self.set(Field::BreakerOpenTimeout, span);
                }
                "max_open_timeout" => {
                    let (d, span) = duration(input, key, Field::BreakerMaxOpenTimeout)?;
                    spec.max_open_timeout = Some(d);
                    self.set(Field::BreakerMaxOpenTimeout, span);
                }
                "half_open_max_calls" => {
                    let (n, span) = count(input, key)?;
                    spec.half_open_max_calls = Some(n);
                    self.set(Field::BreakerHalfOpenMaxCalls, span);
                }
                "failure_rate" => {
                    if input.peek(kw::none) {
                        let none = input.parse::<kw::none>()?;
                        rate_off = Some(none.span);
                        self.set(Field::BreakerFailureRate, none.span);
                    } else {
                        let (r, span) = number(input, key)?;
                        rate.threshold = Some(r);
                        self.set(Field::BreakerFailureRate, span);
                    }
                }
                "window" => {
                    let (d, span) = duration(input, key, Field::BreakerWindow)?;
                    rate.window = Some(d);
                    rate_fields.push((Field::BreakerWindow, key.span()));
                    self.set(Field::BreakerWindow, span);
                }
                "min_calls" => {
                    let (n, span) = count(input, key)?;
                    rate.min_calls = Some(n);
                    rate_fields.push((Field::BreakerMinCalls, key.span()));
                    self.set(Field::BreakerMinCalls, span);
                }
                "failure_codes" => {
                    let (codes, span) = codes(input, key, Field::BreakerFailureCodes, errors)?;
                    spec.failure_codes = Some(codes);
                    self.set(Field::BreakerFailureCodes, span);
                }
                other => unreachable!("key `{other}` is listed but not handled"),
            }
            Ok(())
        });
        spec.rate = if rate_off.is_some() {
            for (field, span) in rate_fields {
                errors.push(syn::Error::new(
                    span,
                    format!(
                        "{}: has no effect, because `failure_rate = none` turns the failure-rate rule off",
                        field.attr_path()
                    ),
                ));
            }
            Some(Toggle::Off)
        } else if rate != RateRuleSpec::default() {
            Some(Toggle::On(rate))
        } else {
            None
        };
    }

    fn throttle(&mut self, input: ParseStream<'_>, spec: &mut ThrottleSpec, errors: &mut Errors) {
        entries(input, THROTTLE_KEYS, errors, |key, input, _| {
            eq(input, key, "`=`")?;
            match key.to_string().as_str() {
                "max_tokens" => {
                    let (n, span) = count(input, key)?;
                    spec.max_tokens = Some(n);
                    self.set(Field::ThrottleMaxTokens, span);
                }
                "token_ratio" => {
                    let (r, span) = number(input, key)?;
                    spec.token_ratio = Some(r);
                    self.set(Field::ThrottleTokenRatio, span);
                }
                other => unreachable!("key `{other}` is listed but not handled"),
            }
            Ok(())
        });
    }
}

/// A service name is dot-separated identifiers (`tai.v1.Governor`); a method name is
/// one identifier. Both end up in the HTTP/2 path, so nothing else is allowed.
fn check_name(lit: &LitStr, scope: Scope) -> syn::Result<()> {
    let value = lit.value();
    let is_ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let ok = match scope {
        Scope::Service => value.split('.').all(is_ident),
        Scope::Method => is_ident(&value),
    };
    if ok {
        Ok(())
    } else {
        let expected = match scope {
            Scope::Service => "a fully qualified proto service name such as \"tai.v1.Governor\"",
            Scope::Method => "a proto method name such as \"ProposePolicy\"",
        };
        Err(syn::Error::new(
            lit.span(),
            format!("`{value}` is not {expected}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;
    use tai_model::CodeSet;

    fn parse_ok(scope: Scope, tokens: TokenStream) -> Args {
        let mut errors = Errors::default();
        let args = parse(tokens, Span::call_site(), scope, &mut errors);
        if let Err(e) = errors.finish() {
            panic!("unexpected errors: {:?}", messages(e));
        }
        args
    }

    fn parse_err(scope: Scope, tokens: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        parse(tokens, Span::call_site(), scope, &mut errors);
        messages(errors.finish().expect_err("expected errors"))
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
        assert!(errors[2].starts_with(
            "retry(codes): unknown status code `BOGUS`; valid codes are: OK, CANCELLED"
        ));
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
        assert!(
            errors[0].starts_with("`tai..Governor` is not a fully qualified proto service name")
        );
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
    fn problem_spans_fall_back_to_the_policy_then_the_attribute() {
        let args = parse_ok(Scope::Method, quote!(retry = 3));
        let level = args.level;
        assert!(level.spans.contains_key(&Field::Retry));
        assert!(!level.spans.contains_key(&Field::RetryCodes));
        // No panics and a span for every field, written or not.
        let _ = level.span_of(Field::RetryCodes);
        let _ = level.span_of(Field::Throttle);
    }
}
