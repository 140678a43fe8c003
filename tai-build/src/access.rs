//! The server half of the access rules: per service, the table of each method's
//! resolved rule, as `pub const ACCESS_RULES` inside tonic's server module.
//!
//! Why a table of data and not a layer per service: the rules are the `.proto`
//! file's, resolved file < service < method by the shared model like every other
//! policy field, and the runtime's `AccessLayer` enforces them all by request path
//! in one lookup. tai-build writes only data here, never checking code; the printer
//! of one rule is `tai_model::ResolvedAccess::rust_expr`, shared with the macro.

use quote::quote;
use tai_model::resolve;

use crate::check::ServicePolicy;
use crate::client::full_name;

/// `pub const ACCESS_RULES: ::tai_runtime::policy::AccessTable = ..;` for `service`.
pub(crate) fn access_rules(service: &prost_build::Service, policy: &ServicePolicy) -> syn::Item {
    let full_name = full_name(service);
    let empty = tai_model::PolicySpec::default();
    let methods = service.methods.iter().enumerate().map(|(index, method)| {
        let path = format!("/{full_name}/{}", method.proto_name);
        let spec = policy.methods.get(index).unwrap_or(&empty);
        let rule = resolve(&[&policy.file, &policy.service, spec]).auth;
        // The printer writes Rust tokens; should it ever not, the compiler says where.
        let rule = rule.map(|rule| {
            rule.rust_expr()
                .parse::<proc_macro2::TokenStream>()
                .unwrap_or_else(|_| {
                    quote!(compile_error!("tai-build wrote an invalid access rule"))
                })
        });
        let rule = rule.map(|rule| quote!(.with_rule(#rule)));
        quote! {
            ::tai_runtime::policy::MethodAccess::new(#path) #rule
        }
    });
    let doc = format!(
        " Who may call each method of `{full_name}`, as its `.proto` file declares \
         (`option (tai.v1.method).auth`); a method with no rule follows the server's \
         default. Serve it with `Server::builder().add_service_with_rules(.., ACCESS_RULES)`."
    );
    syn::parse_quote! {
        #[doc = #doc]
        pub const ACCESS_RULES: ::tai_runtime::policy::AccessTable =
            ::tai_runtime::policy::AccessTable::new(#full_name, &[#(#methods),*]);
    }
}
