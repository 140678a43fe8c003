//! The server half of the access rules: per service, the table of each method's
//! resolved rule, as `pub const ACCESS_RULES` inside tonic's server module.
//!
//! Why a table of data and not a layer per service: the rules are the `.proto`
//! file's, resolved file < service < method by the shared model like every other
//! policy field, and the runtime's `AccessLayer` enforces them all by request path
//! in one lookup.
//!
//! Why an alias: the annotated trait tai-build writes carries the same rules as
//! `auth(..)`, and `#[resilient]` turns them into `FooClient::ACCESS_RULES`, as it
//! does for a hand-written trait. The server module names that table rather than
//! printing a second copy, so what a server enforces is what the trait says. Only
//! when no client module is written (`build_client(false)`) is the table printed
//! here, by the model's one printer (`tai_model::access_table_expr`), which the
//! macro uses too.

use heck::ToSnakeCase;
use quote::{format_ident, quote};
use tai_model::resolve;

use crate::check::ServicePolicy;
use crate::client::{full_name, module_name};

/// `pub const ACCESS_RULES: ::tai_runtime::policy::AccessTable = ..;` for `service`:
/// the generated client's table when `clients` are written, else the table itself.
pub(crate) fn access_rules(
    service: &prost_build::Service,
    policy: &ServicePolicy,
    clients: bool,
) -> syn::Item {
    let full_name = full_name(service);
    let server_module = format!("{}_server", service.name.to_snake_case());
    let table = if clients {
        let module = format_ident!("{}", module_name(&service.proto_name));
        let client = format_ident!("{}Client", service.name.trim_start_matches("r#"));
        quote!(super::#module::#client::ACCESS_RULES)
    } else {
        printed_table(service, policy, &full_name)
    };
    let doc = format!(
        " Who may call each method of `{full_name}`, as its `.proto` file declares \
         (`option (tai.v1.method).auth`); a method with no rule follows the server's \
         default. Serve it with \
         `Server::builder().add_service_with_rules(.., {server_module}::ACCESS_RULES)`."
    );
    syn::parse_quote! {
        #[doc = #doc]
        pub const ACCESS_RULES: ::tai_runtime::policy::AccessTable = #table;
    }
}

/// The table, resolved file < service < method and printed by the model.
fn printed_table(
    service: &prost_build::Service,
    policy: &ServicePolicy,
    full_name: &str,
) -> proc_macro2::TokenStream {
    let empty = tai_model::PolicySpec::default();
    let methods: Vec<(String, Option<tai_model::ResolvedAccess>)> = service
        .methods
        .iter()
        .enumerate()
        .map(|(index, method)| {
            let spec = policy.methods.get(index).unwrap_or(&empty);
            let path = format!("/{full_name}/{}", method.proto_name);
            (path, resolve(&[&policy.file, &policy.service, spec]).auth)
        })
        .collect();
    let table = tai_model::access_table_expr(
        full_name,
        methods
            .iter()
            .map(|(path, rule)| (path.as_str(), rule.as_ref())),
    );
    // The printer writes Rust tokens; should it ever not, the compiler says where.
    table.parse().unwrap_or_else(|_| {
        quote!(::core::compile_error!(
            "tai-build wrote an invalid access table"
        ))
    })
}
