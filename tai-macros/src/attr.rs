//! Parsing of `#[resilient(...)]` arguments into the shared model, driven by the
//! grammar table (`tai_model::FIELDS`).
//!
//! Each attribute becomes a [`Level`]: the [`PolicySpec`] the shared validator reads,
//! plus the span of every field as written, so that a [`Problem`] the validator
//! reports about a field can be shown at the token that wrote it.
//!
//! No key is spelled here. Every argument list — the attribute's and each
//! sub-policy's — is read by one loop ([`Parser::entries`]) over the table rows whose
//! parent is that list: it rejects unknown keys (listing every valid one) and
//! repeated keys for every list alike, reads the value by the row's kind
//! (`values.rs`), and writes it with the row's setter. Mistakes are recorded in the
//! expansion's [`Ctxt`], the rest of the entry is skipped, and parsing goes on.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser as _};
use syn::{Ident, LitBool, LitStr, Token};
use tai_model::{Field, FieldDef, PolicySpec, Problem, Value, ValueKind};

use crate::ctxt::Ctxt;
use crate::values::{self, Form, kw};

/// Where an attribute appears, which decides the key it takes besides the policy keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// On the trait: `service = "pkg.Service"`.
    Service,
    /// On a trait method: `name = "Method"`.
    Method,
}

impl Scope {
    /// The key naming the service or method.
    fn name_key(self) -> &'static str {
        match self {
            Scope::Service => "service",
            Scope::Method => "name",
        }
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
        [Some(field), related, field.parent()]
            .into_iter()
            .flatten()
            .find_map(|f| self.spans.get(&f).copied())
            .unwrap_or(self.span)
    }

    /// A [`Problem`] the validator found at this level, as a spanned error.
    pub(crate) fn error(&self, problem: &Problem) -> syn::Error {
        syn::Error::new(self.span_of(problem.field), problem.in_attribute())
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

/// Parses the arguments of one attribute. Mistakes are recorded in `ctxt`; the
/// result holds everything that could be read.
pub(crate) fn parse(tokens: TokenStream, span: Span, scope: Scope, ctxt: &mut Ctxt) -> Args {
    let mut parser = Parser {
        level: Level::empty(span),
        name: None,
        scope,
        ctxt,
    };
    parser.parse_list(tokens, None);
    Args {
        name: parser.name,
        level: parser.level,
    }
}

/// Reads one attribute's arguments into a [`Level`].
struct Parser<'c> {
    level: Level,
    name: Option<LitStr>,
    scope: Scope,
    ctxt: &'c mut Ctxt,
}

impl Parser<'_> {
    /// Parses `tokens` as the argument list of `parent` (`None`: the attribute's).
    fn parse_list(&mut self, tokens: TokenStream, parent: Option<Field>) {
        let result = (|input: ParseStream<'_>| {
            self.list(input, parent);
            Ok(())
        })
        .parse2(tokens);
        // `list` consumes every token it is given, so only an internal bug fails here.
        if let Err(error) = result {
            self.ctxt.error(error);
        }
    }

    /// Reads the entries of the list of `parent`, then reports entries that took no
    /// effect because a sibling turned their rule off.
    fn list(&mut self, input: ParseStream<'_>, parent: Option<Field>) {
        let mut keys: Vec<&'static str> = Vec::new();
        if parent.is_none() {
            keys.push(self.scope.name_key());
        }
        keys.extend(Field::children(parent).map(|def| def.key));
        let mut written: Vec<(&'static FieldDef, Span)> = Vec::new();
        self.entries(input, &keys, |parser, key, input| {
            let name = key.unraw().to_string();
            match Field::find(parent, &name) {
                Some(def) => {
                    parser.entry(def, key, input)?;
                    written.push((def, key.span()));
                }
                None => parser.name(key, input)?,
            }
            Ok(())
        });
        for (def, span) in written {
            if (def.get)(&self.level.spec).is_some() {
                continue;
            }
            let off = Field::children(parent).find(|d| {
                matches!(d.kind, ValueKind::Rule { .. })
                    && (d.get)(&self.level.spec) == Some(Value::Off)
            });
            if let Some(ValueKind::Rule { rule, .. }) = off.map(|d| d.kind) {
                self.ctxt.error(syn::Error::new(
                    span,
                    format!(
                        "{}: has no effect, because `{} = none` turns {rule} off",
                        def.field.attr_path(),
                        off.map_or("", |d| d.key),
                    ),
                ));
            }
        }
    }

    /// Reads `key [= value | (list)], ...` until `input` is empty, calling `entry` for
    /// each key in `keys` that was not seen before. Unknown keys, repeated keys,
    /// malformed values and missing commas are recorded and skipped, so one pass
    /// finds them all.
    fn entries(
        &mut self,
        input: ParseStream<'_>,
        keys: &[&str],
        mut entry: impl FnMut(&mut Self, &Ident, ParseStream<'_>) -> syn::Result<()>,
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
                        entry(self, &key, input)
                    }
                }
            };
            if let Err(error) = outcome {
                self.ctxt.error(error);
                values::skip_entry(input);
            }
            if input.is_empty() {
                break;
            }
            if let Err(error) = input.parse::<Token![,]>() {
                self.ctxt.error(syn::Error::new(
                    error.span(),
                    "expected `,` between entries",
                ));
                values::skip_entry(input);
                let _ = input.parse::<Token![,]>();
            }
        }
    }

    /// `service = "pkg.Service"` or `name = "Method"`.
    fn name(&mut self, key: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
        values::eq(input, key, "`= \"...\"`")?;
        let lit: LitStr = input.parse()?;
        check_name(&lit, self.scope)?;
        self.name = Some(lit);
        Ok(())
    }

    /// Reads the value of one row by its kind and writes it into the level.
    fn entry(
        &mut self,
        def: &'static FieldDef,
        key: &Ident,
        input: ParseStream<'_>,
    ) -> syn::Result<()> {
        let none = |input: ParseStream<'_>| -> syn::Result<Option<Span>> {
            if input.peek(kw::none) {
                Ok(Some(input.parse::<kw::none>()?.span))
            } else {
                Ok(None)
            }
        };
        let (value, span) = match def.kind {
            ValueKind::Flag => {
                // A flag unless `=` follows; anything else is left for the `,` check.
                let value = if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    input.parse::<LitBool>()?.value
                } else {
                    true
                };
                (Value::Flag(value), key.span())
            }
            ValueKind::Duration => {
                values::eq(input, key, "`= \"2s\"`")?;
                let (d, span) = values::duration(input, key, def.field)?;
                (Value::Duration(d), span)
            }
            ValueKind::DurationOrNone => {
                values::eq(input, key, "`= \"2s\"` or `= none`")?;
                match none(input)? {
                    Some(span) => (Value::Off, span),
                    None => {
                        let (d, span) = values::duration(input, key, def.field)?;
                        (Value::Duration(d), span)
                    }
                }
            }
            ValueKind::Count => {
                values::eq(input, key, "`= 3`")?;
                let (n, span) = values::count(input, key)?;
                (Value::Count(n), span)
            }
            ValueKind::Number => {
                values::eq(input, key, "`= 0.5`")?;
                let (x, span) = values::number(input, key)?;
                (Value::Number(x), span)
            }
            ValueKind::Rule { .. } => {
                values::eq(input, key, "`= 0.5` or `= none`")?;
                match none(input)? {
                    Some(span) => (Value::Off, span),
                    None => {
                        let (x, span) = values::number(input, key)?;
                        (Value::Number(x), span)
                    }
                }
            }
            ValueKind::Codes => {
                values::eq(input, key, "`= [UNAVAILABLE]`")?;
                let (codes, span) = values::codes(input, key, def.field, self.ctxt)?;
                (Value::Codes(codes), span)
            }
            ValueKind::Balancer => {
                values::eq(
                    input,
                    key,
                    "`= \"least_loaded\"` (or round_robin, peak_ewma, random)",
                )?;
                let (b, span) = values::balancer(input)?;
                (Value::Balancer(b), span)
            }
            ValueKind::Names => {
                values::eq(input, key, "`= [\"policies.write\"]`")?;
                let (names, span) = values::names(input, key, def.field, self.ctxt)?;
                (Value::Names(names), span)
            }
            ValueKind::Policy { shorthand } => {
                let form = values::form(input, key, shorthand.is_some())?;
                self.policy(def, key.span(), shorthand, form);
                return Ok(());
            }
        };
        self.write(def, value, span);
        Ok(())
    }

    /// A sub-policy as `key = none`, `key = default`, `key = N` or `key(...)`.
    fn policy(&mut self, def: &'static FieldDef, span: Span, shorthand: Option<Field>, form: Form) {
        match form {
            Form::None => self.write(def, Value::Off, span),
            Form::Default => self.write(def, Value::On, span),
            Form::Count(n, count_span) => {
                self.write(def, Value::On, span);
                if let Some(field) = shorthand {
                    self.write(field.def(), Value::Count(n), count_span);
                }
            }
            Form::List(list) => {
                self.write(def, Value::On, span);
                self.parse_list(list, Some(def.field));
            }
        }
    }

    /// Sets a field and remembers where it was written.
    fn write(&mut self, def: &FieldDef, value: Value, span: Span) {
        (def.set)(&mut self.level.spec, value);
        self.level.spans.insert(def.field, span);
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
mod tests;
