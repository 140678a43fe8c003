//! Reading one value of each kind the grammar table names (a duration, a count, a
//! list of codes, the form of a sub-policy), with errors that say what the key takes.
//!
//! These are plain functions over a `ParseStream`, one per `tai_model::ValueKind`, so
//! that the table-driven parser in `attr.rs` is only dispatch.

use std::time::Duration;

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::{Ident, LitFloat, LitInt, LitStr, Token, bracketed, parenthesized};
use tai_model::{Balancer, Code, Field, check_access_name, parse_duration};

use crate::ctxt::Ctxt;

/// Keywords that appear as values.
pub(crate) mod kw {
    syn::custom_keyword!(none);
}

/// Skips the rest of an entry: up to the next `,` of this list (groups are one token).
pub(crate) fn skip_entry(input: ParseStream<'_>) {
    while !input.is_empty() && !input.peek(Token![,]) {
        if input.parse::<TokenTree>().is_err() {
            break;
        }
    }
}

/// `=` after a key, with a message that says what the key takes.
pub(crate) fn eq(input: ParseStream<'_>, key: &Ident, expected: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>().map(drop)
    } else {
        Err(input.error(format!("expected {expected} after `{key}`")))
    }
}

/// A duration string: `"250ms"`. The error of a bad string is put on the string.
pub(crate) fn duration(
    input: ParseStream<'_>,
    key: &Ident,
    field: Field,
) -> syn::Result<(Duration, Span)> {
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
pub(crate) fn count(input: ParseStream<'_>, key: &Ident) -> syn::Result<(u32, Span)> {
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
pub(crate) fn number(input: ParseStream<'_>, key: &Ident) -> syn::Result<(f64, Span)> {
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
pub(crate) fn codes(
    input: ParseStream<'_>,
    key: &Ident,
    field: Field,
    ctxt: &mut Ctxt,
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
            None => ctxt.error(syn::Error::new(
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

/// A bracketed list of scope or role names: `["policies.write", "admin"]`. Every
/// malformed name is reported at its own string and left out.
pub(crate) fn names(
    input: ParseStream<'_>,
    key: &Ident,
    field: Field,
    ctxt: &mut Ctxt,
) -> syn::Result<(Vec<String>, Span)> {
    if !input.peek(syn::token::Bracket) {
        return Err(input.error(format!(
            "`{key}` takes a list of strings in brackets, e.g. `{key} = [\"policies.write\"]`"
        )));
    }
    let content;
    let brackets = bracketed!(content in input);
    let mut names: Vec<String> = Vec::new();
    while !content.is_empty() {
        if content.peek(LitStr) {
            let lit: LitStr = content.parse()?;
            let name = lit.value();
            match check_access_name(&name) {
                Ok(()) if !names.contains(&name) => names.push(name),
                Ok(()) => {}
                Err(why) => ctxt.error(syn::Error::new(
                    lit.span(),
                    format!("{}: `{name}` {why}", field.attr_path()),
                )),
            }
        } else {
            let token: TokenTree = content.parse()?;
            ctxt.error(syn::Error::new(
                token.span(),
                format!("`{key}` takes names as strings, e.g. `{key} = [\"{token}\"]`"),
            ));
            skip_entry(&content);
        }
        if !content.is_empty() {
            content.parse::<Token![,]>()?;
        }
    }
    Ok((names, brackets.span.join()))
}

/// How a sub-policy key (`retry`, `hedging`, `breaker`, `throttle`) was written.
pub(crate) enum Form {
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
pub(crate) fn form(input: ParseStream<'_>, key: &Ident, count_allowed: bool) -> syn::Result<Form> {
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

/// A balancer name: `"least_loaded"`.
pub(crate) fn balancer(input: ParseStream<'_>) -> syn::Result<(Balancer, Span)> {
    let lit: LitStr = input.parse()?;
    match Balancer::from_name(&lit.value()) {
        Some(balancer) => Ok((balancer, lit.span())),
        None => Err(syn::Error::new(
            lit.span(),
            format!(
                "unknown balancer `{}`; valid balancers are: {}",
                lit.value(),
                Balancer::valid_names()
            ),
        )),
    }
}
