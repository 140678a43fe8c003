// The expansion of governor.rs; regenerate with `BLESS=1 cargo test -p tai-macros`.

pub trait Governor {
    /// Proposes a policy.
    fn propose_policy(
        &self,
        request: Policy,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send;
    /// Streams the policies as they change.
    fn watch_policies(
        &self,
        request: Receipt,
    ) -> impl ::core::future::Future<
        Output = Result<ResponseStream<Policy>, Status>,
    > + ::core::marker::Send;
    fn upload(
        &self,
        request: RequestStream<Policy>,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send;
}
#[doc(hidden)]
static __TAI_SERVICE_GOVERNOR: ::tai_runtime::policy::ServicePolicy = ::tai_runtime::policy::ServicePolicy::new(
        "tai.v1.Governor",
        &[
            ::tai_runtime::policy::MethodPolicy::new(
                    "ProposePolicy",
                    "propose_policy",
                    "/tai.v1.Governor/ProposePolicy",
                    ::tai_runtime::policy::MethodKind::Unary,
                )
                .with_idempotent(true)
                .with_timeout(::core::time::Duration::from_secs(2))
                .with_retry(
                    ::tai_runtime::policy::RetryPolicy::new(
                        4,
                        ::core::time::Duration::from_millis(100),
                        ::core::time::Duration::from_secs(10),
                        2.0,
                        ::tai_runtime::policy::CodeSet::of(
                            &[
                                ::tai_runtime::Code::Aborted,
                                ::tai_runtime::Code::Unavailable,
                            ],
                        ),
                    ),
                )
                .with_breaker(
                    ::tai_runtime::policy::BreakerPolicy::new(
                            5,
                            ::core::time::Duration::from_secs(30),
                            ::core::time::Duration::from_secs(300),
                            3,
                            ::tai_runtime::policy::CodeSet::of(
                                &[
                                    ::tai_runtime::Code::Unknown,
                                    ::tai_runtime::Code::DeadlineExceeded,
                                    ::tai_runtime::Code::ResourceExhausted,
                                    ::tai_runtime::Code::Internal,
                                    ::tai_runtime::Code::Unavailable,
                                ],
                            ),
                        )
                        .with_rate(
                            ::tai_runtime::policy::RateRule::new(
                                0.5,
                                ::core::time::Duration::from_secs(10),
                                20,
                            ),
                        ),
                ),
            ::tai_runtime::policy::MethodPolicy::new(
                    "WatchPolicies",
                    "watch_policies",
                    "/tai.v1.Governor/WatchPolicies",
                    ::tai_runtime::policy::MethodKind::ServerStreaming,
                )
                .with_idempotent(true)
                .with_timeout(::core::time::Duration::from_secs(30))
                .with_hedging(
                    ::tai_runtime::policy::HedgingPolicy::new(
                        2,
                        ::core::time::Duration::from_millis(50),
                        ::tai_runtime::policy::CodeSet::EMPTY,
                    ),
                )
                .with_breaker(
                    ::tai_runtime::policy::BreakerPolicy::new(
                        5,
                        ::core::time::Duration::from_secs(30),
                        ::core::time::Duration::from_secs(300),
                        3,
                        ::tai_runtime::policy::CodeSet::of(
                            &[
                                ::tai_runtime::Code::Unknown,
                                ::tai_runtime::Code::DeadlineExceeded,
                                ::tai_runtime::Code::ResourceExhausted,
                                ::tai_runtime::Code::Internal,
                                ::tai_runtime::Code::Unavailable,
                            ],
                        ),
                    ),
                ),
            ::tai_runtime::policy::MethodPolicy::new(
                    "Upload",
                    "upload",
                    "/tai.v1.Governor/Upload",
                    ::tai_runtime::policy::MethodKind::ClientStreaming,
                )
                .with_timeout(::core::time::Duration::from_secs(30))
                .with_breaker(
                    ::tai_runtime::policy::BreakerPolicy::new(
                            5,
                            ::core::time::Duration::from_secs(30),
                            ::core::time::Duration::from_secs(300),
                            3,
                            ::tai_runtime::policy::CodeSet::of(
                                &[
                                    ::tai_runtime::Code::Unknown,
                                    ::tai_runtime::Code::DeadlineExceeded,
                                    ::tai_runtime::Code::ResourceExhausted,
                                    ::tai_runtime::Code::Internal,
                                    ::tai_runtime::Code::Unavailable,
                                ],
                            ),
                        )
                        .with_rate(
                            ::tai_runtime::policy::RateRule::new(
                                0.5,
                                ::core::time::Duration::from_secs(10),
                                20,
                            ),
                        ),
                ),
        ],
    )
    .with_throttle(::tai_runtime::policy::ThrottlePolicy::new(20, 0.1));
/// A resilient client of the `tai.v1.Governor` gRPC service, generated by `#[resilient]` from [`Governor`].
///
/// Each call runs the policy compiled in for its method:
///
/// - `propose_policy` → `/tai.v1.Governor/ProposePolicy` (unary): idempotent; timeout 2s; retry up to 4 attempts on ABORTED, UNAVAILABLE (backoff 100ms to 10s, ×2); breaker opens after 5 failures in a row or 50% of at least 20 calls in 10s (open 30s to 5m).
/// - `watch_policies` → `/tai.v1.Governor/WatchPolicies` (server-streaming): idempotent; timeout 30s; hedging 2 attempts 50ms apart; breaker opens after 5 failures in a row (open 30s to 5m).
/// - `upload` → `/tai.v1.Governor/Upload` (client-streaming): timeout 30s; breaker opens after 5 failures in a row or 50% of at least 20 calls in 10s (open 30s to 5m).
///
/// Retries and hedges are throttled for the whole client: 20 tokens, 0.1 returned per success.
///
/// Its methods have tonic's shape: a message or a `Request` in (metadata, `set_timeout` for the call's deadline), a `Response` out (headers and trailers). Create one with `connect(address)` (waits until ready), `connect_lazy(address)`, `new(transport)` / `From` over any transport, `with_interceptor(transport, f)`, or `with_metrics(transport, &metrics)` (metrics of your own); clones share the breakers and the throttle. `tai_runtime::Resilient` reads their state.
#[derive(::core::clone::Clone)]
#[allow(dead_code)]
pub struct GovernorClient<T = ::tai_runtime::Channel> {
    core: ::tai_runtime::__private::ClientCore<T>,
}
#[allow(dead_code)]
impl<T: ::tai_runtime::__private::Transport> GovernorClient<T> {
    /// A client that sends its calls over `transport`: a `tai_runtime::Channel`,
    /// a tonic `Channel`, or any tower service that speaks gRPC wrapped in
    /// `tai_runtime::Tower`.
    pub fn new(transport: T) -> Self {
        <Self as ::core::convert::From<T>>::from(transport)
    }
    /// A client over `transport` that records its metrics into `metrics`
    /// (a `tai_runtime::metrics::Metrics` over a registry of yours)
    /// instead of the process's global ones.
    pub fn with_metrics(
        transport: T,
        metrics: &::tai_runtime::metrics::Metrics,
    ) -> Self {
        Self {
            core: ::tai_runtime::__private::ClientCore::with_metrics(
                transport,
                &__TAI_SERVICE_GOVERNOR,
                metrics,
            ),
        }
    }
    /// A client whose `interceptor` (tonic's `Interceptor`: a closure over
    /// `Request<()>` will do) runs on every attempt before it is sent: it may
    /// add metadata, or refuse the call with a status, which is final (not
    /// retried, and no circuit-breaker failure).
    pub fn with_interceptor<F>(transport: T, interceptor: F) -> Self
    where
        F: ::tai_runtime::Interceptor + ::core::marker::Send + 'static,
    {
        let mut client = <Self as ::core::convert::From<T>>::from(transport);
        ::tai_runtime::__private::ClientCore::set_interceptor(
            &mut client.core,
            interceptor,
        );
        client
    }
    /// Compresses requests with `encoding` (gzip or zstd).
    #[must_use]
    pub fn send_compressed(
        mut self,
        encoding: ::tai_runtime::CompressionEncoding,
    ) -> Self {
        ::tai_runtime::__private::ClientCore::send_compressed(&mut self.core, encoding);
        self
    }
    /// Accepts responses compressed with `encoding` (gzip or zstd).
    #[must_use]
    pub fn accept_compressed(
        mut self,
        encoding: ::tai_runtime::CompressionEncoding,
    ) -> Self {
        ::tai_runtime::__private::ClientCore::accept_compressed(
            &mut self.core,
            encoding,
        );
        self
    }
    /// The largest response message accepted, in bytes.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        ::tai_runtime::__private::ClientCore::max_decoding_message_size(
            &mut self.core,
            limit,
        );
        self
    }
    /// The largest request message sent, in bytes.
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        ::tai_runtime::__private::ClientCore::max_encoding_message_size(
            &mut self.core,
            limit,
        );
        self
    }
    /// Proposes a policy.
    ///
    /// `/tai.v1.Governor/ProposePolicy` (unary): idempotent; timeout 2s; retry up to 4 attempts on ABORTED, UNAVAILABLE (backoff 100ms to 10s, ×2); breaker opens after 5 failures in a row or 50% of at least 20 calls in 10s (open 30s to 5m).
    pub fn propose_policy(
        &self,
        request: impl ::tai_runtime::IntoRequest<Policy>,
    ) -> impl ::core::future::Future<
        Output = ::core::result::Result<
            ::tai_runtime::Response<Receipt>,
            ::tai_runtime::Status,
        >,
    > + ::core::marker::Send + '_ {
        self.core.unary_retry::<Policy, Receipt>(0, request)
    }
    /// Streams the policies as they change.
    ///
    /// `/tai.v1.Governor/WatchPolicies` (server-streaming): idempotent; timeout 30s; hedging 2 attempts 50ms apart; breaker opens after 5 failures in a row (open 30s to 5m).
    pub fn watch_policies(
        &self,
        request: impl ::tai_runtime::IntoRequest<Receipt>,
    ) -> impl ::core::future::Future<
        Output = ::core::result::Result<
            ::tai_runtime::Response<ResponseStream<Policy>>,
            ::tai_runtime::Status,
        >,
    > + ::core::marker::Send + '_ {
        self.core.server_streaming_retry::<Receipt, Policy>(1, request)
    }
    /// `/tai.v1.Governor/Upload` (client-streaming): timeout 30s; breaker opens after 5 failures in a row or 50% of at least 20 calls in 10s (open 30s to 5m).
    pub fn upload(
        &self,
        request: impl ::tai_runtime::IntoStreamingRequest<Message = Policy>,
    ) -> impl ::core::future::Future<
        Output = ::core::result::Result<
            ::tai_runtime::Response<Receipt>,
            ::tai_runtime::Status,
        >,
    > + ::core::marker::Send + '_ {
        self.core.client_streaming::<Policy, Receipt>(2, request)
    }
}
impl<T: ::tai_runtime::__private::Transport> ::core::convert::From<T>
for GovernorClient<T> {
    fn from(transport: T) -> Self {
        Self {
            core: ::tai_runtime::__private::ClientCore::new(
                transport,
                &__TAI_SERVICE_GOVERNOR,
            ),
        }
    }
}
impl<T: ::tai_runtime::__private::Transport> Governor for GovernorClient<T> {
    fn propose_policy(
        &self,
        request: Policy,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send {
        ::tai_runtime::__private::into_inner(
            GovernorClient::propose_policy(self, request),
        )
    }
    fn watch_policies(
        &self,
        request: Receipt,
    ) -> impl ::core::future::Future<
        Output = Result<ResponseStream<Policy>, Status>,
    > + ::core::marker::Send {
        ::tai_runtime::__private::into_inner(
            GovernorClient::watch_policies(self, request),
        )
    }
    fn upload(
        &self,
        request: RequestStream<Policy>,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send {
        ::tai_runtime::__private::into_inner(GovernorClient::upload(self, request))
    }
}
impl<T: ::tai_runtime::__private::Transport> ::tai_runtime::Resilient
for GovernorClient<T> {
    fn client_state(&self) -> &::tai_runtime::__private::ClientState {
        self.core.state()
    }
}
#[allow(dead_code)]
impl GovernorClient<::tai_runtime::Channel> {
    /// The policy compiled into this client, for building a channel
    /// before the client (its `balancer`, say).
    pub const SERVICE_POLICY: &'static ::tai_runtime::policy::ServicePolicy = &__TAI_SERVICE_GOVERNOR;
    /// Who may call each method of `tai.v1.Governor`, as the `auth(..)` of the trait and its methods declare; a method with no rule follows the server's default. A server enforces it when it serves the trait's implementation with `Server::builder().add_service_with_rules(service, GovernorClient::ACCESS_RULES)`.
    pub const ACCESS_RULES: ::tai_runtime::policy::AccessTable = ::tai_runtime::policy::AccessTable::new(
        "tai.v1.Governor",
        &[
            ::tai_runtime::policy::MethodAccess::new("/tai.v1.Governor/ProposePolicy")
                .with_rule(
                    ::tai_runtime::policy::AccessRule::scopes(&["policies.write"])
                        .with_roles(&["admin"]),
                ),
            ::tai_runtime::policy::MethodAccess::new("/tai.v1.Governor/WatchPolicies")
                .with_rule(::tai_runtime::policy::AccessRule::PUBLIC),
            ::tai_runtime::policy::MethodAccess::new("/tai.v1.Governor/Upload")
                .with_rule(::tai_runtime::policy::AccessRule::scopes(&["policies.read"])),
        ],
    );
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
        ::tai_runtime::__private::connect(
                ::core::convert::Into::into(dst),
                &__TAI_SERVICE_GOVERNOR,
            )
            .await
            .map(<Self as ::core::convert::From<::tai_runtime::Channel>>::from)
    }
    /// Like `connect`, but returns at once: the first call waits for the
    /// connection.
    ///
    /// # Errors
    ///
    /// If the address is invalid.
    pub fn connect_lazy(
        dst: impl ::core::convert::Into<::std::string::String>,
    ) -> ::core::result::Result<Self, ::tai_runtime::ConnectError> {
        ::tai_runtime::__private::connect_lazy(
                ::core::convert::Into::into(dst),
                &__TAI_SERVICE_GOVERNOR,
            )
            .map(<Self as ::core::convert::From<::tai_runtime::Channel>>::from)
    }
}
