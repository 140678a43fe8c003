//! From a `#[resilient]` trait to its client: shape checks, validation, code.
//!
//! The expansion is small on purpose. It writes the trait back (without the
//! attributes), one `static` [`ServicePolicy`] of plain data, and a client whose
//! methods each forward to one `tai_runtime::__private::ClientCore` call; everything
//! that behaves lives in the runtime.
//!
//! [`ServicePolicy`]: https://docs.rs/tai-runtime/latest/tai_runtime/policy/struct.ServicePolicy.html

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use heck::{ToShoutySnakeCase, ToUpperCamelCase};
use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, Item, ItemTrait, PathArguments, ReturnType,
    Signature, TraitItem, TraitItemFn, Type, TypeParamBound,
};
use tai_model::{
    CodeSet, MethodKind, PolicySpec, Problem, ResolvedBreaker, ResolvedHedging, ResolvedPolicy,
    ResolvedRetry, ResolvedThrottle, format_duration, resolve, validate,
};

use crate::attr::{self, Args, Errors, Level, Scope};

/// Expands `#[resilient(args)] item`. Never fails: mistakes become `compile_error!`s
/// next to the best expansion that could still be made. With a problem in a method's
/// shape that is the trait alone; with a problem in a policy it is everything, built
/// from the policy as written, so that the client keeps existing for the IDE and for
/// the code that uses it.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let output = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Trait(mut item)) => expand_trait(args, &mut item, &mut errors),
        Ok(other) => {
            errors.push(not_a_trait(&other, &item));
            item
        }
        Err(error) => {
            errors.push(match syn::parse2::<TraitItemFn>(item.clone()) {
                Ok(method) => method_alone(&method),
                Err(_) => error,
            });
            item
        }
    };
    let errors = errors
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

/// One RPC of the trait, as understood from its signature and attribute.
struct Method {
    /// The Rust name (the trait's and the client's method).
    ident: Ident,
    /// The proto method name.
    name: String,
    /// The types, read from the signature.
    shape: Shape,
    /// The return type in the emitted trait, which the client's trait impl repeats.
    output: ReturnType,
    /// The method's doc comments, repeated on the client's method.
    docs: Vec<Attribute>,
    level: Level,
}

/// What a method's signature says.
struct Shape {
    kind: MethodKind,
    /// The request parameter's type as written (`Policy`, `RequestStream<Policy>`).
    request: Type,
    /// The request message (`Policy`).
    request_message: Type,
    /// The response as written (`Receipt`, `ResponseStream<Receipt>`).
    response: Type,
    /// The response message (`Receipt`).
    response_message: Type,
}

fn expand_trait(args: TokenStream, item: &mut ItemTrait, errors: &mut Errors) -> TokenStream {
    let mut shape = Errors::default();
    check_trait(item, &mut shape);
    let service = attr::parse(args, Span::call_site(), Scope::Service, errors);
    let service_name = service
        .name
        .as_ref()
        .map_or_else(|| item.ident.unraw().to_string(), syn::LitStr::value);

    let mut methods = Vec::new();
    let mut names: HashMap<String, Ident> = HashMap::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(function) = trait_item else {
            shape.push(syn::Error::new_spanned(
                &*trait_item,
                "a #[resilient] trait holds only RPC methods: \
                 `fn name(&self, request: Request) -> impl Future<Output = Result<Response, Status>> + Send;`",
            ));
            continue;
        };
        let Some(method) = method(function, errors, &mut shape) else {
            continue;
        };
        if let Some(first) = names.insert(method.name.clone(), method.ident.clone()) {
            shape.push(syn::Error::new(
                method.ident.span(),
                format!(
                    "`{}` and `{first}` are both the proto method `{}`; give one another `name = \"...\"`",
                    method.ident, method.name
                ),
            ));
        }
        methods.push(method);
    }
    if !shape.is_empty() {
        errors.append(shape);
        return item.to_token_stream();
    }

    let policies = resolve_all(&service.level, &methods, errors);
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

/// Rejects trait forms a client cannot implement.
fn check_trait(item: &mut ItemTrait, shape: &mut Errors) {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        shape.push(syn::Error::new_spanned(
            &item.generics,
            "a #[resilient] trait cannot be generic: it describes one gRPC service with fixed message types",
        ));
    }
    if let Some(token) = item.unsafety {
        shape.push(syn::Error::new(
            token.span,
            "a #[resilient] trait cannot be unsafe",
        ));
    }
    if let Some(token) = item.auto_token {
        shape.push(syn::Error::new(
            token.span,
            "a #[resilient] trait cannot be an auto trait",
        ));
    }
    for extra in take_resilient(&mut item.attrs) {
        shape.push(syn::Error::new_spanned(
            extra,
            "#[resilient] is written twice on this trait; merge the two into one",
        ));
    }
}

/// Whether an attribute is `#[resilient]` (by its last path segment, so that
/// `#[tai_runtime::resilient]` counts too).
fn is_resilient(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "resilient")
}

/// Removes and returns the `#[resilient]` attributes.
fn take_resilient(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (taken, kept) = std::mem::take(attrs).into_iter().partition(is_resilient);
    *attrs = kept;
    taken
}

/// Reads one trait method: strips its attribute, checks its shape, rewrites an
/// `async fn`. `None` if the shape is wrong (the errors are in `shape`).
fn method(function: &mut TraitItemFn, errors: &mut Errors, shape: &mut Errors) -> Option<Method> {
    let mut attrs = take_resilient(&mut function.attrs).into_iter();
    let args = match attrs.next() {
        Some(attr) => {
            let span = attr.path().span();
            let tokens = match attr.meta {
                syn::Meta::List(list) => list.tokens,
                syn::Meta::Path(_) => TokenStream::new(),
                syn::Meta::NameValue(nv) => {
                    errors.push(syn::Error::new_spanned(
                        nv.eq_token,
                        "expected `#[resilient(...)]` or `#[resilient]`",
                    ));
                    TokenStream::new()
                }
            };
            attr::parse(tokens, span, Scope::Method, errors)
        }
        None => Args {
            name: None,
            level: Level::empty(function.sig.ident.span()),
        },
    };
    for extra in attrs {
        errors.push(syn::Error::new_spanned(
            extra,
            "#[resilient] is written twice on this method; merge the two into one",
        ));
    }
    for attr in &function.attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            shape.push(syn::Error::new_spanned(
                attr,
                "an RPC method cannot be conditional: the client needs the same methods in every build",
            ));
        }
    }
    if let Some(body) = &function.default {
        shape.push(syn::Error::new(
            body.brace_token.span.join(),
            "an RPC method has no body: the generated client implements it; end the signature with `;`",
        ));
    }
    let types = match signature(&mut function.sig) {
        Ok(types) => types,
        Err(errors) => {
            shape.append(errors);
            return None;
        }
    };
    let ident = function.sig.ident.clone();
    let name = args.name.as_ref().map_or_else(
        || ident.unraw().to_string().to_upper_camel_case(),
        syn::LitStr::value,
    );
    Some(Method {
        ident,
        name,
        shape: types,
        docs: function
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        output: function.sig.output.clone(),
        level: args.level,
    })
}

const EXPECTED: &str = "expected `fn name(&self, request: Request) -> impl Future<Output = Result<Response, Status>> + Send;` \
                        or `async fn name(&self, request: Request) -> Result<Response, Status>;`";

/// Checks a signature and reads the method's types; rewrites `async fn` into the
/// `impl Future + Send` form.
fn signature(sig: &mut Signature) -> Result<Shape, Errors> {
    let mut errors = Errors::default();
    let mut fail = |tokens: &dyn ToTokens, message: &str| {
        errors.push(syn::Error::new_spanned(tokens, message));
    };
    if let Some(token) = &sig.constness {
        fail(token, "an RPC method cannot be `const`");
    }
    if let Some(token) = &sig.unsafety {
        fail(token, "an RPC method cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        fail(abi, "an RPC method cannot have an ABI");
    }
    if let Some(variadic) = &sig.variadic {
        fail(variadic, "an RPC method cannot be variadic");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let mut generics = sig.generics.to_token_stream();
        sig.generics.where_clause.to_tokens(&mut generics);
        fail(
            &generics,
            "an RPC method cannot be generic: its request and response are fixed message types",
        );
    }

    let mut inputs = sig.inputs.iter();
    // Where to point when a parameter is missing: the parentheses.
    let parens = sig.paren_token.span.join();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => fail(
            r,
            "an RPC method takes `&self`: the client is shared, and calls run concurrently",
        ),
        Some(other) => fail(
            other,
            &format!("an RPC method takes `&self` first; {EXPECTED}"),
        ),
        None => errors.push(syn::Error::new(
            parens,
            format!("an RPC method takes `&self` and one request; {EXPECTED}"),
        )),
    }
    let request = match inputs.next() {
        Some(FnArg::Typed(arg)) => Some((*arg.ty).clone()),
        Some(FnArg::Receiver(r)) => {
            errors.push(syn::Error::new_spanned(
                r,
                "`self` can only be the first parameter",
            ));
            None
        }
        None => {
            if matches!(sig.inputs.first(), Some(FnArg::Receiver(_))) {
                errors.push(syn::Error::new(
                    parens,
                    "an RPC method takes one request parameter after `&self`, e.g. `request: Policy`",
                ));
            }
            None
        }
    };
    if let Some(extra) = inputs.next() {
        let mut tokens = extra.to_token_stream();
        tokens.extend(inputs.map(ToTokens::into_token_stream));
        errors.push(syn::Error::new_spanned(
            tokens,
            "an RPC method takes exactly one request parameter; put the fields in the request message",
        ));
    }

    let response = match (sig.asyncness, &sig.output) {
        (Some(_), ReturnType::Type(_, ty)) => result_of(ty).map(|r| (r, (**ty).clone())),
        (None, ReturnType::Type(_, ty)) => {
            future_output(ty).and_then(|out| result_of(&out).map(|r| (r, out)))
        }
        (_, ReturnType::Default) => None,
    };
    let Some(((response, status), output)) = response else {
        let hint = match &sig.output {
            ReturnType::Type(_, ty) if sig.asyncness.is_none() && result_of(ty).is_some() => {
                "to return a `Result` directly, make it an `async fn`; "
            }
            _ => "",
        };
        let message = format!("wrong return type: {hint}{EXPECTED}");
        errors.push(match &sig.output {
            ReturnType::Type(_, ty) => syn::Error::new_spanned(ty, message),
            ReturnType::Default => syn::Error::new(sig.paren_token.span.close(), message),
        });
        return Err(errors);
    };
    if last_segment(&status).is_none_or(|s| s.ident != "Status") {
        errors.push(syn::Error::new_spanned(
            &status,
            "the error type of an RPC is `Status` (tai_runtime::Status, which is tonic::Status)",
        ));
    }
    let Some(request) = request.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };

    if let Some(token) = sig.asyncness.take() {
        // `async fn` in a public trait does not promise `Send`; write out the form
        // that does.
        let span = token.span;
        sig.output = syn::parse_quote_spanned! {span=>
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
    }

    let request_stream = stream_item(&request, "RequestStream");
    let response_stream = stream_item(&response, "ResponseStream");
    let kind = match (request_stream.is_some(), response_stream.is_some()) {
        (false, false) => MethodKind::Unary,
        (false, true) => MethodKind::ServerStreaming,
        (true, false) => MethodKind::ClientStreaming,
        (true, true) => MethodKind::Bidi,
    };
    Ok(Shape {
        kind,
        request_message: request_stream.unwrap_or_else(|| request.clone()),
        request,
        response_message: response_stream.unwrap_or_else(|| response.clone()),
        response,
    })
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

/// The type arguments of a path type's last segment, if it is named `name`.
fn type_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let segment = last_segment(ty).filter(|s| s.ident == name)?;
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect()
}

/// `Result<Resp, Status>` → `(Resp, Status)`.
fn result_of(ty: &Type) -> Option<(Type, Type)> {
    match type_args(ty, "Result")?.as_slice() {
        [ok, err] => Some(((*ok).clone(), (*err).clone())),
        _ => None,
    }
}

/// `impl Future<Output = T> + ..` → `T`.
fn future_output(ty: &Type) -> Option<Type> {
    let Type::ImplTrait(imp) = ty else {
        return None;
    };
    imp.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(t) = bound else {
            return None;
        };
        let segment = t.path.segments.last().filter(|s| s.ident == "Future")?;
        let PathArguments::AngleBracketed(args) = &segment.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(a) if a.ident == "Output" => Some(a.ty.clone()),
            _ => None,
        })
    })
}

/// `RequestStream<T>` → `T` (for `name = "RequestStream"`).
fn stream_item(ty: &Type, name: &str) -> Option<Type> {
    match type_args(ty, name)?.as_slice() {
        [item] => Some((*item).clone()),
        _ => None,
    }
}

/// Validates every method against the service level and returns each one's resolved
/// policy. Problems become errors at the token that caused them; a problem in the
/// service level is reported once, naming the methods it concerns unless it
/// concerns all of them. A method with problems gets its policy as written, so
/// that the expansion can still be made.
fn resolve_all(service: &Level, methods: &[Method], errors: &mut Errors) -> Vec<ResolvedPolicy> {
    // Problems of the service level, in order of discovery, with the methods they concern.
    let mut inherited: Vec<(Problem, Vec<&Ident>)> = Vec::new();
    let mut policies = Vec::with_capacity(methods.len());
    for method in methods {
        let levels: [&PolicySpec; 2] = [&service.spec, &method.level.spec];
        match validate(&levels, method.shape.kind, Some(1)) {
            Ok(policy) => policies.push(policy),
            Err(problems) => {
                for problem in problems {
                    if problem.level == 1 {
                        errors.push(method.level.error(&problem));
                    } else if let Some((_, concerned)) =
                        inherited.iter_mut().find(|(p, _)| *p == problem)
                    {
                        concerned.push(&method.ident);
                    } else {
                        inherited.push((problem, vec![&method.ident]));
                    }
                }
                let mut policy = resolve(&levels);
                if method.shape.kind.streams_requests() {
                    policy.retry = None;
                    policy.hedging = None;
                }
                policies.push(policy);
            }
        }
    }
    if methods.is_empty() {
        // Nothing inherits the service level, but it must still be valid.
        if let Err(problems) = validate(&[&service.spec], MethodKind::Unary, None) {
            inherited.extend(problems.into_iter().map(|p| (p, Vec::new())));
        }
    }
    for (problem, concerned) in inherited {
        let mut error = service.error(&problem);
        if !concerned.is_empty() && concerned.len() < methods.len() {
            let names: Vec<String> = concerned.iter().map(|i| format!("`{i}`")).collect();
            error = syn::Error::new(
                error.span(),
                format!("{error} (inherited by {})", names.join(", ")),
            );
        }
        errors.push(error);
    }
    policies
}

/// Everything the generated client is made from.
struct Client<'a> {
    item: &'a ItemTrait,
    service_name: String,
    methods: &'a [Method],
    policies: &'a [ResolvedPolicy],
    throttle: Option<ResolvedThrottle>,
    balancer: Option<tai_model::Balancer>,
}

impl Client<'_> {
    fn generate(&self) -> TokenStream {
        let trait_ident = &self.item.ident;
        let vis = &self.item.vis;
        let statik = self.static_ident();
        // Spanned at the trait, so that "go to definition" on the client leads there.
        let client = Ident::new(
            &format!("{}Client", trait_ident.unraw()),
            trait_ident.span(),
        );
        // The transport parameter is `T` unless a message type is spelled `T`.
        let t = if self
            .methods
            .iter()
            .any(|m| mentions_t(&m.shape.request) || mentions_t(&m.shape.response))
        {
            format_ident!("__TaiTransport")
        } else {
            format_ident!("T")
        };
        let transport = quote!(::tai_runtime::__private::Transport);

        let data = self.service_policy();
        let rust_names: HashSet<String> = self
            .methods
            .iter()
            .map(|m| m.ident.unraw().to_string())
            .collect();
        let new_fn = (!rust_names.contains("new")).then(|| {
            quote! {
                /// A client that sends its calls over `transport`: a `tai_runtime::Channel`
                /// or any tower service that speaks gRPC.
                pub fn new(transport: #t) -> Self {
                    <Self as ::core::convert::From<#t>>::from(transport)
                }
            }
        });
        let connect_fn = (!rust_names.contains("connect")).then(|| {
            quote! {
                /// Connects to `dst` (e.g. `"http://127.0.0.1:50051"`) over a new
                /// `tai_runtime::Channel` (production preset, the service's balancer).
                ///
                /// # Errors
                ///
                /// If the address is invalid or the channel cannot be built.
                pub async fn connect(
                    dst: impl ::core::convert::Into<::std::string::String>,
                ) -> ::core::result::Result<Self, ::tai_runtime::ConnectError> {
                    ::tai_runtime::__private::connect(::core::convert::Into::into(dst), &#statik)
                        .await
                        .map(<Self as ::core::convert::From<::tai_runtime::Channel>>::from)
                }
            }
        });
        let inherent = self
            .methods
            .iter()
            .zip(self.policies)
            .enumerate()
            .map(|(index, (m, p))| self.rpc(index, m, p));
        let forwarding = self.methods.iter().map(|m| {
            let ident = &m.ident;
            let request = &m.shape.request;
            let output = &m.output;
            quote! {
                fn #ident(&self, request: #request) #output {
                    #client::#ident(self, request)
                }
            }
        });
        let doc = self.client_doc();

        quote! {
            #data

            #(#[doc = #doc])*
            #[derive(::core::clone::Clone)]
            // Generated API: a trait implemented only by a server leaves its client
            // unused, which is no mistake of the user's.
            #[allow(dead_code)]
            #vis struct #client<#t = ::tai_runtime::Channel> {
                core: ::tai_runtime::__private::ClientCore<#t>,
            }

            #[allow(dead_code)]
            impl<#t: #transport> #client<#t> {
                #new_fn
                #(#inherent)*
            }

            impl<#t: #transport> ::core::convert::From<#t> for #client<#t> {
                fn from(transport: #t) -> Self {
                    Self {
                        core: ::tai_runtime::__private::ClientCore::new(transport, &#statik),
                    }
                }
            }

            impl<#t: #transport> #trait_ident for #client<#t> {
                #(#forwarding)*
            }

            impl<#t: #transport> ::tai_runtime::Resilient for #client<#t> {
                fn client_state(&self) -> &::tai_runtime::__private::ClientState {
                    self.core.state()
                }
            }

            #[allow(dead_code)]
            impl #client<::tai_runtime::Channel> {
                /// The policy compiled into this client, for building a channel
                /// before the client (its `balancer`, say).
                pub const SERVICE_POLICY: &'static ::tai_runtime::policy::ServicePolicy = &#statik;

                #connect_fn
            }

        }
    }

    /// The client's method for one RPC: the call into the runtime that its kind and
    /// policy need.
    fn rpc(&self, index: usize, m: &Method, p: &ResolvedPolicy) -> TokenStream {
        let ident = &m.ident;
        let request = &m.shape.request;
        let response = &m.shape.response;
        let request_message = &m.shape.request_message;
        let response_message = &m.shape.response_message;
        let call = match (m.shape.kind, p.retry.is_some() || p.hedging.is_some()) {
            (MethodKind::Unary, false) => "unary",
            (MethodKind::Unary, true) => "unary_retry",
            (MethodKind::ServerStreaming, false) => "server_streaming",
            (MethodKind::ServerStreaming, true) => "server_streaming_retry",
            (MethodKind::ClientStreaming, _) => "client_streaming",
            (MethodKind::Bidi, _) => "bidi_streaming",
        };
        // The message types are named with the user's spans, so that a type the
        // runtime cannot use is reported where it is written, with the runtime's
        // `on_unimplemented` message.
        let span = request_message.span();
        let call = Ident::new(call, span);
        let index = Literal::usize_unsuffixed(index);
        let call_expr = quote_spanned! {span=>
            self.core.#call::<#request_message, #response_message>(#index, request)
        };
        // Proving this opaque type well-formed re-checks the runtime's bounds on
        // the message types; should they fail, the repeat of the error (already
        // reported at the type, through the turbofish) points at the method.
        let ret = quote_spanned! {m.ident.span()=> impl ::core::future::Future<
            Output = ::core::result::Result<#response, ::tai_runtime::Status>,
        > + ::core::marker::Send + '_ };
        let docs = &m.docs;
        let gap = (!docs.is_empty()).then(|| quote!(#[doc = ""]));
        let summary = format!(
            " `{}` ({}): {}.",
            self.path(m),
            kind_name(m.shape.kind),
            describe(p)
        );
        quote! {
            #(#docs)*
            #gap
            #[doc = #summary]
            pub fn #ident(
                &self,
                request: #request,
            ) -> #ret {
                #call_expr
            }
        }
    }

    /// `__TAI_SERVICE_GOVERNOR` for `trait Governor`.
    fn static_ident(&self) -> Ident {
        let name = self.item.ident.unraw().to_string().to_shouty_snake_case();
        format_ident!("__TAI_SERVICE_{}", name)
    }

    /// The HTTP/2 path of a method: `/tai.v1.Governor/ProposePolicy`.
    fn path(&self, method: &Method) -> String {
        format!("/{}/{}", self.service_name, method.name)
    }

    /// `static __TAI_SERVICE_X: ServicePolicy = ServicePolicy { .. };`
    fn service_policy(&self) -> TokenStream {
        let statik = self.static_ident();
        let name = &self.service_name;
        let methods = self.methods.iter().zip(self.policies).map(|(m, p)| {
            let name = &m.name;
            let rust_name = m.ident.unraw().to_string();
            let path = self.path(m);
            let kind = Ident::new(&format!("{:?}", m.shape.kind), Span::call_site());
            let idempotent = p.idempotent;
            let timeout = option(p.timeout.map(duration));
            let max_timeout = option(p.max_timeout.map(duration));
            let retry = option(p.retry.as_ref().map(retry));
            let hedging = option(p.hedging.as_ref().map(hedging));
            let breaker = option(p.breaker.as_ref().map(breaker));
            quote! {
                ::tai_runtime::policy::MethodPolicy {
                    name: #name,
                    rust_name: #rust_name,
                    path: #path,
                    kind: ::tai_runtime::policy::MethodKind::#kind,
                    idempotent: #idempotent,
                    timeout: #timeout,
                    max_timeout: #max_timeout,
                    retry: #retry,
                    hedging: #hedging,
                    breaker: #breaker,
                }
            }
        });
        let throttle = option(self.throttle.as_ref().map(|t| {
            let max_tokens = Literal::u32_unsuffixed(t.max_tokens);
            let token_ratio = float(t.token_ratio);
            quote! {
                ::tai_runtime::policy::ThrottlePolicy {
                    max_tokens: #max_tokens,
                    token_ratio: #token_ratio,
                }
            }
        }));
        let balancer = option(self.balancer.map(|b| {
            let variant = format_ident!("{}", b.variant());
            quote!(::tai_runtime::config::BalancerKind::#variant)
        }));
        quote! {
            #[doc(hidden)]
            static #statik: ::tai_runtime::policy::ServicePolicy = ::tai_runtime::policy::ServicePolicy {
                name: #name,
                methods: &[#(#methods),*],
                throttle: #throttle,
                balancer: #balancer,
            };
        }
    }

    /// The client's doc comment, one line per method with its policy.
    fn client_doc(&self) -> Vec<String> {
        let trait_ident = self.item.ident.unraw();
        let mut doc = vec![
            format!(
                " A resilient client of the `{}` gRPC service, generated by `#[resilient]` from [`{trait_ident}`].",
                self.service_name
            ),
            String::new(),
            " Each call runs the policy compiled in for its method:".to_owned(),
            String::new(),
        ];
        for (m, p) in self.methods.iter().zip(self.policies) {
            doc.push(format!(
                " - `{}` → `{}` ({}): {}.",
                m.ident.unraw(),
                self.path(m),
                kind_name(m.shape.kind),
                describe(p)
            ));
        }
        if let Some(t) = &self.throttle {
            doc.push(String::new());
            doc.push(format!(
                " Retries and hedges are throttled for the whole client: {} tokens, {} returned per success.",
                t.max_tokens, t.token_ratio
            ));
        }
        doc.push(String::new());
        doc.push(
            " Create one with `connect(address)`, or with `new(transport)` / `From` over any transport; \
             clones share the breakers and the throttle. `tai_runtime::Resilient` reads their state."
                .to_owned(),
        );
        doc
    }
}

/// Whether a type mentions an identifier `T`, which the transport parameter would shadow.
fn mentions_t(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            TokenTree::Ident(i) => i == "T",
            TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ServerStreaming => "server-streaming",
        MethodKind::ClientStreaming => "client-streaming",
        MethodKind::Bidi => "bidi-streaming",
    }
}

fn codes(set: CodeSet) -> String {
    let names: Vec<&str> = set.codes().into_iter().map(tai_model::Code::name).collect();
    names.join(", ")
}

/// One line describing a resolved policy, for doc comments.
fn describe(p: &ResolvedPolicy) -> String {
    let d = |d: Duration| format_duration(d);
    let mut parts = Vec::new();
    if p.idempotent {
        parts.push("idempotent".to_owned());
    }
    parts.push(match (p.timeout, p.max_timeout) {
        (Some(t), Some(max)) => format!("timeout {} (at most {})", d(t), d(max)),
        (Some(t), None) => format!("timeout {}", d(t)),
        (None, Some(max)) => format!("no timeout (at most {})", d(max)),
        (None, None) => "no timeout".to_owned(),
    });
    if let Some(r) = &p.retry {
        parts.push(format!(
            "retry up to {} attempts on {} (backoff {} to {}, ×{})",
            r.max_attempts,
            codes(r.codes),
            d(r.initial_backoff),
            d(r.max_backoff),
            r.multiplier
        ));
    }
    if let Some(h) = &p.hedging {
        let non_fatal = if h.non_fatal_codes.is_empty() {
            String::new()
        } else {
            format!(", continuing past {}", codes(h.non_fatal_codes))
        };
        parts.push(format!(
            "hedging {} attempts {} apart{non_fatal}",
            h.max_attempts,
            d(h.delay)
        ));
    }
    if let Some(b) = &p.breaker {
        let rate = b.rate.as_ref().map_or(String::new(), |r| {
            format!(
                " or {}% of at least {} calls in {}",
                r.threshold * 100.0,
                r.min_calls,
                d(r.window)
            )
        });
        parts.push(format!(
            "breaker opens after {} failures in a row{rate} (open {} to {})",
            b.failure_threshold,
            d(b.open_timeout),
            d(b.max_open_timeout)
        ));
    }
    parts.join("; ")
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

/// A duration in the coarsest unit that holds it exactly: `from_secs(30)`,
/// `from_millis(250)`, as a person would write it.
fn duration(d: Duration) -> TokenStream {
    let nanos = d.as_nanos();
    for (scale, unit) in [
        (1_000_000_000, "from_secs"),
        (1_000_000, "from_millis"),
        (1_000, "from_micros"),
        (1, "from_nanos"),
    ] {
        if nanos % scale == 0
            && let Ok(value) = u64::try_from(nanos / scale)
        {
            let unit = Ident::new(unit, Span::call_site());
            let value = Literal::u64_unsuffixed(value);
            return quote!(::core::time::Duration::#unit(#value));
        }
    }
    let secs = Literal::u64_unsuffixed(d.as_secs());
    let nanos = Literal::u32_unsuffixed(d.subsec_nanos());
    quote!(::core::time::Duration::new(#secs, #nanos))
}

fn float(value: f64) -> Literal {
    // Values are finite (checked while parsing); a non-finite one is only possible in
    // the best-effort expansion of an invalid policy, which is reported anyway.
    Literal::f64_unsuffixed(if value.is_finite() { value } else { 0.0 })
}

/// `CodeSet::of(&[Code::Unavailable, Code::Aborted])`, or `CodeSet::EMPTY`.
fn code_set(set: CodeSet) -> TokenStream {
    if set.is_empty() {
        return quote!(::tai_runtime::policy::CodeSet::EMPTY);
    }
    let codes = set
        .codes()
        .into_iter()
        .map(|c| Ident::new(c.variant(), Span::call_site()));
    quote!(::tai_runtime::policy::CodeSet::of(&[#(::tai_runtime::Code::#codes),*]))
}

fn retry(r: &ResolvedRetry) -> TokenStream {
    let max_attempts = Literal::u32_unsuffixed(r.max_attempts);
    let initial_backoff = duration(r.initial_backoff);
    let max_backoff = duration(r.max_backoff);
    let multiplier = float(r.multiplier);
    let retryable = code_set(r.codes);
    quote! {
        ::tai_runtime::policy::RetryPolicy {
            max_attempts: #max_attempts,
            initial_backoff: #initial_backoff,
            max_backoff: #max_backoff,
            multiplier: #multiplier,
            retryable: #retryable,
        }
    }
}

fn hedging(h: &ResolvedHedging) -> TokenStream {
    let max_attempts = Literal::u32_unsuffixed(h.max_attempts);
    let delay = duration(h.delay);
    let non_fatal = code_set(h.non_fatal_codes);
    quote! {
        ::tai_runtime::policy::HedgingPolicy {
            max_attempts: #max_attempts,
            delay: #delay,
            non_fatal: #non_fatal,
        }
    }
}

fn breaker(b: &ResolvedBreaker) -> TokenStream {
    let failure_threshold = Literal::u32_unsuffixed(b.failure_threshold);
    let open_timeout = duration(b.open_timeout);
    let max_open_timeout = duration(b.max_open_timeout);
    let half_open_max_calls = Literal::u32_unsuffixed(b.half_open_max_calls);
    let rate = option(b.rate.as_ref().map(|r| {
        let threshold = float(r.threshold);
        let window = duration(r.window);
        let min_calls = Literal::u32_unsuffixed(r.min_calls);
        quote! {
            ::tai_runtime::policy::RateRule {
                threshold: #threshold,
                window: #window,
                min_calls: #min_calls,
            }
        }
    }));
    let failure_codes = code_set(b.failure_codes);
    quote! {
        ::tai_runtime::policy::BreakerPolicy {
            failure_threshold: #failure_threshold,
            open_timeout: #open_timeout,
            max_open_timeout: #max_open_timeout,
            half_open_max_calls: #half_open_max_calls,
            rate: #rate,
            failure_codes: #failure_codes,
        }
    }
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

    #[test]
    fn describes_a_policy_in_one_line() {
        let service = PolicySpec {
            idempotent: Some(true),
            timeout: Some(tai_model::Toggle::On(Duration::from_secs(2))),
            retry: Some(tai_model::Toggle::On(tai_model::RetrySpec::default())),
            breaker: Some(tai_model::Toggle::On(tai_model::BreakerSpec::default())),
            ..PolicySpec::default()
        };
        let policy = validate(&[&service], MethodKind::Unary, None).unwrap();
        assert_eq!(
            describe(&policy),
            "idempotent; timeout 2s; retry up to 3 attempts on UNAVAILABLE (backoff 100ms to 10s, ×2); \
             breaker opens after 5 failures in a row or 50% of at least 20 calls in 10s (open 30s to 5m)"
        );
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
            let attr = take_resilient(&mut item.attrs).remove(0);
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
