//! The `prost_build::ServiceGenerator` tai-build hands to prost: tonic's server code
//! (made to resolve through `::tai_runtime::__private`) plus tai's client module.

use std::collections::HashMap;

use proc_macro2::{Group, Spacing, TokenStream, TokenTree};

use crate::check::ServicePolicy;
use crate::{access, client};

/// Where generated code finds the crates it needs: all through `tai-runtime`, so a
/// user crate depends on `tai-runtime` only.
pub(crate) const PRIVATE: &str = "::tai_runtime::__private";

/// Crate names that tonic's server code uses as relative paths (`tonic::...`) and
/// that must resolve without the user depending on them.
const REWRITTEN_CRATES: [&str; 2] = ["tonic", "tonic_prost"];

/// Clippy lints that fire on what the `.proto` file decides, not on the generator:
/// method names (an RPC `New` becomes `fn new(&self, ..)`) and a service without
/// methods (tonic's server then `match`es with only its fallback arm). The generated
/// client and server modules allow them.
const PROTO_SHAPED_LINTS: [&str; 5] = [
    "wrong_self_convention",
    "new_ret_no_self",
    "should_implement_trait",
    "module_name_repetitions",
    "match_single_binding",
];

/// `#![allow(clippy::wrong_self_convention, ...)]` for [`PROTO_SHAPED_LINTS`].
pub(crate) fn allow_proto_shaped_lints() -> syn::Attribute {
    let lints = PROTO_SHAPED_LINTS
        .iter()
        .map(|name| proc_macro2::Ident::new(name, proc_macro2::Span::call_site()));
    syn::parse_quote!(#![allow(#(clippy::#lints),*)])
}

/// Generates, for each service: the client module (if `clients` is set) and tonic's
/// server module (if `server` is set) with the service's access rules in it.
pub(crate) struct TaiServiceGenerator {
    pub(crate) server: Option<Box<dyn prost_build::ServiceGenerator>>,
    /// Whether to write client modules.
    pub(crate) clients: bool,
    /// The policy levels of each service, by full name.
    pub(crate) policies: HashMap<String, ServicePolicy>,
}

impl prost_build::ServiceGenerator for TaiServiceGenerator {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let policy = self
            .policies
            .get(&client::full_name(&service))
            .cloned()
            .unwrap_or_default();
        if self.clients {
            buf.push_str(&client::client_module(&service, &policy));
        }
        if let Some(server) = &mut self.server {
            let access_rules = access::access_rules(&service, &policy, self.clients);
            let mut server_code = String::new();
            server.generate(service, &mut server_code);
            match syn::parse_file(&server_code) {
                Ok(mut file) => {
                    for item in &mut file.items {
                        if let syn::Item::Mod(module) = item {
                            module.attrs.push(allow_proto_shaped_lints());
                            if let Some((_, items)) = &mut module.content {
                                items.push(access_rules.clone());
                            }
                        }
                    }
                    let tokens = rewrite_crate_paths(quote::ToTokens::into_token_stream(file));
                    buf.push_str(&tokens.to_string());
                }
                // Not reachable for tonic's output; left as is, the final parse reports it.
                Err(_) => buf.push_str(&server_code),
            }
            buf.push('\n');
        }
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        if let Some(server) = &mut self.server {
            server.finalize_package(package, buf);
        }
    }
}

/// Rewrites every path that starts with one of [`REWRITTEN_CRATES`] (`tonic::x`, not
/// `::tonic::x` nor `a::tonic::x`) to start at `::tai_runtime::__private::tonic`.
///
/// A token rewrite rather than a `use` of the re-export: a `use` would make the name
/// ambiguous in a crate that also depends on tonic itself.
pub(crate) fn rewrite_crate_paths(tokens: TokenStream) -> TokenStream {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = Vec::with_capacity(trees.len());
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(group) => {
                let mut new = Group::new(group.delimiter(), rewrite_crate_paths(group.stream()));
                new.set_span(group.span());
                out.push(TokenTree::Group(new));
            }
            TokenTree::Ident(ident)
                if REWRITTEN_CRATES.iter().any(|c| ident == c)
                    && !follows_colon(&trees, i)
                    && starts_path(&trees, i) =>
            {
                let path: TokenStream = format!("{PRIVATE}::{ident}")
                    .parse()
                    .expect("a constant path parses");
                out.extend(path);
            }
            other => out.push(other.clone()),
        }
    }
    out.into_iter().collect()
}

fn is_colon(tree: Option<&TokenTree>) -> bool {
    matches!(tree, Some(TokenTree::Punct(p)) if p.as_char() == ':')
}

/// Whether `i` comes right after `::` (so it is inside a path, not at its start).
fn follows_colon(trees: &[TokenTree], i: usize) -> bool {
    i >= 2 && is_colon(trees.get(i - 1)) && is_joint_colon(trees.get(i - 2))
}

/// Whether `i` is followed by `::`.
fn starts_path(trees: &[TokenTree], i: usize) -> bool {
    is_joint_colon(trees.get(i + 1)) && is_colon(trees.get(i + 2))
}

/// The first `:` of a `::`.
fn is_joint_colon(tree: Option<&TokenTree>) -> bool {
    matches!(tree, Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_relative_tonic_paths_only() {
        let input: TokenStream = "use tonic::codegen::*; \
            fn f(r: tonic::Request<T>) -> ::tonic::Status { a::tonic::b(); let tonic = 1; \
            tonic_prost::ProstCodec::default() }"
            .parse()
            .unwrap();
        let out = rewrite_crate_paths(input).to_string().replace(' ', "");
        assert_eq!(
            out,
            "use::tai_runtime::__private::tonic::codegen::*;\
             fnf(r:::tai_runtime::__private::tonic::Request<T>)->::tonic::Status{a::tonic::b();lettonic=1;\
             ::tai_runtime::__private::tonic_prost::ProstCodec::default()}"
        );
    }
}
