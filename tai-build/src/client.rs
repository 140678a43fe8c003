//! The client half of the generated code: per service, a module holding the service
//! trait annotated with `#[::tai_runtime::resilient(...)]`.
//!
//! tai-build writes no policy code of its own: it translates the proto options into
//! the attribute a user would write by hand, and `tai-macros` expands it. The trait
//! attribute carries the file and service levels merged into one (see [`merge`]); each
//! method attribute carries that method's own level. Only what the `.proto` file
//! wrote is emitted, never filled-in defaults, so the output reads like the source.

use heck::ToSnakeCase;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use tai_model::{PolicySpec, Toggle};

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

/// The `#[resilient]` arguments for what one level sets, printed by the grammar
/// table ([`tai_model::attribute_args`]), so that the keys are spelled in one place.
pub(crate) fn policy_args(spec: &PolicySpec) -> Vec<TokenStream> {
    tai_model::attribute_args(spec)
        .into_iter()
        .map(|arg| {
            // The printer writes the attribute grammar, which is Rust tokens; should it
            // ever not be, the macro reports this at the generated attribute.
            arg.parse().unwrap_or_else(|_| {
                let message = format!("tai-build wrote an argument that is not Rust tokens: {arg}");
                quote!(compile_error!(#message))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
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
                auth: self.toggle(|g| tai_model::AuthSpec {
                    required: g.opt(|g| g.pick(2) == 0),
                    public: g.opt(|g| g.pick(2) == 0),
                    scopes: g.opt(|g| vec![format!("s{}", g.pick(3))]),
                    roles: g.opt(|g| vec![format!("r{}", g.pick(3))]),
                }),
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
