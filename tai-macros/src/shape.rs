//! What a trait method looks like: the checks that make it an RPC, and the types
//! the client is generated from.
//!
//! A `#[resilient]` trait holds only RPCs of one fixed shape (`&self`, one request,
//! a future of `Result<Response, Status>`); everything else is reported here, at the
//! token that is wrong, as a *shape* error — one that leaves no client to generate.
//!
//! A method is written in one of two forms: with plain messages
//! (`request: Policy` → `Result<Receipt, Status>`), or as tonic writes it
//! (`request: Request<Policy>` → `Result<Response<Receipt>, Status>`). The client's
//! own methods have tonic's shape either way; the trait impl follows the trait.
//! Half of one and half of the other is an error.
//! Types are matched by their last path segment, so `std::future::Future`,
//! `tonic::Status` and `tai_runtime::Status` all work.

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, PathArguments, ReturnType, Signature,
    TraitItemFn, Type, TypeParamBound,
};
use tai_model::MethodKind;

use crate::attr::{self, Args, Level, Scope};
use crate::ctxt::Ctxt;

/// One RPC of the trait, as understood from its signature and attribute.
pub(crate) struct Method {
    /// The Rust name (the trait's and the client's method).
    pub(crate) ident: Ident,
    /// The proto method name.
    pub(crate) name: String,
    /// The types, read from the signature.
    pub(crate) shape: Shape,
    /// The return type in the emitted trait, which the client's trait impl repeats.
    pub(crate) output: ReturnType,
    /// The method's doc comments, repeated on the client's method.
    pub(crate) docs: Vec<Attribute>,
    pub(crate) level: Level,
}

/// What a method's signature says.
pub(crate) struct Shape {
    pub(crate) kind: MethodKind,
    /// Written as tonic writes it: `Request<..>` in, `Response<..>` out.
    pub(crate) tonic: bool,
    /// The request parameter's type as written (`Policy`, `Request<Policy>`).
    pub(crate) written_request: Type,
    /// The request's body (`Policy`, `RequestStream<Policy>`).
    pub(crate) request: Type,
    /// The request message (`Policy`).
    pub(crate) request_message: Type,
    /// The response's body (`Receipt`, `ResponseStream<Receipt>`).
    pub(crate) response: Type,
    /// The response message (`Receipt`).
    pub(crate) response_message: Type,
}

/// Rejects trait forms a client cannot implement.
pub(crate) fn check_trait(item: &mut ItemTrait, ctxt: &mut Ctxt) {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        ctxt.shape(syn::Error::new_spanned(
            &item.generics,
            "a #[resilient] trait cannot be generic: it describes one gRPC service with fixed message types",
        ));
    }
    if let Some(token) = item.unsafety {
        ctxt.shape(syn::Error::new(
            token.span,
            "a #[resilient] trait cannot be unsafe",
        ));
    }
    if let Some(token) = item.auto_token {
        ctxt.shape(syn::Error::new(
            token.span,
            "a #[resilient] trait cannot be an auto trait",
        ));
    }
    for extra in take_resilient(&mut item.attrs) {
        ctxt.shape(syn::Error::new_spanned(
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
pub(crate) fn take_resilient(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (taken, kept) = std::mem::take(attrs).into_iter().partition(is_resilient);
    *attrs = kept;
    taken
}

/// Reads one trait method: strips its attribute, checks its shape, rewrites an
/// `async fn`. `None` if the shape is wrong (the errors are in `ctxt`).
pub(crate) fn method(function: &mut TraitItemFn, ctxt: &mut Ctxt) -> Option<Method> {
    let mut attrs = take_resilient(&mut function.attrs).into_iter();
    let args = match attrs.next() {
        Some(attr) => {
            let span = attr.path().span();
            let tokens = match attr.meta {
                syn::Meta::List(list) => list.tokens,
                syn::Meta::Path(_) => TokenStream::new(),
                syn::Meta::NameValue(nv) => {
                    ctxt.error(syn::Error::new_spanned(
                        nv.eq_token,
                        "expected `#[resilient(...)]` or `#[resilient]`",
                    ));
                    TokenStream::new()
                }
            };
            attr::parse(tokens, span, Scope::Method, ctxt)
        }
        None => Args {
            name: None,
            level: Level::empty(function.sig.ident.span()),
        },
    };
    for extra in attrs {
        ctxt.error(syn::Error::new_spanned(
            extra,
            "#[resilient] is written twice on this method; merge the two into one",
        ));
    }
    for attr in &function.attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            ctxt.shape(syn::Error::new_spanned(
                attr,
                "an RPC method cannot be conditional: the client needs the same methods in every build",
            ));
        }
    }
    if let Some(body) = &function.default {
        ctxt.shape(syn::Error::new(
            body.brace_token.span.join(),
            "an RPC method has no body: the generated client implements it; end the signature with `;`",
        ));
    }
    let types = signature(&mut function.sig, ctxt)?;
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
fn signature(sig: &mut Signature, ctxt: &mut Ctxt) -> Option<Shape> {
    let before = ctxt.shape_errors();
    let mut fail = |tokens: &dyn ToTokens, message: &str| {
        ctxt.shape(syn::Error::new_spanned(tokens, message));
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
        None => ctxt.shape(syn::Error::new(
            parens,
            format!("an RPC method takes `&self` and one request; {EXPECTED}"),
        )),
    }
    let request = match inputs.next() {
        Some(FnArg::Typed(arg)) => Some((*arg.ty).clone()),
        Some(FnArg::Receiver(r)) => {
            ctxt.shape(syn::Error::new_spanned(
                r,
                "`self` can only be the first parameter",
            ));
            None
        }
        None => {
            if matches!(sig.inputs.first(), Some(FnArg::Receiver(_))) {
                ctxt.shape(syn::Error::new(
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
        ctxt.shape(syn::Error::new_spanned(
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
        ctxt.shape(match &sig.output {
            ReturnType::Type(_, ty) => syn::Error::new_spanned(ty, message),
            ReturnType::Default => syn::Error::new(sig.paren_token.span.close(), message),
        });
        return None;
    };
    if last_segment(&status).is_none_or(|s| s.ident != "Status") {
        ctxt.shape(syn::Error::new_spanned(
            &status,
            "the error type of an RPC is `Status` (tai_runtime::Status, which is tonic::Status)",
        ));
    }
    let written_request = request.clone();
    let (request, response, tonic) = match (
        request.as_ref().map(tonic_inner_request),
        tonic_inner(&response, "Response"),
    ) {
        (Some(Some(req)), Some(resp)) => (Some(req), resp, true),
        (Some(None), None) => (request, response, false),
        (Some(Some(_)), None) => {
            ctxt.shape(syn::Error::new_spanned(&response, MIXED));
            (None, response, false)
        }
        (Some(None), Some(_)) => {
            if let Some(req) = &request {
                ctxt.shape(syn::Error::new_spanned(req, MIXED));
            }
            (None, response, false)
        }
        (None, _) => (None, response, false),
    };
    for (ty, what) in [(request.as_ref(), "request"), (Some(&response), "response")] {
        if let Some(ty) = ty.filter(|t| last_segment(t).is_some_and(|s| s.ident == "Streaming")) {
            ctxt.shape(syn::Error::new_spanned(
                ty,
                format!(
                    "a tai client's {what} stream is `{}<Message>`: tonic's `Streaming` is the server's side of a stream, \
                     and cannot carry the call's deadline",
                    if what == "request" { "RequestStream" } else { "ResponseStream" }
                ),
            ));
        }
    }
    let request = request.filter(|_| ctxt.shape_errors() == before)?;
    let written_request = written_request?;

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
    Some(Shape {
        kind,
        tonic,
        written_request,
        request_message: request_stream.unwrap_or_else(|| request.clone()),
        request,
        response_message: response_stream.unwrap_or_else(|| response.clone()),
        response,
    })
}

const MIXED: &str = "write an RPC's request and response in the same form: \
                     plain messages (`request: Req` -> `Result<Resp, Status>`) \
                     or as tonic does (`request: Request<Req>` -> `Result<Response<Resp>, Status>`)";

/// `Request<T>` → `Some(T)`.
fn tonic_inner_request(ty: &Type) -> Option<Type> {
    tonic_inner(ty, "Request")
}

/// `Name<T>` (tonic's `Request` or `Response`) → `T`.
fn tonic_inner(ty: &Type, name: &str) -> Option<Type> {
    match type_args(ty, name)?.as_slice() {
        [inner] => Some((*inner).clone()),
        _ => None,
    }
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
