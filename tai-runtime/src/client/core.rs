//! The engine behind one generated client: [`ClientCore`], its entry points
//! (one per kind of call), and what it asks of a transport and of messages.
//!
//! The entry points have tonic's call shape: they take a [`tonic::Request`] (its
//! metadata, extensions and `set_timeout`) and give a [`tonic::Response`] (the
//! server's headers and trailers). A single-request call shares its message (one
//! `Arc`) between every attempt it may make — retries, hedges, a transparent
//! retry — so no message is ever cloned; each attempt gets its own copy of the
//! request's metadata and extensions (tonic's `Extensions` are `Clone`, as
//! `http::Extensions` are). Calls without a policy and calls with one run in
//! different futures: a call's future is as big as its largest branch.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::time::Instant;
use tonic::codec::{Codec, Streaming};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::attempt::{Answering, Failure, Head, open_stream, read_unary, send_one, send_stream};
use super::codec::{SharedCodec, SharedRequest};
use super::contract::{RequestMessage, ResponseMessage, Transport};
use super::deadline::{self, CallDeadline};
use super::observed::Observed;
use super::options::{Compression, MessageLimits, SharedInterceptor};
use super::state::{ClientState, EffectivePolicy};
use super::stream::{RequestStream, ResponseStream};
use crate::policy::MethodPolicy;
use crate::wire;

/// The engine behind one generated client: the transport, the shared state, and
/// the client's own options (message limits, compression, interceptor).
pub struct ClientCore<T> {
    pub(super) transport: T,
    pub(super) state: Arc<ClientState>,
    pub(super) limits: MessageLimits,
    pub(super) compression: Compression,
    pub(super) interceptor: Option<SharedInterceptor>,
}

impl<T: Clone> Clone for ClientCore<T> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport.clone(),
            state: Arc::clone(&self.state),
            limits: self.limits,
            compression: self.compression,
            interceptor: self.interceptor.clone(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ClientCore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCore")
            .field("transport", &self.transport)
            .field("state", &self.state)
            .field("limits", &self.limits)
            .field("compression", &self.compression)
            .field("interceptor", &self.interceptor.is_some())
            .finish()
    }
}

/// The attempts of one single-request call, sharing its request.
pub(super) struct Attempts<'a, T, Req, Resp, R> {
    pub(super) core: &'a ClientCore<T>,
    pub(super) method: usize,
    pub(super) deadline: Option<CallDeadline>,
    pub(super) request: Arc<SharedRequest<Req>>,
    pub(super) read: R,
    pub(super) response: PhantomData<fn() -> Resp>,
}

impl<'a, T: Transport, Req: RequestMessage, Resp: ResponseMessage, R>
    Attempts<'a, T, Req, Resp, R>
{
    /// Attempt number `previous` (0 for the first).
    pub(super) fn make<Out, RFut>(
        &self,
        previous: u32,
    ) -> impl Future<Output = (Result<Out, Failure>, Instant)>
    + Answering
    + use<'a, T, Req, Resp, R, Out, RFut>
    where
        R: Fn(Response<Streaming<Resp>>, Head) -> RFut + Copy,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let exchange = Exchange {
            request: Request::from_parts(
                self.request.metadata.clone(),
                self.request.extensions.clone(),
                Arc::clone(&self.request),
            ),
            codec: SharedCodec::<Req, Resp>::default(),
            send: send_one,
        };
        self.core
            .attempt(self.method, self.deadline, previous, exchange, self.read)
    }
}

/// What one attempt sends: the request, its codec, and how (one message or a
/// stream).
pub(super) struct Exchange<M, C, S> {
    pub(super) request: Request<M>,
    pub(super) codec: C,
    pub(super) send: S,
}

impl<T: Transport> ClientCore<T> {
    /// A client core over `transport` running `policy`. Over a tai
    /// [`Channel`](crate::Channel) (a transport whose [`Transport::channel`] names
    /// one) the message size limits come from its configuration; over any other
    /// transport they are 4 MiB each way.
    ///
    /// Over a tai `Channel` to named addresses, the breakers and the retry
    /// throttle are shared with every other client of `policy` to the same
    /// target (see [`ClientState`]); over any other transport they are this
    /// client's (and its clones').
    pub fn new(transport: T, policy: &'static crate::policy::ServicePolicy) -> Self {
        Self::with_metrics(transport, policy, crate::metrics::Metrics::global())
    }

    /// As [`new`](Self::new), recording the client's metrics into `metrics`
    /// instead of the global ones; breakers and the throttle are shared only with
    /// clients that record into the same `metrics`.
    pub fn with_metrics(
        transport: T,
        policy: &'static crate::policy::ServicePolicy,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        // What only a tai `Channel` knows: its message limits, its target (for
        // sharing breakers), its endpoint statistics.
        let channel = transport.channel();
        let limits = channel.map_or(MessageLimits::DEFAULT, |c| MessageLimits {
            send: c.config().connection.max_send_message_size,
            receive: c.config().connection.max_receive_message_size,
        });
        let target = channel.and_then(crate::Channel::target);
        let state = ClientState::with_metrics(policy, target, metrics).with_channel(channel);
        Self {
            transport,
            state: Arc::new(state),
            limits,
            compression: Compression::default(),
            interceptor: None,
        }
    }

    /// The shared run-time state.
    pub fn state(&self) -> &ClientState {
        &self.state
    }

    /// The method's policy now: compiled, or under the run-time service config.
    pub(super) fn method(&self, index: usize) -> EffectivePolicy<'_> {
        self.state.method_policy(index)
    }

    /// Runs a whole call inside a tracing span and records its metrics. The call
    /// starts when first polled: `call` gets that instant (its deadline counts
    /// from it) and yields the result with the instant it ended (read once,
    /// shared with the breaker).
    pub(super) fn observed<Out, F, Fut>(&self, index: usize, call: F) -> Observed<'_, F, Fut>
    where
        F: FnOnce(Instant) -> Fut,
        Fut: Future<Output = (Result<Out, Status>, Instant)>,
    {
        Observed::new(
            call,
            call_span(self.method(index).path),
            self.state.metrics_at(index),
        )
    }

    /// A unary call of a method compiled without retry or hedging: one attempt
    /// (and one transparent retry, when the server never processed it), unless a
    /// run-time service config has given the method a retry or hedging policy
    /// (see `route.rs`).
    pub fn unary<Req, Resp>(
        &self,
        method: usize,
        request: impl tonic::IntoRequest<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        let request = request.into_request();
        self.observed(method, move |start| {
            self.single_by_policy(method, start, request, read_unary)
        })
    }

    /// A unary call under its retry or hedging policy. The request is shared by
    /// all attempts, never cloned.
    pub fn unary_retry<Req, Resp>(
        &self,
        method: usize,
        request: impl tonic::IntoRequest<Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        let request = request.into_request();
        self.observed(method, move |start| {
            self.single_retried(method, start, request, read_unary)
        })
    }

    /// A server-streaming call of a method compiled without retry or hedging
    /// (as [`unary`](Self::unary), a run-time config may give it one). The
    /// breaker counts the stream's final status, not its headers.
    pub fn server_streaming<Req, Resp>(
        &self,
        method: usize,
        request: impl tonic::IntoRequest<Req>,
    ) -> impl Future<Output = Result<Response<ResponseStream<Resp>>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        let request = request.into_request();
        self.observed(method, move |start| {
            self.single_by_policy(method, start, request, open_stream)
        })
    }

    /// A server-streaming call under its retry or hedging policy: attempts repeat
    /// until the stream is established (response headers arrive); after that the
    /// call is committed.
    pub fn server_streaming_retry<Req, Resp>(
        &self,
        method: usize,
        request: impl tonic::IntoRequest<Req>,
    ) -> impl Future<Output = Result<Response<ResponseStream<Resp>>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        let request = request.into_request();
        self.observed(method, move |start| {
            self.single_retried(method, start, request, open_stream)
        })
    }

    /// A client-streaming call (deadline and breaker; a request stream cannot be
    /// re-sent, so no retry).
    pub fn client_streaming<Req, Resp>(
        &self,
        method: usize,
        requests: impl tonic::IntoStreamingRequest<Message = Req>,
    ) -> impl Future<Output = Result<Response<Resp>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        let requests = boxed_stream(requests);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        self.observed(method, move |start| {
            self.once(method, start, requests, codec, read_unary)
        })
    }

    /// A bidi-streaming call (deadline and breaker, no retry).
    pub fn bidi_streaming<Req, Resp>(
        &self,
        method: usize,
        requests: impl tonic::IntoStreamingRequest<Message = Req>,
    ) -> impl Future<Output = Result<Response<ResponseStream<Resp>>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        let requests = boxed_stream(requests);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        self.observed(method, move |start| {
            self.once(method, start, requests, codec, open_stream)
        })
    }

    /// One attempt of a streaming-request call under the method's deadline and
    /// breaker: no retry loop, since the requests cannot be sent again.
    pub(super) fn once<M, C, Out, R, RFut>(
        &self,
        method: usize,
        start: Instant,
        requests: Request<RequestStream<M>>,
        codec: C,
        read: R,
    ) -> impl Future<Output = (Result<Out, Status>, Instant)> + use<'_, M, C, Out, R, RFut, T>
    where
        M: Send + Sync + 'static,
        C: Codec<Encode = M>,
        C::Decode: Send + Sync + 'static,
        R: FnOnce(Response<Streaming<C::Decode>>, Head) -> RFut,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let (mut metadata, extensions, requests) = requests.into_parts();
        let m = self.method(method);
        let handler = crate::context::outgoing_deadline(&extensions);
        let deadline = caller_timeout(&mut metadata, &m).and_then(|asked| {
            deadline::capped(deadline::for_call(&m, start, asked), handler, start, m.path)
        });
        let exchange = Exchange {
            request: Request::from_parts(metadata, extensions, requests),
            codec,
            send: send_stream,
        };
        let attempt = match deadline {
            Ok(deadline) => Either::Left(self.attempt(method, deadline, 0, exchange, read)),
            Err(status) => Either::Right(std::future::ready((
                Err(super::attempt::Failure::uncommitted(status)),
                start,
            ))),
        };
        attempt.map(|(result, end)| (result.map_err(|f| f.status), end))
    }

    /// The attempts of a single-request call: the size check, the caller's
    /// timeout, then a maker of attempts that all share the one request. Calls
    /// without a policy and calls with one run them in different futures
    /// ([`single`](Self::single), [`single_retried`](Self::single_retried)): a
    /// call's future is as big as its largest branch, and a call without a policy
    /// needs no retry loop.
    pub(super) fn attempts<Req, Resp, R>(
        &self,
        method: usize,
        start: Instant,
        request: Request<Req>,
        read: R,
    ) -> Result<Attempts<'_, T, Req, Resp, R>, Status>
    where
        Req: RequestMessage,
    {
        let m = self.method(method);
        let (mut metadata, extensions, request) = request.into_parts();
        self.limits.check_send(&request, m.path)?;
        let asked = caller_timeout(&mut metadata, &m)?;
        let handler = crate::context::outgoing_deadline(&extensions);
        let deadline =
            deadline::capped(deadline::for_call(&m, start, asked), handler, start, m.path)?;
        Ok(Attempts {
            core: self,
            method,
            deadline,
            request: Arc::new(SharedRequest {
                message: request,
                metadata,
                extensions,
            }),
            read,
            response: PhantomData,
        })
    }

    /// A single-request call without retry or hedging.
    pub(super) fn single<Req, Resp, Out, R, RFut>(
        &self,
        method: usize,
        start: Instant,
        request: Request<Req>,
        read: R,
    ) -> impl Future<Output = (Result<Out, Status>, Instant)> + use<'_, Req, Resp, Out, R, RFut, T>
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
        R: Fn(Response<Streaming<Resp>>, Head) -> RFut + Copy,
        RFut: Future<Output = Result<Out, Status>>,
    {
        match self.attempts(method, start, request, read) {
            Ok(attempts) => Either::Left(async move { Self::plain(|n| attempts.make(n)).await }),
            Err(status) => Either::Right(std::future::ready((Err(status), start))),
        }
    }

    /// A single-request call under the method's retry or hedging policy.
    pub(super) fn single_retried<Req, Resp, Out, R, RFut>(
        &self,
        method: usize,
        start: Instant,
        request: Request<Req>,
        read: R,
    ) -> impl Future<Output = (Result<Out, Status>, Instant)> + use<'_, Req, Resp, Out, R, RFut, T>
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
        R: Fn(Response<Streaming<Resp>>, Head) -> RFut + Copy,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let m = self.method(method);
        let attempts = self.attempts(method, start, request, read);
        async move {
            let attempts = match attempts {
                Ok(a) => a,
                Err(status) => return (Err(status), start),
            };
            let (deadline, attempt) = (attempts.deadline, |n| attempts.make(n));
            match (&m.retry, &m.hedging) {
                (Some(retry), _) => self.retry(method, retry, deadline, attempt).await,
                (None, Some(hedging)) => self.hedge(method, hedging, deadline, attempt).await,
                (None, None) => Self::plain(attempt).await,
            }
        }
    }

    /// One attempt, and one transparent retry if the server never processed it.
    pub(super) async fn plain<Out, F, Fut>(attempt: F) -> (Result<Out, Status>, Instant)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = (Result<Out, Failure>, Instant)>,
    {
        let (result, end) = attempt(0).await;
        match result {
            Err(f) if f.unprocessed => {
                let (result, end) = attempt(0).await;
                (result.map_err(|f| f.status), end)
            }
            result => (result.map_err(|f| f.status), end),
        }
    }
}

/// A call's span: with OpenTelemetry (feature `otel`), a client span with the
/// `rpc.*` attributes; without, a debug span for logs.
#[cfg(feature = "otel")]
fn call_span(path: &'static str) -> tracing::Span {
    crate::otel::client_span(path)
}

#[cfg(not(feature = "otel"))]
fn call_span(path: &'static str) -> tracing::Span {
    tracing::debug_span!("grpc.client", method = path)
}

/// The timeout the caller set with [`Request::set_timeout`], taken out of the
/// metadata (each attempt writes its own `grpc-timeout`, with the time left).
/// A value that is not a gRPC timeout is the caller's mistake: INVALID_ARGUMENT,
/// before anything is sent. Most requests carry no metadata at all, and the
/// header is removed by its constant name (removing by `&str` would parse the
/// name at every call).
fn caller_timeout(
    metadata: &mut MetadataMap,
    m: &MethodPolicy,
) -> Result<Option<Duration>, Status> {
    if metadata.is_empty() {
        return Ok(None);
    }
    let mut headers = std::mem::take(metadata).into_headers();
    let removed = headers.remove(wire::GRPC_TIMEOUT);
    *metadata = MetadataMap::from_headers(headers);
    let Some(value) = removed else {
        return Ok(None);
    };
    wire::timeout::decode(value.as_bytes()).map(Some).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{}: the request's grpc-timeout {value:?} is not a gRPC timeout (set it with Request::set_timeout)",
            m.path
        ))
    })
}

/// The caller's request stream, boxed into the one stream type the engine sends.
fn boxed_stream<Req>(
    requests: impl tonic::IntoStreamingRequest<Message = Req>,
) -> Request<RequestStream<Req>> {
    requests
        .into_streaming_request()
        .map(|s| Box::pin(s) as RequestStream<Req>)
}
