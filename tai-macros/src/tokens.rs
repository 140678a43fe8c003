//! Resolved policies as the `const` data the client reads, written the way a person
//! would write it: `Duration::from_millis(100)`, `CodeSet::of(&[Code::Unavailable])`.
//!
//! Each value the expansion embeds gets a `ToTokens` impl on the [`Data`] wrapper (the
//! resolved types live in `tai-model`, so they cannot implement `quote`'s trait
//! themselves), the way tracing-attributes gives each argument its own type. A
//! policy is written as its `const fn` constructor with what it always has, then a
//! `with_..` setter per optional part that is set ([`Setters`]): the runtime's types
//! are `#[non_exhaustive]`, and a call names each value where a literal of
//! `None`s would not. Every
//! path is absolute (`::tai_runtime::...`, `::core::...`) so that the expansion
//! compiles next to any user item.

use std::time::Duration;

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{ToTokens, quote};
use tai_model::{
    Balancer, CodeSet, ResolvedBreaker, ResolvedHedging, ResolvedRateRule, ResolvedRetry,
    ResolvedThrottle,
};

/// A value of the model, as the tokens of its runtime counterpart.
pub(crate) struct Data<T>(pub(crate) T);

impl ToTokens for Data<&u32> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        Literal::u32_unsuffixed(*self.0).to_tokens(tokens);
    }
}

impl ToTokens for Data<&f64> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        // Values are finite (checked while parsing); a non-finite one is only possible
        // in the best-effort expansion of an invalid policy, which is reported anyway.
        let value = if self.0.is_finite() { *self.0 } else { 0.0 };
        Literal::f64_unsuffixed(value).to_tokens(tokens);
    }
}

/// A duration in the coarsest unit that holds it exactly: `from_secs(30)`,
/// `from_millis(250)`.
impl ToTokens for Data<&Duration> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let nanos = self.0.as_nanos();
        for (scale, unit) in [
            (1_000_000_000, "from_secs"),
            (1_000_000, "from_millis"),
            (1_000, "from_micros"),
            (1, "from_nanos"),
        ] {
            if nanos.is_multiple_of(scale)
                && let Ok(value) = u64::try_from(nanos / scale)
            {
                let unit = Ident::new(unit, Span::call_site());
                let value = Literal::u64_unsuffixed(value);
                tokens.extend(quote!(::core::time::Duration::#unit(#value)));
                return;
            }
        }
        let secs = Literal::u64_unsuffixed(self.0.as_secs());
        let nanos = Literal::u32_unsuffixed(self.0.subsec_nanos());
        tokens.extend(quote!(::core::time::Duration::new(#secs, #nanos)));
    }
}

/// `CodeSet::of(&[Code::Unavailable, Code::Aborted])`, or `CodeSet::EMPTY`.
impl ToTokens for Data<&CodeSet> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        if self.0.is_empty() {
            tokens.extend(quote!(::tai_runtime::policy::CodeSet::EMPTY));
            return;
        }
        let codes = self
            .0
            .codes()
            .into_iter()
            .map(|c| Ident::new(c.variant(), Span::call_site()));
        tokens.extend(quote!(
            ::tai_runtime::policy::CodeSet::of(&[#(::tai_runtime::Code::#codes),*])
        ));
    }
}

impl ToTokens for Data<&Balancer> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let variant = Ident::new(self.0.variant(), Span::call_site());
        tokens.extend(quote!(::tai_runtime::config::BalancerKind::#variant));
    }
}

impl ToTokens for Data<&ResolvedRetry> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let r = self.0;
        let max_attempts = Data(&r.max_attempts);
        let initial_backoff = Data(&r.initial_backoff);
        let max_backoff = Data(&r.max_backoff);
        let multiplier = Data(&r.multiplier);
        let retryable = Data(&r.codes);
        tokens.extend(quote! {
            ::tai_runtime::policy::RetryPolicy::new(
                #max_attempts,
                #initial_backoff,
                #max_backoff,
                #multiplier,
                #retryable,
            )
        });
    }
}

impl ToTokens for Data<&ResolvedHedging> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let h = self.0;
        let max_attempts = Data(&h.max_attempts);
        let delay = Data(&h.delay);
        let non_fatal = Data(&h.non_fatal_codes);
        tokens.extend(quote! {
            ::tai_runtime::policy::HedgingPolicy::new(#max_attempts, #delay, #non_fatal)
        });
    }
}

impl ToTokens for Data<&ResolvedRateRule> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let r = self.0;
        let threshold = Data(&r.threshold);
        let window = Data(&r.window);
        let min_calls = Data(&r.min_calls);
        tokens.extend(quote! {
            ::tai_runtime::policy::RateRule::new(#threshold, #window, #min_calls)
        });
    }
}

impl ToTokens for Data<&ResolvedBreaker> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let b = self.0;
        let failure_threshold = Data(&b.failure_threshold);
        let open_timeout = Data(&b.open_timeout);
        let max_open_timeout = Data(&b.max_open_timeout);
        let half_open_max_calls = Data(&b.half_open_max_calls);
        let failure_codes = Data(&b.failure_codes);
        tokens.extend(quote! {
            ::tai_runtime::policy::BreakerPolicy::new(
                #failure_threshold,
                #open_timeout,
                #max_open_timeout,
                #half_open_max_calls,
                #failure_codes,
            )
        });
        if let Some(rate) = &b.rate {
            let rate = Data(rate);
            tokens.extend(quote!(.with_rate(#rate)));
        }
    }
}

impl ToTokens for Data<&ResolvedThrottle> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let max_tokens = Data(&self.0.max_tokens);
        let token_ratio = Data(&self.0.token_ratio);
        tokens.extend(quote! {
            ::tai_runtime::policy::ThrottlePolicy::new(#max_tokens, #token_ratio)
        });
    }
}

/// `.with_..(value)` for each optional part that is set, in order: a policy's
/// constructor takes what it always has, and a setter names each part it may have.
pub(crate) struct Setters(pub(crate) Vec<TokenStream>);

impl Setters {
    /// A setter `.#name(#value)` if `value` is set.
    pub(crate) fn set<T>(mut self, name: &str, value: Option<T>) -> Setters
    where
        Data<T>: ToTokens,
    {
        if let Some(value) = value {
            let name = Ident::new(name, Span::call_site());
            let value = Data(value);
            self.0.push(quote!(.#name(#value)));
        }
        self
    }
}

impl ToTokens for Setters {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(self.0.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show<T>(value: T) -> String
    where
        Data<T>: ToTokens,
    {
        Data(value).to_token_stream().to_string().replace(' ', "")
    }

    #[test]
    fn durations_in_their_coarsest_exact_unit() {
        assert_eq!(
            show(&Duration::from_secs(30)),
            "::core::time::Duration::from_secs(30)"
        );
        assert_eq!(
            show(&Duration::from_millis(1500)),
            "::core::time::Duration::from_millis(1500)"
        );
        assert_eq!(
            show(&Duration::from_nanos(7)),
            "::core::time::Duration::from_nanos(7)"
        );
        assert_eq!(
            show(&Duration::MAX),
            "::core::time::Duration::new(18446744073709551615,999999999)"
        );
    }

    #[test]
    fn code_sets_by_name() {
        let set = CodeSet::of(&[tai_model::Code::Unavailable, tai_model::Code::Aborted]);
        assert_eq!(
            show(&set),
            "::tai_runtime::policy::CodeSet::of(&[::tai_runtime::Code::Aborted,::tai_runtime::Code::Unavailable])"
        );
        assert_eq!(
            show(&CodeSet::EMPTY),
            "::tai_runtime::policy::CodeSet::EMPTY"
        );
    }
}
