//! The client half of the generated code: per service, a module holding the service
//! trait annotated with `#[::tai_runtime::resilient(...)]`.
//!
//! tai-build writes no policy code of its own: it translates the proto options into
//! the attribute a user would write by hand, and `tai-macros` expands it. The trait
//! attribute carries the file and service levels merged into one (see [`merge`]); each
//! method attribute carries that method's own level. Only what the `.proto` file
//! wrote is emitted, never filled-in defaults, so the output reads like the source.

use std::time::Duration;

use heck::ToSnakeCase;
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use tai_model::{Code, PolicySpec, Toggle, format_duration};

use crate::check::ServicePolicy;

/// The file and service levels as one trait attribute: [`tai_model::merge`], written
/// without what goes without saying (a level that turns retry on already turns
/// hedging off, and the other way round).
pub(crate) fn merge(outer: &PolicySpec, inner: &PolicySpec) -> PolicySpec {
    let mut merged = tai_model::merge(outer, inner);
    if matches!(merged.retry, Some(Toggle::On(_))) && merged.hedging == Some(Toggle::Off) {
        merged.hedging = None;
    }
    if matches!(merged.hedging, Some(Toggle::On(_))) && merged.retry == Some(Toggle::Off) {
        merged.retry = None;
    }
    merged
}

/// The name of the client module of a service: `governor_client` for `Governor`.
pub(crate) fn module_name(service_proto_name: &str) -> String {
    format!("{}_client", service_proto_name.to_snake_case())
}

/// The fully qualified proto name of a service: `tai.v1.Governor`.
pub(crate) fn full_name(service: &prost_build::Service) -> String {
    if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    }
}

/// The Rust source of the client module of `service`.
pub(crate) fn client_module(service: &prost_build::Service, policy: &ServicePolicy) -> String {
    let full_name = full_name(service);
    let module = module_name(&service.proto_name);
    let trait_ident = format_ident!("{}", service.name);

    let mut trait_args = vec![quote!(service = #full_name)];
    trait_args.extend(policy_args(&merge(&policy.file, &policy.service)));

    let mut methods = String::new();
    for (index, method) in service.methods.iter().enumerate() {
        let empty = PolicySpec::default();
        let spec = policy.methods.get(index).unwrap_or(&empty);
        let mut docs = doc_comments(&method.comments, 2);
        if docs.is_empty() {
            docs = format!("        /// Calls `{full_name}/{}`.\n", method.proto_name);
        }
        methods.push_str(&docs);
        let name = &method.proto_name;
        let mut args = vec![quote!(name = #name)];
        args.extend(policy_args(spec));
        let ident = format_ident!("{}", method.name);
        let request = message_type(&method.input_type);
        let response = message_type(&method.output_type);
        let request = if method.client_streaming {
            quote!(::tai_runtime::RequestStream<#request>)
        } else {
            request
        };
        let response = if method.server_streaming {
            quote!(::tai_runtime::ResponseStream<#response>)
        } else {
            response
        };
        let item = quote! {
            #[resilient(#(#args),*)]
            fn #ident(&self, request: #request) -> impl ::core::future::Future<
                Output = ::core::result::Result<#response, ::tai_runtime::Status>,
            > + ::core::marker::Send;
        };
        methods.push_str(&item.to_string());
        methods.push('\n');
    }

    let mut trait_docs = doc_comments(&service.comments, 1);
    if trait_docs.is_empty() {
        trait_docs = format!("    /// The RPCs of `{full_name}`.\n");
    }
    let attribute = quote!(#[::tai_runtime::resilient(#(#trait_args),*)]);
    let allow = crate::generator::allow_proto_shaped_lints();
    let allow = quote!(#allow);
    format!(
        "/// Generated client of `{full_name}`.\n\
         ///\n\
         /// The `#[resilient]` attribute on the trait below expands to the typed client,\n\
         /// with the policies written in the `.proto` file.\n\
         pub mod {module} {{\n\
         {allow}\n\
         {trait_docs}    {attribute}\n    pub trait {trait_ident} {{\n{methods}    }}\n}}\n"
    )
}

/// prost's comments as `///` lines (its own sanitizing), indented by `indent` levels.
fn doc_comments(comments: &prost_build::Comments, indent: u8) -> String {
    let only_docs = prost_build::Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    let mut buf = String::new();
    only_docs.append_with_indent(indent, &mut buf);
    buf
}

/// The Rust type of a message as seen from inside the client module: prost's path
/// is relative to the package module, so it gets `super::` unless it is absolute
/// (`::...`, `crate::...`) or a built-in (`()`, `bool`, ... for well-known wrappers).
pub(crate) fn message_type(rust_type: &str) -> TokenStream {
    const BUILT_IN: [&str; 8] = ["()", "bool", "i32", "i64", "u32", "u64", "f32", "f64"];
    let text = if rust_type.starts_with("::")
        || rust_type.starts_with("crate::")
        || BUILT_IN.contains(&rust_type)
    {
        rust_type.to_owned()
    } else {
        format!("super::{rust_type}")
    };
    // prost only writes paths here, so this parses; `syn::Type` keeps `r#` idents.
    syn::parse_str::<syn::Type>(&text)
        .map(|ty| quote!(#ty))
        .unwrap_or_else(|_| quote!(()))
}

/// The `#[resilient]` arguments for what one level sets, in the attribute grammar.
pub(crate) fn policy_args(spec: &PolicySpec) -> Vec<TokenStream> {
    let mut args = Vec::new();
    match spec.idempotent {
        Some(true) => args.push(quote!(idempotent)),
        Some(false) => args.push(quote!(idempotent = false)),
        None => {}
    }
    match &spec.timeout {
        Some(Toggle::On(d)) => {
            let d = duration(*d);
            args.push(quote!(timeout = #d));
        }
        Some(Toggle::Off) => args.push(quote!(timeout = none)),
        None => {}
    }
    if let Some(d) = spec.max_timeout {
        let d = duration(d);
        args.push(quote!(max_timeout = #d));
    }
    if let Some(retry) = &spec.retry {
        args.push(sub_policy("retry", retry, |r| {
            let mut a = Vec::new();
            push_count(&mut a, "max_attempts", r.max_attempts);
            push_duration(&mut a, "initial_backoff", r.initial_backoff);
            push_duration(&mut a, "max_backoff", r.max_backoff);
            push_float(&mut a, "multiplier", r.multiplier);
            push_codes(&mut a, "codes", &r.codes);
            a
        }));
    }
    if let Some(hedging) = &spec.hedging {
        args.push(sub_policy("hedging", hedging, |h| {
            let mut a = Vec::new();
            push_count(&mut a, "max_attempts", h.max_attempts);
            push_duration(&mut a, "delay", h.delay);
            push_codes(&mut a, "non_fatal_codes", &h.non_fatal_codes);
            a
        }));
    }
    if let Some(breaker) = &spec.breaker {
        args.push(sub_policy("breaker", breaker, |b| {
            let mut a = Vec::new();
            push_count(&mut a, "failure_threshold", b.failure_threshold);
            push_duration(&mut a, "open_timeout", b.open_timeout);
            push_duration(&mut a, "max_open_timeout", b.max_open_timeout);
            push_count(&mut a, "half_open_max_calls", b.half_open_max_calls);
            match &b.rate {
                Some(Toggle::Off) => a.push(quote!(failure_rate = none)),
                Some(Toggle::On(rate)) => {
                    push_float(&mut a, "failure_rate", rate.threshold);
                    push_duration(&mut a, "window", rate.window);
                    push_count(&mut a, "min_calls", rate.min_calls);
                }
                None => {}
            }
            push_codes(&mut a, "failure_codes", &b.failure_codes);
            a
        }));
    }
    if let Some(balancer) = spec.balancer {
        let name = balancer.name();
        args.push(quote!(balancer = #name));
    }
    if let Some(throttle) = &spec.throttle {
        args.push(sub_policy("throttle", throttle, |t| {
            let mut a = Vec::new();
            push_count(&mut a, "max_tokens", t.max_tokens);
            push_float(&mut a, "token_ratio", t.token_ratio);
            a
        }));
    }
    args
}

/// `key = none`, `key = default` (on, nothing set) or `key(a = .., b = ..)`.
fn sub_policy<T>(
    key: &str,
    toggle: &Toggle<T>,
    fields: impl FnOnce(&T) -> Vec<TokenStream>,
) -> TokenStream {
    let key = format_ident!("{key}");
    match toggle {
        Toggle::Off => quote!(#key = none),
        Toggle::On(spec) => {
            let fields = fields(spec);
            if fields.is_empty() {
                quote!(#key = default)
            } else {
                quote!(#key(#(#fields),*))
            }
        }
    }
}

fn duration(d: Duration) -> Literal {
    Literal::string(&format_duration(d))
}

fn push_count(args: &mut Vec<TokenStream>, key: &str, value: Option<u32>) {
    if let Some(n) = value {
        let key = format_ident!("{key}");
        let n = Literal::u32_unsuffixed(n);
        args.push(quote!(#key = #n));
    }
}

fn push_duration(args: &mut Vec<TokenStream>, key: &str, value: Option<Duration>) {
    if let Some(d) = value {
        let key = format_ident!("{key}");
        let d = duration(d);
        args.push(quote!(#key = #d));
    }
}

/// Floats always render with a decimal point or exponent (`2.0`, never `2`); a
/// negative value keeps its sign as a separate `-` token, which the grammar reads.
fn push_float(args: &mut Vec<TokenStream>, key: &str, value: Option<f64>) {
    if let Some(f) = value {
        let key = format_ident!("{key}");
        let lit = Literal::f64_unsuffixed(f.abs());
        if f.is_sign_negative() {
            args.push(quote!(#key = -#lit));
        } else {
            args.push(quote!(#key = #lit));
        }
    }
}

fn push_codes(args: &mut Vec<TokenStream>, key: &str, value: &Option<Vec<Code>>) {
    if let Some(codes) = value {
        let key = format_ident!("{key}");
        let codes = codes.iter().map(|c| format_ident!("{}", c.name()));
        args.push(quote!(#key = [#(#codes),*]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tai_model::{BreakerSpec, HedgingSpec, RateRuleSpec, RetrySpec, ThrottleSpec};
    use tai_model::{Code, resolve};

    /// A small deterministic generator (no dependency): xorshift.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
            if self.pick(2) == 0 {
                None
            } else {
                Some(f(self))
            }
        }
        fn toggle<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<Toggle<T>> {
            match self.pick(4) {
                0 | 1 => None,
                2 => Some(Toggle::Off),
                _ => Some(Toggle::On(f(self))),
            }
        }
        fn ms(&mut self) -> Duration {
            Duration::from_millis(1 + self.pick(5) * 500)
        }
        fn codes(&mut self) -> Vec<Code> {
            let all = [Code::Unavailable, Code::Aborted, Code::Internal];
            let n = 1 + self.pick(3) as usize;
            all[..n].to_vec()
        }
        fn spec(&mut self) -> PolicySpec {
            PolicySpec {
                idempotent: self.opt(|g| g.pick(2) == 0),
                timeout: self.toggle(Gen::ms),
                max_timeout: self.opt(Gen::ms),
                retry: self.toggle(|g| RetrySpec {
                    max_attempts: g.opt(|g| 2 + g.pick(4) as u32),
                    initial_backoff: g.opt(Gen::ms),
                    max_backoff: g.opt(Gen::ms),
                    multiplier: g.opt(|g| 1.0 + g.pick(3) as f64),
                    codes: g.opt(Gen::codes),
                }),
                hedging: self.toggle(|g| HedgingSpec {
                    max_attempts: g.opt(|g| 2 + g.pick(4) as u32),
                    delay: g.opt(Gen::ms),
                    non_fatal_codes: g.opt(Gen::codes),
                }),
                breaker: self.toggle(|g| BreakerSpec {
                    failure_threshold: g.opt(|g| 1 + g.pick(9) as u32),
                    open_timeout: g.opt(Gen::ms),
                    max_open_timeout: g.opt(Gen::ms),
                    half_open_max_calls: g.opt(|g| 1 + g.pick(3) as u32),
                    rate: g.toggle(|g| RateRuleSpec {
                        threshold: g.opt(|g| 0.25 * (1 + g.pick(4)) as f64),
                        window: g.opt(Gen::ms),
                        min_calls: g.opt(|g| 1 + g.pick(30) as u32),
                    }),
                    failure_codes: g.opt(Gen::codes),
                }),
                throttle: self.toggle(|g| ThrottleSpec {
                    max_tokens: g.opt(|g| 1 + g.pick(100) as u32),
                    token_ratio: g.opt(|g| 0.1 * (1 + g.pick(5)) as f64),
                }),
                balancer: self.opt(|g| tai_model::Balancer::ALL[g.pick(4) as usize]),
            }
        }
    }

    #[test]
    fn merge_means_what_resolve_means() {
        let mut g = Gen(0x5eed_1234_abcd_ef01);
        for _ in 0..20_000 {
            let (file, service, method) = (g.spec(), g.spec(), g.spec());
            // A level that turns both retry and hedging on is rejected by validation
            // before codegen, so it never reaches `merge`.
            let both = |s: &PolicySpec| {
                matches!(s.retry, Some(Toggle::On(_))) && matches!(s.hedging, Some(Toggle::On(_)))
            };
            if both(&file) || both(&service) {
                continue;
            }
            let merged = merge(&file, &service);
            assert!(!both(&merged), "{file:?}\n{service:?}");
            assert_eq!(
                resolve(&[&merged, &method]),
                resolve(&[&file, &service, &method]),
                "\nfile: {file:?}\nservice: {service:?}\nmethod: {method:?}"
            );
            assert_eq!(resolve(&[&merged]), resolve(&[&file, &service]));
        }
    }

    #[test]
    fn renders_the_attribute_grammar() {
        let spec = PolicySpec {
            idempotent: Some(true),
            timeout: Some(Toggle::Off),
            retry: Some(Toggle::On(RetrySpec {
                max_attempts: Some(4),
                initial_backoff: Some(Duration::from_millis(100)),
                multiplier: Some(2.0),
                codes: Some(vec![Code::Unavailable, Code::Aborted]),
                ..RetrySpec::default()
            })),
            hedging: Some(Toggle::Off),
            breaker: Some(Toggle::On(BreakerSpec {
                rate: Some(Toggle::Off),
                ..BreakerSpec::default()
            })),
            throttle: Some(Toggle::On(ThrottleSpec::default())),
            ..PolicySpec::default()
        };
        let args = policy_args(&spec);
        let text = quote!(#(#args),*).to_string();
        assert_eq!(
            text,
            "idempotent , timeout = none , retry (max_attempts = 4 , initial_backoff = \"100ms\" , \
             multiplier = 2.0 , codes = [UNAVAILABLE , ABORTED]) , hedging = none , \
             breaker (failure_rate = none) , throttle = default"
        );
    }

    #[test]
    fn message_types_from_the_client_module() {
        let show = |t: &str| message_type(t).to_string().replace(' ', "");
        assert_eq!(show("Policy"), "super::Policy");
        assert_eq!(show("super::other::Thing"), "super::super::other::Thing");
        assert_eq!(show("()"), "()");
        assert_eq!(show("bool"), "bool");
        assert_eq!(
            show("::tai_runtime::__private::prost_types::Timestamp"),
            "::tai_runtime::__private::prost_types::Timestamp"
        );
        assert_eq!(show("r#type::Inner"), "super::r#type::Inner");
    }
}
