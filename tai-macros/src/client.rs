//! The generated client: a struct over a transport, one inherent method per RPC
//! (each a single call into `tai_runtime::__private::ClientCore`), the trait impl
//! that forwards to them, the `static` policy data they index into, and the access
//! rules (`ACCESS_RULES`) a server of the trait enforces.
//!
//! The expansion is small on purpose: everything that behaves lives in the runtime,
//! and the data is written by `tokens.rs`. tonic users find tonic's habits here:
//! each RPC method takes `impl IntoRequest<Req>` (or `impl IntoStreamingRequest`)
//! and returns a `Response`, whatever form the trait is written in; `connect`,
//! `connect_lazy`, `new`, `with_interceptor`, `send_compressed`,
//! `accept_compressed`, `max_decoding_message_size`, `max_encoding_message_size`
//! and `From<T>`. An RPC named like one of these wins over it.

use std::collections::HashSet;

use heck::ToShoutySnakeCase;
use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, ItemTrait, Type};
use tai_model::{Balancer, MethodKind, ResolvedPolicy, ResolvedThrottle};

use crate::doc::{describe, kind_name};
use crate::shape::Method;
use crate::tokens::Setters;

/// Everything the generated client is made from.
pub(crate) struct Client<'a> {
    pub(crate) item: &'a ItemTrait,
    pub(crate) service_name: String,
    pub(crate) methods: &'a [Method],
    pub(crate) policies: &'a [ResolvedPolicy],
    pub(crate) throttle: Option<ResolvedThrottle>,
    pub(crate) balancer: Option<Balancer>,
}

impl Client<'_> {
    /// The client, its policy `static` and its impls, to go after the trait.
    pub(crate) fn generate(&self) -> TokenStream {
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
        let unless =
            |name: &str, tokens: TokenStream| (!rust_names.contains(name)).then_some(tokens);
        let core = quote!(::tai_runtime::__private::ClientCore);
        let encoding = quote!(::tai_runtime::CompressionEncoding);
        let options = [
            unless(
                "new",
                quote! {
                    /// A client that sends its calls over `transport`: a `tai_runtime::Channel`,
                    /// a tonic `Channel`, or any tower service that speaks gRPC wrapped in
                    /// `tai_runtime::Tower`.
                    pub fn new(transport: #t) -> Self {
                        <Self as ::core::convert::From<#t>>::from(transport)
                    }
                },
            ),
            unless(
                "with_metrics",
                quote! {
                    /// A client over `transport` that records its metrics into `metrics`
                    /// (a `tai_runtime::metrics::Metrics` over a registry of yours)
                    /// instead of the process's global ones.
                    pub fn with_metrics(
                        transport: #t,
                        metrics: &::tai_runtime::metrics::Metrics,
                    ) -> Self {
                        Self {
                            core: #core::with_metrics(transport, &#statik, metrics),
                        }
                    }
                },
            ),
            unless(
                "with_interceptor",
                quote! {
                    /// A client whose `interceptor` (tonic's `Interceptor`: a closure over
                    /// `Request<()>` will do) runs on every attempt before it is sent: it may
                    /// add metadata, or refuse the call with a status, which is final (not
                    /// retried, and no circuit-breaker failure).
                    pub fn with_interceptor<F>(transport: #t, interceptor: F) -> Self
                    where
                        F: ::tai_runtime::Interceptor + ::core::marker::Send + 'static,
                    {
                        let mut client = <Self as ::core::convert::From<#t>>::from(transport);
                        #core::set_interceptor(&mut client.core, interceptor);
                        client
                    }
                },
            ),
            unless(
                "send_compressed",
                quote! {
                    /// Compresses requests with `encoding` (gzip or zstd).
                    #[must_use]
                    pub fn send_compressed(mut self, encoding: #encoding) -> Self {
                        #core::send_compressed(&mut self.core, encoding);
                        self
                    }
                },
            ),
            unless(
                "accept_compressed",
                quote! {
                    /// Accepts responses compressed with `encoding` (gzip or zstd).
                    #[must_use]
                    pub fn accept_compressed(mut self, encoding: #encoding) -> Self {
                        #core::accept_compressed(&mut self.core, encoding);
                        self
                    }
                },
            ),
            unless(
                "max_decoding_message_size",
                quote! {
                    /// The largest response message accepted, in bytes.
                    #[must_use]
                    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
                        #core::max_decoding_message_size(&mut self.core, limit);
                        self
                    }
                },
            ),
            unless(
                "max_encoding_message_size",
                quote! {
                    /// The largest request message sent, in bytes.
                    #[must_use]
                    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
                        #core::max_encoding_message_size(&mut self.core, limit);
                        self
                    }
                },
            ),
        ];
        let connect = [
            unless(
                "connect",
                quote! {
                    /// Connects to `dst` (e.g. `"http://127.0.0.1:50051"`) over a new
                    /// `tai_runtime::Channel` (production preset, the service's balancer),
                    /// and waits until the channel is ready.
                    ///
                    /// # Errors
                    ///
                    /// If the address is invalid, or the channel is not ready after the
                    /// connect timeout: the error names the address and why.
                    pub async fn connect(
                        dst: impl ::core::convert::Into<::std::string::String>,
                    ) -> ::core::result::Result<Self, ::tai_runtime::ConnectError> {
                        ::tai_runtime::__private::connect(::core::convert::Into::into(dst), &#statik)
                            .await
                            .map(<Self as ::core::convert::From<::tai_runtime::Channel>>::from)
                    }
                },
            ),
            unless(
                "connect_lazy",
                quote! {
                    /// Like `connect`, but returns at once: the first call waits for the
                    /// connection.
                    ///
                    /// # Errors
                    ///
                    /// If the address is invalid.
                    pub fn connect_lazy(
                        dst: impl ::core::convert::Into<::std::string::String>,
                    ) -> ::core::result::Result<Self, ::tai_runtime::ConnectError> {
                        ::tai_runtime::__private::connect_lazy(::core::convert::Into::into(dst), &#statik)
                            .map(<Self as ::core::convert::From<::tai_runtime::Channel>>::from)
                    }
                },
            ),
        ];
        let inherent = self
            .methods
            .iter()
            .zip(self.policies)
            .enumerate()
            .map(|(index, (m, p))| self.rpc(index, m, p));
        let forwarding = self.methods.iter().map(|m| {
            let ident = &m.ident;
            let request = &m.shape.written_request;
            let output = &m.output;
            let call = quote!(#client::#ident(self, request));
            let body = if m.shape.tonic {
                call
            } else {
                quote!(::tai_runtime::__private::into_inner(#call))
            };
            quote! {
                fn #ident(&self, request: #request) #output {
                    #body
                }
            }
        });
        let doc = self.client_doc();
        let access_rules = self.access_rules(&client);

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
                #(#options)*
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

                #access_rules

                #(#connect)*
            }

        }
    }

    /// The client's method for one RPC: the call into the runtime that its kind and
    /// policy need.
    fn rpc(&self, index: usize, m: &Method, p: &ResolvedPolicy) -> TokenStream {
        let ident = &m.ident;
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
            Output = ::core::result::Result<::tai_runtime::Response<#response>, ::tai_runtime::Status>,
        > + ::core::marker::Send + '_ };
        let request = match m.shape.kind {
            MethodKind::Unary | MethodKind::ServerStreaming => {
                quote!(impl ::tai_runtime::IntoRequest<#request_message>)
            }
            MethodKind::ClientStreaming | MethodKind::Bidi => {
                quote!(impl ::tai_runtime::IntoStreamingRequest<Message = #request_message>)
            }
        };
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

    /// `static __TAI_SERVICE_X: ServicePolicy = ServicePolicy::new(..).with_..(..);`
    fn service_policy(&self) -> TokenStream {
        let statik = self.static_ident();
        let name = &self.service_name;
        let methods = self.methods.iter().zip(self.policies).map(|(m, p)| {
            let name = &m.name;
            let rust_name = m.ident.unraw().to_string();
            let path = self.path(m);
            let kind = Ident::new(&format!("{:?}", m.shape.kind), Span::call_site());
            let idempotent = p.idempotent.then(|| quote!(.with_idempotent(true)));
            let setters = Setters(Vec::new())
                .set("with_timeout", p.timeout.as_ref())
                .set("with_max_timeout", p.max_timeout.as_ref())
                .set("with_retry", p.retry.as_ref())
                .set("with_hedging", p.hedging.as_ref())
                .set("with_breaker", p.breaker.as_ref());
            quote! {
                ::tai_runtime::policy::MethodPolicy::new(
                    #name,
                    #rust_name,
                    #path,
                    ::tai_runtime::policy::MethodKind::#kind,
                )
                #idempotent
                #setters
            }
        });
        let setters = Setters(Vec::new())
            .set("with_throttle", self.throttle.as_ref())
            .set("with_balancer", self.balancer.as_ref());
        quote! {
            #[doc(hidden)]
            static #statik: ::tai_runtime::policy::ServicePolicy =
                ::tai_runtime::policy::ServicePolicy::new(#name, &[#(#methods),*]) #setters;
        }
    }

    /// `pub const ACCESS_RULES: AccessTable`: who may call each method, for the
    /// server. Printed by the model's one table printer, which tai-build uses too.
    fn access_rules(&self, client: &Ident) -> TokenStream {
        let paths: Vec<String> = self.methods.iter().map(|m| self.path(m)).collect();
        let table = tai_model::access_table_expr(
            &self.service_name,
            paths
                .iter()
                .zip(self.policies)
                .map(|(path, p)| (path.as_str(), p.auth.as_ref())),
        );
        // The printer writes Rust tokens; should it ever not, the compiler says where.
        let table: TokenStream = table.parse().unwrap_or_else(|_| {
            quote!(::core::compile_error!(
                "#[resilient] wrote an invalid access table"
            ))
        });
        let doc = format!(
            " Who may call each method of `{}`, as the `auth(..)` of the trait and its methods \
             declare; a method with no rule follows the server's default. A server enforces it \
             when it serves the trait's implementation with \
             `Server::builder().add_service_with_rules(service, {client}::ACCESS_RULES)`.",
            self.service_name
        );
        quote! {
            #[doc = #doc]
            pub const ACCESS_RULES: ::tai_runtime::policy::AccessTable = #table;
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
            " Its methods have tonic's shape: a message or a `Request` in (metadata, `set_timeout` for the \
             call's deadline), a `Response` out (headers and trailers). Create one with `connect(address)` \
             (waits until ready), `connect_lazy(address)`, `new(transport)` / `From` over any transport, `with_interceptor(transport, f)`, or \
             `with_metrics(transport, &metrics)` (metrics of your own); clones share the breakers and the throttle. \
             `tai_runtime::Resilient` reads their state."
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
