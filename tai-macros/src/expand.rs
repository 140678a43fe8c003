//! From a `#[resilient]` item to its expansion: the dispatch between the concerns.
//!
//! The expansion writes the trait back (without the attributes), one `static`
//! [`ServicePolicy`] of plain data, and a client. The steps each live in their own
//! file — `attr.rs` parses attributes, `shape.rs` reads method signatures,
//! `policy.rs` resolves policies, `client.rs` and `tokens.rs` write the code — and
//! share one error context (`ctxt.rs`), so every mistake is reported at once.
//!
//! [`ServicePolicy`]: https://docs.rs/tai-runtime/latest/tai_runtime/policy/struct.ServicePolicy.html

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{Ident, Item, ItemTrait, TraitItem, TraitItemFn};
use tai_model::resolve;

use crate::attr::{self, Scope};
use crate::client::Client;
use crate::ctxt::Ctxt;
use crate::{policy, shape};

/// Expands `#[resilient(args)] item`. Never fails: mistakes become `compile_error!`s
/// next to the best expansion that could still be made. With a problem in a method's
/// shape that is the trait alone; with a problem in a policy it is everything, built
/// from the policy as written, so that the client keeps existing for the IDE and for
/// the code that uses it.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut ctxt = Ctxt::default();
    let output = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Trait(mut item)) => expand_trait(args, &mut item, &mut ctxt),
        Ok(other) => {
            ctxt.shape(not_a_trait(&other, &item));
            item
        }
        Err(error) => {
            ctxt.shape(match syn::parse2::<TraitItemFn>(item.clone()) {
                Ok(method) => method_alone(&method),
                Err(_) => error,
            });
            item
        }
    };
    let errors = ctxt
        .finish()
        .map_or_else(syn::Error::into_compile_error, |()| TokenStream::new());
    quote!(#output #errors)
}

/// `#[resilient]` on a method of a trait that has none: the compiler expands it alone.
fn method_alone(method: &TraitItemFn) -> syn::Error {
    syn::Error::new(
        method.sig.fn_token.span,
        "#[resilient] on a method takes effect under #[resilient] on its trait; \
         add `#[resilient(service = \"pkg.Service\")]` to the trait",
    )
}

fn not_a_trait(item: &Item, tokens: &TokenStream) -> syn::Error {
    if let Item::Verbatim(_) = item {
        // A method without a body is no `Item`, but it is a trait item.
        if let Ok(method) = syn::parse2::<TraitItemFn>(tokens.clone()) {
            return method_alone(&method);
        }
    }
    let (what, span) = match item {
        Item::Struct(s) => ("a struct", s.struct_token.span),
        Item::Enum(e) => ("an enum", e.enum_token.span),
        Item::Fn(f) => ("a function", f.sig.fn_token.span),
        Item::Impl(i) => ("an impl block", i.impl_token.span),
        Item::Mod(m) => ("a module", m.mod_token.span),
        Item::Union(u) => ("a union", u.union_token.span),
        Item::Type(t) => ("a type alias", t.type_token.span),
        Item::Const(c) => ("a const", c.const_token.span),
        Item::Static(s) => ("a static", s.static_token.span),
        _ => ("this item", Span::call_site()),
    };
    syn::Error::new(
        span,
        format!(
            "#[resilient] goes on a trait that describes a gRPC service, not on {what}: \
             `#[resilient(service = \"pkg.Service\")] pub trait Service {{ .. }}`"
        ),
    )
}

fn expand_trait(args: TokenStream, item: &mut ItemTrait, ctxt: &mut Ctxt) -> TokenStream {
    shape::check_trait(item, ctxt);
    let service = attr::parse(args, Span::call_site(), Scope::Service, ctxt);
    let service_name = service
        .name
        .as_ref()
        .map_or_else(|| item.ident.unraw().to_string(), syn::LitStr::value);

    let mut methods = Vec::new();
    let mut names: HashMap<String, Ident> = HashMap::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(function) = trait_item else {
            ctxt.shape(syn::Error::new_spanned(
                &*trait_item,
                "a #[resilient] trait holds only RPC methods: \
                 `fn name(&self, request: Request) -> impl Future<Output = Result<Response, Status>> + Send;`",
            ));
            continue;
        };
        let Some(method) = shape::method(function, ctxt) else {
            continue;
        };
        if let Some(first) = names.insert(method.name.clone(), method.ident.clone()) {
            ctxt.shape(syn::Error::new(
                method.ident.span(),
                format!(
                    "`{}` and `{first}` are both the proto method `{}`; give one another `name = \"...\"`",
                    method.ident, method.name
                ),
            ));
        }
        methods.push(method);
    }
    if ctxt.has_shape_errors() {
        return item.to_token_stream();
    }

    let policies = policy::resolve_all(&service.level, &methods, ctxt);
    let service_policy = resolve(&[&service.level.spec]);
    let client = Client {
        item,
        service_name,
        methods: &methods,
        policies: &policies,
        throttle: service_policy.throttle,
        balancer: service_policy.balancer,
    };
    let generated = client.generate();
    quote!(#item #generated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        expand(args, item).to_string()
    }

    fn errors_of(output: &str) -> Vec<String> {
        // `compile_error! { "..." }` in the token string.
        output
            .split("compile_error !")
            .skip(1)
            .map(|rest| rest.split('"').nth(1).unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn not_a_trait_keeps_the_item() {
        let out = expand_str(
            quote!(),
            quote!(
                pub struct S {
                    n: u32,
                }
            ),
        );
        assert!(out.contains("pub struct S"), "{out}");
        let errors = errors_of(&out);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("not on a struct"), "{errors:?}");
    }

    #[test]
    fn shape_errors_emit_the_trait_alone_without_attributes() {
        let out = expand_str(
            quote!(service = "x.Y"),
            quote! {
                pub trait Y {
                    #[resilient(retry = 3)]
                    fn a(&self) -> impl Future<Output = Result<R, Status>> + Send;
                    #[resilient(bogus)]
                    fn b(&self, r: R, s: S) -> impl Future<Output = Result<R, Status>> + Send;
                }
            },
        );
        assert!(out.contains("pub trait Y"), "{out}");
        assert!(!out.contains("YClient"), "{out}");
        assert!(!out.contains("# [resilient"), "{out}");
        let errors = errors_of(&out);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("unknown key `bogus`"), "{errors:#?}");
        assert!(errors[1].starts_with("an RPC method takes one request parameter after `&self`"));
        assert!(errors[2].starts_with("an RPC method takes exactly one request parameter"));
    }

    #[test]
    fn policy_errors_still_emit_the_client() {
        let out = expand_str(
            quote!(retry(max_attempts = 1)),
            quote! {
                pub trait Y {
                    fn a(&self, r: R) -> impl Future<Output = Result<R, Status>> + Send;
                    #[resilient(idempotent)]
                    fn b(&self, r: R) -> impl Future<Output = Result<R, Status>> + Send;
                }
            },
        );
        assert!(out.contains("pub struct YClient"), "{out}");
        // The service-level problem concerns both methods and is reported once.
        assert_eq!(
            errors_of(&out),
            ["retry(max_attempts): is 1, but must be at least 2"]
        );
    }

    #[test]
    fn async_fn_is_rewritten_to_a_send_future() {
        let out = expand_str(
            quote!(),
            quote! {
                trait Y {
                    async fn a(&self, r: R) -> Result<R, Status>;
                }
            },
        );
        assert!(
            out.contains("fn a (& self , r : R) -> impl :: core :: future :: Future < Output = Result < R , Status > > + :: core :: marker :: Send ;"),
            "{out}"
        );
        assert!(errors_of(&out).is_empty());
    }

    /// The expansion of `tests/expand/*.rs`, formatted, must equal the
    /// `*.expanded.rs` next to it. `BLESS=1` rewrites the expected files.
    #[test]
    fn golden_expansions() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.to_string_lossy().ends_with(".rs")
                    && !p.to_string_lossy().ends_with(".expanded.rs")
            })
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty());
        for input in inputs {
            let source = std::fs::read_to_string(&input).unwrap();
            let mut item: ItemTrait = syn::parse_str(&source).unwrap();
            let attr = shape::take_resilient(&mut item.attrs).remove(0);
            let args = match attr.meta {
                syn::Meta::List(list) => list.tokens,
                _ => TokenStream::new(),
            };
            let output = expand(args, item.to_token_stream());
            let file: syn::File = syn::parse2(output).unwrap();
            let actual = format!(
                "// The expansion of {}; regenerate with `BLESS=1 cargo test -p tai-macros`.\n\n{}",
                input.file_name().unwrap().to_string_lossy(),
                prettyplease::unparse(&file)
            );
            let expected_path = input.with_extension("expanded.rs");
            if std::env::var_os("BLESS").is_some() {
                std::fs::write(&expected_path, &actual).unwrap();
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            assert!(
                expected == actual,
                "{} differs from the expansion (BLESS=1 to accept):\n{actual}",
                expected_path.display()
            );
        }
    }
}
