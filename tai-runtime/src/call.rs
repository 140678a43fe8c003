//! The call engine: what a generated client method runs on every call.
//!
//! ```text
//! deadline (whole call) ─► [retry | hedge] loop ─► attempt:
//!     breaker gate ─► grpc-timeout + attempts header ─► tonic ─► classify ─► breaker/throttle
//! ```
//!
//! The breaker gates every attempt, not just the call: a retry loop must not keep
//! hammering a method whose breaker has just opened (resilience4j and Polly order
//! them the same way). Attempts are sent with tonic's `server_streaming` even for
//! unary calls, because that returns as soon as response headers arrive — the
//! moment gRFC A6 says a call is committed and must no longer be retried.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::uri::PathAndQuery;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::client::{Grpc, GrpcService};
use tonic::codec::{Codec, Streaming};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::breaker::{CircuitBreaker, Permit, Rejected};
use crate::codec::SharedCodec;
use crate::deadline::{self, CallDeadline};
use crate::policy::{HedgingPolicy, MethodKind, MethodPolicy, RetryPolicy};
use crate::pushback::Pushback;
use crate::retry::{MAX_ATTEMPTS, Retries};
use crate::state::ClientState;
use crate::stream::{RequestStream, ResponseStream, StreamOutcome};
use crate::throttle::RetryThrottle;
use crate::timer::{DeadlineTimer, Registration};
use crate::transport::{Screened, TransportFailure};
use crate::wire;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// Why an attempt did not produce a result.
struct Failure {
    status: Status,
    /// The server sent response headers (or a message): A6 forbids retrying now.
    committed: bool,
    /// The breaker refused the attempt; nothing was sent.
    rejected: bool,
    /// The server never processed the attempt (REFUSED_STREAM), or it never left
    /// the client: sending it again is safe, and costs no attempt (A6 transparent
    /// retry).
    unprocessed: bool,
}

impl Failure {
    fn uncommitted(status: Status) -> Self {
        Self {
            status,
            committed: false,
            rejected: false,
            unprocessed: false,
        }
    }

    /// A failure of the transport, as classified before tonic read it.
    fn transport(failure: TransportFailure, path: &str) -> Self {
        let status = if failure.timed_out {
            deadline::exceeded(path)
        } else {
            failure.clone().into_status()
        };
        Self {
            status,
            committed: false,
            rejected: false,
            unprocessed: failure.unprocessed,
        }
    }
}

/// Largest messages sent and accepted: explicit, never unlimited (tonic's own
/// default sends messages of any size).
#[derive(Clone, Copy, Debug)]
struct MessageLimits {
    send: usize,
    receive: usize,
}

impl MessageLimits {
    const DEFAULT: MessageLimits = MessageLimits {
        send: 4 << 20,
        receive: 4 << 20,
    };
}

impl MessageLimits {
    /// Refuses a request larger than the send limit before anything is sent, with
    /// RESOURCE_EXHAUSTED as gRPC specifies (a body error mid-send would reach the
    /// caller as an opaque HTTP/2 reset).
    fn check_send<M: prost::Message>(&self, message: &M, path: &str) -> Result<(), Status> {
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
    transport: T,
    state: Arc<ClientState>,
    limits: MessageLimits,
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
struct Attempts<'a, T, Req, Resp, R> {
    core: &'a ClientCore<T>,
    method: usize,
    deadline: Option<CallDeadline>,
    request: Arc<Req>,
    read: R,
    response: PhantomData<fn() -> Resp>,
}

impl<'a, T: Transport, Req: RequestMessage, Resp: ResponseMessage, R>
    Attempts<'a, T, Req, Resp, R>
{
    /// Attempt number `previous` (0 for the first).
    fn make<Out, RFut>(
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
struct Exchange<M, C, S> {
    request: Request<M>,
    codec: C,
    send: S,
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
        let channel = (&transport as &dyn std::any::Any).downcast_ref::<crate::Channel>();
        let limits = channel.map_or(MessageLimits::DEFAULT, |c| MessageLimits {
            send: c.config().connection.max_send_message_size,
            receive: c.config().connection.max_receive_message_size,
        });
        let state = match channel.and_then(crate::Channel::target) {
            Some(target) => ClientState::for_target(policy, target),
            None => ClientState::new(policy),
        };
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

    fn method(&self, index: usize) -> &'static MethodPolicy {
        &self.state.policy().methods[index]
    }

    /// Runs a whole call inside a tracing span and records its metrics. The call
    /// starts when first polled: `call` gets that instant (its deadline counts from
    /// it, and [`with_timeout`](crate::with_timeout) around the returned future
    /// applies) and yields the result with the instant it ended (read once, shared
    /// with the breaker).
    fn observed<Out, F, Fut>(&self, index: usize, call: F) -> Observed<'_, F, Fut>
    where
        F: FnOnce(Instant) -> Fut,
        Fut: Future<Output = (Result<Out, Status>, Instant)>,
    {
        Observed {
            call: Call::Waiting { start: Some(call) },
            span: tracing::debug_span!("grpc.client", method = self.method(index).path),
            start: None,
            metrics: self.state.metrics_at(index),
        }
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
    fn once<M, C, Out, R, RFut>(
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
    fn attempts<Req, Resp, R>(
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
    fn single<Req, Resp, Out, R, RFut>(
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
    fn single_retried<Req, Resp, Out, R, RFut>(
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
    async fn plain<Out, F, Fut>(attempt: F) -> (Result<Out, Status>, Instant)
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

    /// gRFC A6 retry, decision for decision as grpc-go makes it.
    async fn retry<Out, F, Fut>(
        &self,
        index: usize,
        retry: &RetryPolicy,
        deadline: Option<CallDeadline>,
        attempt: F,
    ) -> (Result<Out, Status>, Instant)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = (Result<Out, Failure>, Instant)>,
    {
        let m = self.method(index);
        let throttle = self.state.throttle();
        let mut retries = Retries::default();
        // One transparent retry per call, as grpc-go allows: it costs no attempt
        // and no throttle token.
        let mut transparent = true;
        loop {
            let (result, end) = attempt(retries.previous).await;
            let failure = match result {
                Ok(out) => return (Ok(out), end),
                Err(f) => f,
            };
            if failure.committed || failure.rejected {
                return (Err(failure.status), end);
            }
            if failure.unprocessed && std::mem::take(&mut transparent) {
                tracing::debug!(
                    method = m.path,
                    "transparent retry: the server never processed the attempt"
                );
                continue;
            }
            let decision = self
                .state
                .with_rng(|rng| retries.next_delay(retry, &failure.status, throttle, rng));
            let Some(delay) = decision else {
                return (Err(failure.status), end);
            };
            if let Some(d) = deadline
                && end + delay >= d.at
            {
                return (
                    Err(deadline::exceeded_before_retry(m.path, &failure.status)),
                    end,
                );
            }
            tracing::debug!(method = m.path, attempt = retries.previous + 1, ?delay, code = ?failure.status.code(), "retrying");
            self.state.metrics_at(index).retries.inc();
            tokio::time::sleep(delay).await;
        }
    }

    /// gRFC A6 hedging: attempt n+1 starts `delay` after attempt n, at once after a
    /// non-fatal failure, or after the server's pushback. The first success, or a
    /// fatal failure, ends the call and cancels the rest; the first attempt to
    /// receive response headers commits the call (the others are cancelled, no
    /// more start). No attempt starts once retries are throttled, the breaker
    /// refuses one, or the call's deadline would pass first; with nothing left in
    /// flight the call then ends with the last failure at once.
    ///
    /// The attempts in flight (at most five, A6's cap) are polled together by hand
    /// rather than in a `FuturesUnordered`, so that the loop can see which one is
    /// answering and cancel just the others.
    async fn hedge<Out, F, Fut>(
        &self,
        index: usize,
        hedging: &HedgingPolicy,
        deadline: Option<CallDeadline>,
        attempt: F,
    ) -> (Result<Out, Status>, Instant)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = (Result<Out, Failure>, Instant)> + Answering,
    {
        let m = self.method(index);
        let max_attempts = hedging.max_attempts.min(MAX_ATTEMPTS);
        let throttle = self.state.throttle();
        let deadline = deadline.map(|d| d.at);
        let mut in_flight: Vec<(u32, Pin<Box<Fut>>)> = Vec::with_capacity(max_attempts as usize);
        in_flight.push((0, Box::pin(attempt(0))));
        let mut started = 1;
        let mut next_at = Some(Instant::now() + hedging.delay);
        // No more attempts: the call is committed, the breaker is open, or the
        // server said not to retry.
        let mut stopped = false;
        let mut transparent = true;
        let mut last: Option<Status> = None;
        let mut timer = std::pin::pin!(tokio::time::sleep_until(
            next_at.unwrap_or_else(Instant::now)
        ));
        std::future::poll_fn(|cx| {
            loop {
                let mut i = 0;
                while i < in_flight.len() {
                    let Poll::Ready((result, end)) = in_flight[i].1.as_mut().poll(cx) else {
                        i += 1;
                        continue;
                    };
                    let (number, _) = in_flight.swap_remove(i);
                    let failure = match result {
                        Ok(out) => return Poll::Ready((Ok(out), end)),
                        Err(f) => f,
                    };
                    if failure.committed {
                        return Poll::Ready((Err(failure.status), end));
                    }
                    if failure.rejected {
                        // The breaker opened: start no more, but let the attempts
                        // already sent finish.
                        stopped = true;
                        last = Some(failure.status);
                        continue;
                    }
                    if failure.unprocessed && std::mem::take(&mut transparent) {
                        in_flight.push((number, Box::pin(attempt(number))));
                        continue;
                    }
                    if !crate::policy::contains(hedging.non_fatal, failure.status.code()) {
                        return Poll::Ready((Err(failure.status), end));
                    }
                    if let Some(t) = throttle {
                        t.record_failure();
                    }
                    match Pushback::from_metadata(failure.status.metadata()) {
                        Pushback::Stop => stopped = true,
                        Pushback::After(d) => next_at = Some(end + d),
                        Pushback::None => next_at = Some(end),
                    }
                    last = Some(failure.status);
                }
                // A6: the first attempt to receive headers commits the call.
                if let Some(at) = in_flight.iter().position(|(_, f)| f.answering()) {
                    in_flight.swap(0, at);
                    in_flight.truncate(1);
                    stopped = true;
                }
                let now = Instant::now();
                let may_start = !stopped
                    && started < max_attempts
                    && !throttle.is_some_and(RetryThrottle::is_throttled);
                match next_at.filter(|_| may_start) {
                    Some(at) if deadline.is_some_and(|d| at >= d) => {
                        // It would start after the deadline: it never will.
                        next_at = None;
                        if in_flight.is_empty() {
                            let status = last.as_ref().map_or_else(
                                || deadline::exceeded(m.path),
                                |last| deadline::exceeded_before_retry(m.path, last),
                            );
                            return Poll::Ready((Err(status), now));
                        }
                    }
                    Some(at) if at <= now => {
                        self.state.metrics_at(index).hedges.inc();
                        in_flight.push((started, Box::pin(attempt(started))));
                        started += 1;
                        next_at = Some(now + hedging.delay);
                        continue;
                    }
                    Some(at) => {
                        if timer.deadline() != at {
                            timer.as_mut().reset(at);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            continue;
                        }
                    }
                    None => {}
                }
                if in_flight.is_empty() {
                    // Nothing in flight and nothing more to start.
                    let status = last.take().unwrap_or_else(|| {
                        Status::unavailable(format!("{}: no hedged attempt could be made", m.path))
                    });
                    return Poll::Ready((Err(status), now));
                }
                return Poll::Pending;
            }
        })
        .await
    }

    /// One attempt: the deadline check and the breaker gate now, then wait for
    /// the transport, send, classify and record as the returned future runs.
    fn attempt<M, C, S, SFut, Out, R, RFut>(
        &self,
        index: usize,
        deadline: Option<CallDeadline>,
        previous: u32,
        mut exchange: Exchange<M, C, S>,
        read: R,
    ) -> Attempt<'_, T, M, C, S, SFut, R, RFut>
    where
        C: Codec,
        S: FnOnce(Grpc<Screened<T>>, Request<M>, &'static str, C) -> SFut,
        SFut: Future<Output = Result<Response<Streaming<C::Decode>>, Status>>,
        R: FnOnce(Response<Streaming<C::Decode>>, Head) -> RFut,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let m = self.method(index);
        let timeout = match deadline {
            None => None,
            // The first attempt has the whole timeout left, and the header of the
            // method's own timeout is already encoded: no clock read, no formatting.
            Some(d) if previous == 0 && d.from_policy => self.state.timeout_header(index).cloned(),
            Some(d) if previous == 0 => deadline::grpc_timeout(d.timeout),
            // Checked before the breaker is asked: an attempt that is never sent
            // must not take a half-open probe, nor count as a failure.
            Some(d) => match deadline::remaining(d.at) {
                Some(left) => deadline::grpc_timeout(left),
                None => {
                    return Attempt::failed(
                        &self.state,
                        index,
                        Failure::uncommitted(deadline::exceeded(m.path)),
                    );
                }
            },
        };
        let breaker = self.state.breaker_at(index);
        let permit = match breaker.map(CircuitBreaker::admit).transpose() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.state.metrics_at(index).rejections.inc();
                return Attempt::failed(&self.state, index, breaker_open(m, rejected));
            }
        };
        if previous > 0 {
            exchange.request.metadata_mut().insert(
                wire::GRPC_PREVIOUS_RPC_ATTEMPTS,
                MetadataValue::from(previous),
            );
        }
        Attempt {
            stage: Stage::Waiting {
                transport: Some(Screened::new(self.transport.clone(), timeout)),
                exchange: Some(exchange),
            },
            read: Some(read),
            timer: None,
            deadline: deadline.map(|d| d.at),
            permit,
            limits: self.limits,
            state: &self.state,
            index,
        }
    }
}

/// What reading a response needs of its attempt.
pub(crate) struct Head {
    /// The call's deadline: a response stream ends with it.
    pub(crate) deadline: Option<Instant>,
    /// The method's path, for messages.
    pub(crate) path: &'static str,
    /// For a response stream: where its final status is to be reported (the
    /// breaker permit and the throttle). `None` for a unary response, whose
    /// attempt reports it.
    pub(crate) outcome: Option<StreamOutcome>,
}

pin_project! {
    #[project = CallProj]
    enum Call<F, Fut> {
        /// Not polled yet: what starts the call.
        Waiting { start: Option<F> },
        Running { #[pin] future: Fut },
    }
}

pin_project! {
    /// A whole call inside its tracing span, with its metrics recorded at the end.
    ///
    /// A combinator rather than an `async fn`: an `async fn` would keep the call's
    /// future twice (as its argument and as the value it awaits), and that future
    /// is most of a call's memory.
    struct Observed<'a, F, Fut> {
        #[pin]
        call: Call<F, Fut>,
        span: tracing::Span,
        start: Option<Instant>,
        metrics: &'a crate::metrics::MethodMetrics,
    }
}

impl<Out, F, Fut> Future for Observed<'_, F, Fut>
where
    F: FnOnce(Instant) -> Fut,
    Fut: Future<Output = (Result<Out, Status>, Instant)>,
{
    type Output = Result<Out, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let future = loop {
            match this.call.as_mut().project() {
                CallProj::Waiting { start } => {
                    let begin = Instant::now();
                    *this.start = Some(begin);
                    let start = start.take().expect("started once");
                    this.call.set(Call::Running {
                        future: start(begin),
                    });
                }
                CallProj::Running { future } => break future,
            }
        };
        let (result, end) = std::task::ready!(future.poll(cx));
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let start = this.start.unwrap_or(end);
        this.metrics
            .record(code, end.saturating_duration_since(start));
        Poll::Ready(result)
    }
}

pin_project! {
    #[project = StageProj]
    #[project_ref = StageProjRef]
    enum Stage<T, M, C, S, SFut, RFut> {
        /// Waiting for the transport to be ready: nothing has left the client.
        Waiting {
            transport: Option<Screened<T>>,
            exchange: Option<Exchange<M, C, S>>,
        },
        /// Sending the request, until response headers arrive.
        Sending { #[pin] future: SFut },
        /// Reading the response: the call is committed.
        Reading { #[pin] future: RFut },
        /// Finished, or refused before anything was sent.
        Done { failure: Option<Failure> },
    }
}

pin_project! {
    /// One attempt in flight: the exchange, its deadline timer and its breaker
    /// permit, in one flat state machine.
    ///
    /// The permit is recorded when the attempt ends with an answer from the
    /// server; an attempt that ends without one (cancelled, never sent, refused
    /// unprocessed) drops it, which releases a half-open probe slot.
    struct Attempt<'a, T, M, C, S, SFut, R, RFut> {
        #[pin]
        stage: Stage<T, M, C, S, SFut, RFut>,
        read: Option<R>,
        // The attempt's place in the client's deadline timer, once pending.
        timer: Option<Registration<&'a DeadlineTimer>>,
        deadline: Option<Instant>,
        permit: Option<Permit<'a>>,
        limits: MessageLimits,
        state: &'a Arc<ClientState>,
        index: usize,
    }
}

impl<'a, T, M, C, S, SFut, R, RFut> Attempt<'a, T, M, C, S, SFut, R, RFut> {
    /// An attempt that ends with `failure` without sending anything.
    fn failed(state: &'a Arc<ClientState>, index: usize, failure: Failure) -> Self {
        Self {
            stage: Stage::Done {
                failure: Some(failure),
            },
            read: None,
            timer: None,
            deadline: None,
            permit: None,
            limits: MessageLimits::DEFAULT,
            state,
            index,
        }
    }
}

/// An attempt that can tell whether the server has begun answering it (response
/// headers arrived): what commits a hedged call.
trait Answering {
    fn answering(&self) -> bool;
}

impl<T, M, C, S, SFut, R, RFut> Answering for Attempt<'_, T, M, C, S, SFut, R, RFut> {
    fn answering(&self) -> bool {
        matches!(self.stage, Stage::Reading { .. })
    }
}

impl<T, M, C, S, SFut, D, Out, R, RFut> Future for Attempt<'_, T, M, C, S, SFut, R, RFut>
where
    T: Transport,
    S: FnOnce(Grpc<Screened<T>>, Request<M>, &'static str, C) -> SFut,
    SFut: Future<Output = Result<Response<Streaming<D>>, Status>>,
    R: FnOnce(Response<Streaming<D>>, Head) -> RFut,
    RFut: Future<Output = Result<Out, Status>>,
{
    type Output = (Result<Out, Failure>, Instant);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let method = &this.state.policy().methods[*this.index];
        let path = method.path;
        let result = loop {
            match this.stage.as_mut().project() {
                StageProj::Waiting {
                    transport,
                    exchange,
                } => {
                    let ready = match transport.as_mut() {
                        Some(t) => tower::Service::poll_ready(t, cx),
                        None => Poll::Ready(Ok(())),
                    };
                    match ready {
                        Poll::Ready(Ok(())) => {
                            let (Some(transport), Some(exchange)) =
                                (transport.take(), exchange.take())
                            else {
                                unreachable!("an attempt leaves Waiting once")
                            };
                            let grpc = Grpc::new(transport)
                                .max_encoding_message_size(this.limits.send)
                                .max_decoding_message_size(this.limits.receive);
                            let future =
                                (exchange.send)(grpc, exchange.request, path, exchange.codec);
                            this.stage.set(Stage::Sending { future });
                            continue;
                        }
                        Poll::Ready(Err(error)) => {
                            // The transport could not take the call (no endpoint,
                            // a channel shut down): nothing reached the server, so
                            // the breaker learns nothing; the permit is released.
                            this.permit.take();
                            break Err(Failure::transport(TransportFailure::classify(error), path));
                        }
                        Poll::Pending => {}
                    }
                }
                StageProj::Sending { future } => match future.poll(cx) {
                    Poll::Ready(Ok(mut response)) => {
                        if let Some(failure) =
                            response.extensions_mut().remove::<TransportFailure>()
                        {
                            break Err(Failure::transport(failure, path));
                        }
                        let outcome = if streams_responses(method.kind) {
                            StreamOutcome::new(this.state, *this.index, this.permit.take())
                        } else {
                            None
                        };
                        let head = Head {
                            deadline: *this.deadline,
                            path,
                            outcome,
                        };
                        let read = this.read.take().expect("read once, after the headers");
                        this.stage.set(Stage::Reading {
                            future: read(response, head),
                        });
                        continue;
                    }
                    Poll::Ready(Err(status)) => break Err(Failure::uncommitted(status)),
                    Poll::Pending => {}
                },
                StageProj::Reading { future } => match future.poll(cx) {
                    Poll::Ready(Ok(out)) => break Ok(out),
                    Poll::Ready(Err(status)) => {
                        break Err(Failure {
                            status,
                            committed: true,
                            rejected: false,
                            unprocessed: false,
                        });
                    }
                    Poll::Pending => {}
                },
                StageProj::Done { failure } => {
                    let failure = failure
                        .take()
                        .expect("an attempt is polled to completion once");
                    return Poll::Ready((Err(failure), Instant::now()));
                }
            }
            if let Some(d) = *this.deadline
                && DeadlineTimer::poll_expired(this.timer, || this.state.deadlines(), d, cx)
                    .is_ready()
            {
                let stage = this.stage.as_ref().project_ref();
                if matches!(stage, StageProjRef::Waiting { .. }) {
                    // Never sent (still waiting for a connection): nothing was
                    // learnt about the server; the permit is released below.
                    this.permit.take();
                }
                break Err(Failure {
                    status: deadline::exceeded(path),
                    // A deadline that passes while the response is read ends a
                    // committed call: no retry, no hedge, no throttle token.
                    committed: matches!(stage, StageProjRef::Reading { .. }),
                    rejected: false,
                    unprocessed: false,
                });
            }
            return Poll::Pending;
        };
        *this.timer = None;
        // Drop the exchange now (it may hold a connection slot), and read the clock
        // once for the breaker window, the deadline check and the caller's metrics.
        this.stage.set(Stage::Done { failure: None });
        let end = Instant::now();
        // tonic's channel enforces `grpc-timeout` itself and reports it as CANCELLED
        // ("Timeout expired"); gRPC calls that DEADLINE_EXCEEDED, and so do we.
        let result = match (result, *this.deadline) {
            (Err(mut f), Some(d)) if f.status.code() == Code::Cancelled && end >= d => {
                f.status = deadline::exceeded(path);
                Err(f)
            }
            (result, _) => result,
        };
        let code = match &result {
            Ok(_) => Code::Ok,
            // Never processed: the server told us nothing about itself. Dropping
            // the permit releases it.
            Err(f) if f.unprocessed => {
                this.permit.take();
                return Poll::Ready((result, end));
            }
            Err(f) => f.status.code(),
        };
        if let (Some(b), Some(p)) = (this.state.breaker_at(*this.index), this.permit.take()) {
            b.record_at(p, b.classify(code), end);
        }
        // A response stream reports its own success when it ends.
        if code == Code::Ok
            && !streams_responses(method.kind)
            && let Some(t) = this.state.throttle()
        {
            t.record_success();
        }
        Poll::Ready((result, end))
    }
}

/// Whether the server answers `kind` with a stream, whose final status comes
/// after the attempt's future has ended.
fn streams_responses(kind: MethodKind) -> bool {
    matches!(kind, MethodKind::ServerStreaming | MethodKind::Bidi)
}

fn breaker_open(m: &MethodPolicy, rejected: Rejected) -> Failure {
    let wait = if rejected.retry_in.is_zero() {
        "half-open probes are in flight".to_owned()
    } else {
        format!("next probe in {:.1?}", rejected.retry_in)
    };
    Failure {
        status: Status::unavailable(format!(
            "circuit breaker for {} is open: {}; {wait}",
            m.path, rejected.reason
        )),
        committed: false,
        rejected: true,
        unprocessed: false,
    }
}

/// Sends one request message; returns at response headers.
async fn send_one<T, M, C>(
    mut grpc: Grpc<T>,
    request: Request<M>,
    path: &'static str,
    codec: C,
) -> Result<Response<Streaming<C::Decode>>, Status>
where
    T: GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
    C: Codec<Encode = M>,
    M: Send + Sync + 'static,
    C::Decode: Send + Sync + 'static,
{
    grpc.server_streaming(request, PathAndQuery::from_static(path), codec)
        .await
}

/// Sends a stream of request messages; returns at response headers.
async fn send_stream<T, M, C>(
    mut grpc: Grpc<T>,
    request: Request<RequestStream<M>>,
    path: &'static str,
    codec: C,
) -> Result<Response<Streaming<C::Decode>>, Status>
where
    T: GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
    C: Codec<Encode = M>,
    M: Send + Sync + 'static,
    C::Decode: Send + Sync + 'static,
{
    grpc.streaming(request, PathAndQuery::from_static(path), codec)
        .await
}

/// Reads the single message and the trailers of a unary response.
async fn read_unary<Resp>(
    response: Response<Streaming<Resp>>,
    _head: Head,
) -> Result<Resp, Status> {
    let mut body = response.into_inner();
    let message = body
        .message()
        .await?
        .ok_or_else(|| Status::internal("the server ended the call without a response message"))?;
    // Trailers carry the final status: an error there fails the call even after a message.
    body.trailers().await?;
    Ok(message)
}

async fn open_stream<Resp>(
    response: Response<Streaming<Resp>>,
    head: Head,
) -> Result<ResponseStream<Resp>, Status> {
    Ok(ResponseStream::new(
        response.into_inner(),
        head.deadline,
        head.path,
        head.outcome,
    ))
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
