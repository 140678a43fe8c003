//! The engine behind one generated client: [`ClientCore`], its entry points
//! (one per kind of call), and what it asks of a transport and of messages.
//!
//! A single-request call shares its request (one `Arc`) between every attempt it
//! may make — retries, hedges, a transparent retry — so no message is ever
//! cloned. Calls without a policy and calls with one run in different futures: a
//! call's future is as big as its largest branch.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::time::Instant;
use tonic::client::GrpcService;
use tonic::codec::{Codec, Streaming};
use tonic::{Request, Response, Status};

use super::attempt::{Answering, Failure, Head, open_stream, read_unary, send_one, send_stream};
use super::codec::SharedCodec;
use super::deadline::{self, CallDeadline};
use super::observed::Observed;
use super::state::ClientState;
use super::stream::{RequestStream, ResponseStream};
use crate::policy::MethodPolicy;

use crate::BoxError;

/// Anything a tai client can send calls over: a tonic `Channel`, or any tower
/// service speaking gRPC over HTTP/2 (with layers of your own around it).
pub trait Transport:
    GrpcService<
        tonic::body::Body,
        Error: Into<BoxError>,
        ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Transport for T where
    T: GrpcService<
            tonic::body::Body,
            Error: Into<BoxError>,
            ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A message a tai client can send. Every prost message qualifies; the check exists
/// so that a type that does not gets an error at the user's type, not deep inside
/// an expansion.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent by a tai client",
    label = "this request type must be a prost message that is Send + Sync + 'static",
    note = "derive it with `#[derive(Clone, PartialEq, prost::Message)]`, or generate it with tai-build"
)]
pub trait RequestMessage: prost::Message + Send + Sync + 'static {}

impl<T: prost::Message + Send + Sync + 'static> RequestMessage for T {}

/// A response message a tai client can receive.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be received by a tai client",
    label = "this response type must be a prost message that is Default + Send + Sync + 'static",
    note = "derive it with `#[derive(Clone, PartialEq, prost::Message)]`, or generate it with tai-build"
)]
pub trait ResponseMessage: prost::Message + Default + Send + Sync + 'static {}

impl<T: prost::Message + Default + Send + Sync + 'static> ResponseMessage for T {}

/// Largest messages sent and accepted: explicit, never unlimited (tonic's own
/// default sends messages of any size).
#[derive(Clone, Copy, Debug)]
pub(super) struct MessageLimits {
    pub(super) send: usize,
    pub(super) receive: usize,
}

impl MessageLimits {
    pub(super) const DEFAULT: MessageLimits = MessageLimits {
        send: 4 << 20,
        receive: 4 << 20,
    };
}

impl MessageLimits {
    /// Refuses a request larger than the send limit before anything is sent, with
    /// RESOURCE_EXHAUSTED as gRPC specifies (a body error mid-send would reach the
    /// caller as an opaque HTTP/2 reset).
    pub(super) fn check_send<M: prost::Message>(
        &self,
        message: &M,
        path: &str,
    ) -> Result<(), Status> {
        let size = message.encoded_len();
        if size > self.send {
            return Err(Status::resource_exhausted(format!(
                "{path}: request of {size} bytes is larger than the {} byte send limit",
                self.send
            )));
        }
        Ok(())
    }
}

/// The engine behind one generated client: the transport and the shared state.
#[derive(Debug)]
pub struct ClientCore<T> {
    pub(super) transport: T,
    pub(super) state: Arc<ClientState>,
    pub(super) limits: MessageLimits,
}

impl<T: Clone> Clone for ClientCore<T> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport.clone(),
            state: Arc::clone(&self.state),
            limits: self.limits,
        }
    }
}

/// The attempts of one single-request call, sharing its request.
pub(super) struct Attempts<'a, T, Req, Resp, R> {
    pub(super) core: &'a ClientCore<T>,
    pub(super) method: usize,
    pub(super) deadline: Option<CallDeadline>,
    pub(super) request: Arc<Req>,
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
            request: Request::new(Arc::clone(&self.request)),
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
    /// [`Channel`](crate::Channel) the message size limits come from its
    /// configuration; over any other transport they are 4 MiB each way.
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
        let channel = (&transport as &dyn std::any::Any).downcast_ref::<crate::Channel>();
        let limits = channel.map_or(MessageLimits::DEFAULT, |c| MessageLimits {
            send: c.config().connection.max_send_message_size,
            receive: c.config().connection.max_receive_message_size,
        });
        let target = channel.and_then(crate::Channel::target);
        let state = ClientState::with_metrics(policy, target, metrics);
        Self {
            transport,
            state: Arc::new(state),
            limits,
        }
    }

    /// The shared run-time state.
    pub fn state(&self) -> &ClientState {
        &self.state
    }

    pub(super) fn method(&self, index: usize) -> &'static MethodPolicy {
        &self.state.policy().methods[index]
    }

    /// Runs a whole call inside a tracing span and records its metrics. The call
    /// starts when first polled: `call` gets that instant (its deadline counts from
    /// it, and [`with_timeout`](crate::with_timeout) around the returned future
    /// applies) and yields the result with the instant it ended (read once, shared
    /// with the breaker).
    pub(super) fn observed<Out, F, Fut>(&self, index: usize, call: F) -> Observed<'_, F, Fut>
    where
        F: FnOnce(Instant) -> Fut,
        Fut: Future<Output = (Result<Out, Status>, Instant)>,
    {
        Observed::new(
            call,
            tracing::debug_span!("grpc.client", method = self.method(index).path),
            self.state.metrics_at(index),
        )
    }

    /// A unary call without retry or hedging (one transparent retry aside, when
    /// the server never processed the attempt).
    pub fn unary<Req, Resp>(
        &self,
        method: usize,
        request: Req,
    ) -> impl Future<Output = Result<Resp, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        self.observed(method, move |start| {
            self.single(method, start, request, read_unary)
        })
    }

    /// A unary call under its retry or hedging policy. The request is shared by
    /// all attempts, never cloned.
    pub fn unary_retry<Req, Resp>(
        &self,
        method: usize,
        request: Req,
    ) -> impl Future<Output = Result<Resp, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        self.observed(method, move |start| {
            self.single_retried(method, start, request, read_unary)
        })
    }

    /// A server-streaming call without retry or hedging. The breaker counts the
    /// stream's final status, not its headers.
    pub fn server_streaming<Req, Resp>(
        &self,
        method: usize,
        request: Req,
    ) -> impl Future<Output = Result<ResponseStream<Resp>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        self.observed(method, move |start| {
            self.single(method, start, request, open_stream)
        })
    }

    /// A server-streaming call under its retry or hedging policy: attempts repeat
    /// until the stream is established (response headers arrive); after that the
    /// call is committed.
    pub fn server_streaming_retry<Req, Resp>(
        &self,
        method: usize,
        request: Req,
    ) -> impl Future<Output = Result<ResponseStream<Resp>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        self.observed(method, move |start| {
            self.single_retried(method, start, request, open_stream)
        })
    }

    /// A client-streaming call (deadline and breaker; a request stream cannot be
    /// re-sent, so no retry).
    pub fn client_streaming<Req, Resp>(
        &self,
        method: usize,
        requests: RequestStream<Req>,
    ) -> impl Future<Output = Result<Resp, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        self.observed(method, move |start| {
            self.once(method, start, requests, codec, read_unary)
        })
    }

    /// A bidi-streaming call (deadline and breaker, no retry).
    pub fn bidi_streaming<Req, Resp>(
        &self,
        method: usize,
        requests: RequestStream<Req>,
    ) -> impl Future<Output = Result<ResponseStream<Resp>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
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
        requests: RequestStream<M>,
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
        let deadline = deadline::for_call(self.method(method), start);
        let exchange = Exchange {
            request: Request::new(requests),
            codec,
            send: send_stream,
        };
        self.attempt(method, deadline, 0, exchange, read)
            .map(|(result, end)| (result.map_err(|f| f.status), end))
    }

    /// The attempts of a single-request call: the size check, then a maker of
    /// attempts that all share the one request. Calls without a policy and calls
    /// with one run them in different futures ([`single`](Self::single),
    /// [`single_retried`](Self::single_retried)): a call's future is as big as
    /// its largest branch, and a call without a policy needs no retry loop.
    pub(super) fn attempts<Req, Resp, R>(
        &self,
        method: usize,
        start: Instant,
        request: Req,
        read: R,
    ) -> Result<Attempts<'_, T, Req, Resp, R>, Status>
    where
        Req: RequestMessage,
    {
        let m = self.method(method);
        self.limits.check_send(&request, m.path)?;
        Ok(Attempts {
            core: self,
            method,
            deadline: deadline::for_call(m, start),
            request: Arc::new(request),
            read,
            response: PhantomData,
        })
    }

    /// A single-request call without retry or hedging.
    pub(super) fn single<Req, Resp, Out, R, RFut>(
        &self,
        method: usize,
        start: Instant,
        request: Req,
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
        request: Req,
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

/// Builds a channel to `dst` for the generated `connect`: the production preset
/// with the service's balancer. Non-blocking: the first call waits for the
/// connection.
pub async fn connect(
    dst: String,
    policy: &'static crate::policy::ServicePolicy,
) -> Result<crate::Channel, crate::ConnectError> {
    let mut config = crate::config::ClientConfig::default();
    if let Some(balancer) = policy.balancer {
        config.balancer = balancer;
    }
    crate::Channel::builder(crate::channel::Endpoints::one(dst))
        .config(config)
        .build()
}
