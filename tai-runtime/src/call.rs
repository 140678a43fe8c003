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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use futures_util::stream::{FuturesUnordered, StreamExt};
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
use crate::policy::{HedgingPolicy, MethodPolicy, RetryPolicy};
use crate::pushback::Pushback;
use crate::retry::{MAX_ATTEMPTS, Retries};
use crate::state::ClientState;
use crate::stream::{RequestStream, ResponseStream};
use crate::timer::{DeadlineTimer, Registration};

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
}

impl Failure {
    fn uncommitted(status: Status) -> Self {
        Self {
            status,
            committed: false,
            rejected: false,
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

impl<T: Transport> ClientCore<T> {
    /// A client core over `transport` running `policy`. Over a tai
    /// [`Channel`](crate::Channel) the message size limits come from its
    /// configuration; over any other transport they are 4 MiB each way.
    pub fn new(transport: T, policy: &'static crate::policy::ServicePolicy) -> Self {
        let limits = (&transport as &dyn std::any::Any)
            .downcast_ref::<crate::Channel>()
            .map_or(MessageLimits::DEFAULT, |c| MessageLimits {
                send: c.config().connection.max_send_message_size,
                receive: c.config().connection.max_receive_message_size,
            });
        Self {
            transport,
            state: Arc::new(ClientState::new(policy)),
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

    /// A unary call without retry or hedging.
    pub fn unary<Req, Resp>(
        &self,
        method: usize,
        request: Req,
    ) -> impl Future<Output = Result<Resp, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        self.single(method, request, read_unary)
    }

    /// A single-request call without retry or hedging: the size check, then one
    /// attempt; `read` turns the response into what the caller gets. (Auto traits
    /// such as `Send` show through the `impl Future`, so the public methods check
    /// them on the concrete types.)
    fn single<Req, Resp, Out, R, RFut>(
        &self,
        method: usize,
        request: Req,
        read: R,
    ) -> impl Future<Output = Result<Out, Status>> + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
        R: FnOnce(Response<Streaming<Resp>>, Option<Instant>, &'static str) -> RFut + 'static,
        RFut: Future<Output = Result<Out, Status>> + 'static,
        Out: 'static,
    {
        self.observed(method, move |start| {
            match self.limits.check_send(&request, self.method(method).path) {
                Ok(()) => Either::Left(self.once(
                    method,
                    start,
                    request,
                    tonic_prost::ProstCodec::<Req, Resp>::default(),
                    send_one,
                    read,
                )),
                Err(status) => Either::Right(std::future::ready((Err(status), start))),
            }
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
            self.retried(method, start, request, read_unary)
        })
    }

    /// A server-streaming call without retry or hedging.
    pub fn server_streaming<Req, Resp>(
        &self,
        method: usize,
        request: Req,
    ) -> impl Future<Output = Result<ResponseStream<Resp>, Status>> + Send + '_
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
    {
        self.single(method, request, open_stream)
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
            self.retried(method, start, request, open_stream)
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
            self.once(method, start, requests, codec, send_stream, read_unary)
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
            self.once(method, start, requests, codec, send_stream, open_stream)
        })
    }

    /// One attempt under the method's deadline and breaker, no retry loop.
    fn once<M, C, S, SFut, Out, R, RFut>(
        &self,
        method: usize,
        start: Instant,
        message: M,
        codec: C,
        send: S,
        read: R,
    ) -> impl Future<Output = (Result<Out, Status>, Instant)> + use<'_, M, C, S, SFut, Out, R, RFut, T>
    where
        C: Codec,
        S: FnOnce(Grpc<Stamped<T>>, Request<M>, &'static str, C) -> SFut,
        SFut: Future<Output = Result<Response<Streaming<C::Decode>>, Status>>,
        R: FnOnce(Response<Streaming<C::Decode>>, Option<Instant>, &'static str) -> RFut,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let deadline = deadline::for_call(self.method(method), start);
        self.attempt(
            method,
            deadline,
            0,
            Request::new(message),
            codec,
            send,
            read,
        )
        .map(|(result, end)| (result.map_err(|f| f.status), end))
    }

    /// A single-request call under the method's retry or hedging policy, the request
    /// shared by every attempt.
    async fn retried<Req, Resp, Out, R, RFut>(
        &self,
        method: usize,
        start: Instant,
        request: Req,
        read: R,
    ) -> (Result<Out, Status>, Instant)
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
        R: Fn(Response<Streaming<Resp>>, Option<Instant>, &'static str) -> RFut + Copy,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let m = self.method(method);
        if let Err(status) = self.limits.check_send(&request, m.path) {
            return (Err(status), start);
        }
        let shared = Arc::new(request);
        let deadline = deadline::for_call(m, start);
        let attempt = |previous: u32| {
            let codec = SharedCodec::<Req, Resp>::default();
            let request = Request::new(Arc::clone(&shared));
            self.attempt(method, deadline, previous, request, codec, send_one, read)
        };
        self.resilient(method, deadline, attempt).await
    }

    /// Runs `attempt` under the method's retry or hedging policy.
    async fn resilient<Out, F, Fut>(
        &self,
        index: usize,
        deadline: Option<CallDeadline>,
        attempt: F,
    ) -> (Result<Out, Status>, Instant)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = (Result<Out, Failure>, Instant)>,
    {
        let m = self.method(index);
        if let Some(retry) = &m.retry {
            self.retry(index, retry, deadline, attempt).await
        } else if let Some(hedging) = &m.hedging {
            self.hedge(index, hedging, deadline, attempt).await
        } else {
            let (result, end) = attempt(0).await;
            (result.map_err(|f| f.status), end)
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
        loop {
            let (result, end) = attempt(retries.previous).await;
            let failure = match result {
                Ok(out) => return (Ok(out), end),
                Err(f) => f,
            };
            if failure.committed || failure.rejected {
                return (Err(failure.status), end);
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

    /// gRFC A6 hedging: start attempt n+1 `delay` after attempt n unless one has
    /// already succeeded; a non-fatal failure starts the next attempt at once; the
    /// first success or fatal failure ends the call and cancels the rest.
    async fn hedge<Out, F, Fut>(
        &self,
        index: usize,
        hedging: &HedgingPolicy,
        deadline: Option<CallDeadline>,
        attempt: F,
    ) -> (Result<Out, Status>, Instant)
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = (Result<Out, Failure>, Instant)>,
    {
        let m = self.method(index);
        let max_attempts = hedging.max_attempts.min(MAX_ATTEMPTS);
        let throttle = self.state.throttle();
        let mut in_flight = FuturesUnordered::new();
        in_flight.push(attempt(0));
        let mut started = 1;
        let mut next_at = Some(Instant::now() + hedging.delay);
        let mut last: Option<Status> = None;
        loop {
            let can_start = started < max_attempts && !throttle.is_some_and(|t| t.is_throttled());
            let timer = async {
                match next_at {
                    Some(at) if can_start => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                done = in_flight.next(), if !in_flight.is_empty() => {
                    let Some((result, end)) = done else {
                        unreachable!("guarded by is_empty")
                    };
                    let failure = match result {
                        Ok(out) => return (Ok(out), end),
                        Err(f) => f,
                    };
                    let fatal = failure.committed
                        || failure.rejected
                        || !crate::policy::contains(hedging.non_fatal, failure.status.code());
                    if fatal {
                        return (Err(failure.status), end);
                    }
                    if let Some(t) = throttle {
                        t.record_failure();
                    }
                    match Pushback::from_metadata(failure.status.metadata()) {
                        Pushback::Stop => next_at = None,
                        Pushback::After(d) => next_at = Some(end + d),
                        Pushback::None => next_at = Some(end),
                    }
                    last = Some(failure.status);
                    if in_flight.is_empty() && !(started < max_attempts && next_at.is_some()) {
                        break;
                    }
                }
                () = timer => {
                    self.state.metrics_at(index).hedges.inc();
                    in_flight.push(attempt(started));
                    started += 1;
                    next_at = Some(Instant::now() + hedging.delay);
                }
            }
            if in_flight.is_empty() && (started >= max_attempts || next_at.is_none()) {
                break;
            }
        }
        let status = last.unwrap_or_else(|| {
            deadline.map_or_else(
                || Status::unavailable(format!("{}: no hedged attempt could be made", m.path)),
                |_| deadline::exceeded(m.path),
            )
        });
        (Err(status), Instant::now())
    }

    /// One attempt: breaker gate and headers now, then send, classify and record
    /// as the returned future runs.
    #[allow(clippy::too_many_arguments)]
    fn attempt<M, C, S, SFut, Out, R, RFut>(
        &self,
        index: usize,
        deadline: Option<CallDeadline>,
        previous: u32,
        mut request: Request<M>,
        codec: C,
        send: S,
        read: R,
    ) -> Attempt<'_, SFut, R, RFut>
    where
        C: Codec,
        S: FnOnce(Grpc<Stamped<T>>, Request<M>, &'static str, C) -> SFut,
        SFut: Future<Output = Result<Response<Streaming<C::Decode>>, Status>>,
        R: FnOnce(Response<Streaming<C::Decode>>, Option<Instant>, &'static str) -> RFut,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let m = self.method(index);
        let breaker = self.state.breaker_at(index);
        let permit = match breaker.map(CircuitBreaker::admit).transpose() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.state.metrics_at(index).rejections.inc();
                return Attempt::failed(&self.state, index, breaker_open(m, rejected));
            }
        };
        let timeout = if let Some(d) = deadline {
            // The first attempt has the whole timeout left, and the header of the
            // method's own timeout is already encoded: no clock read, no formatting.
            let header = match (previous, d.from_policy) {
                (0, true) => self.state.timeout_header(index).cloned(),
                (0, false) => deadline::grpc_timeout(d.timeout),
                _ => match deadline::remaining(d.at) {
                    Some(left) => deadline::grpc_timeout(left),
                    None => {
                        if let (Some(b), Some(p)) = (breaker, permit) {
                            b.record(p, b.classify(Code::DeadlineExceeded));
                        }
                        return Attempt::failed(
                            &self.state,
                            index,
                            Failure::uncommitted(deadline::exceeded(m.path)),
                        );
                    }
                },
            };
            // `None` cannot happen (see `grpc_timeout`); the deadline would still
            // hold on this side.
            header
        } else {
            None
        };
        if previous > 0 {
            request
                .metadata_mut()
                .insert("grpc-previous-rpc-attempts", MetadataValue::from(previous));
        }
        let transport = Stamped {
            inner: self.transport.clone(),
            timeout,
        };
        let grpc = Grpc::new(transport)
            .max_encoding_message_size(self.limits.send)
            .max_decoding_message_size(self.limits.receive);
        let deadline = deadline.map(|d| d.at);
        Attempt {
            stage: Stage::Sending {
                future: send(grpc, request, m.path, codec),
            },
            read: Some(read),
            timer: None,
            deadline,
            permit,
            state: &self.state,
            index,
        }
    }
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
    enum Stage<SFut, RFut> {
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
    /// permit, in one flat state machine. (As `async fn`s, the request, the tonic
    /// call and the timeout each sat in two or three nested states.)
    struct Attempt<'a, SFut, R, RFut> {
        #[pin]
        stage: Stage<SFut, RFut>,
        read: Option<R>,
        // The attempt's place in the client's deadline timer, once pending.
        timer: Option<Registration<&'a DeadlineTimer>>,
        deadline: Option<Instant>,
        permit: Option<Permit>,
        state: &'a ClientState,
        index: usize,
    }
}

impl<'a, SFut, R, RFut> Attempt<'a, SFut, R, RFut> {
    /// An attempt that ends with `failure` without sending anything.
    fn failed(state: &'a ClientState, index: usize, failure: Failure) -> Self {
        Self {
            stage: Stage::Done {
                failure: Some(failure),
            },
            read: None,
            timer: None,
            deadline: None,
            permit: None,
            state,
            index,
        }
    }
}

impl<D, SFut, Out, R, RFut> Future for Attempt<'_, SFut, R, RFut>
where
    SFut: Future<Output = Result<Response<Streaming<D>>, Status>>,
    R: FnOnce(Response<Streaming<D>>, Option<Instant>, &'static str) -> RFut,
    RFut: Future<Output = Result<Out, Status>>,
{
    type Output = (Result<Out, Failure>, Instant);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let path = this.state.policy().methods[*this.index].path;
        let result = loop {
            match this.stage.as_mut().project() {
                StageProj::Sending { future } => match future.poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        let read = this.read.take().expect("read once, after the headers");
                        let future = read(response, *this.deadline, path);
                        this.stage.set(Stage::Reading { future });
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
                break Err(Failure::uncommitted(deadline::exceeded(path)));
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
            (Err(f), Some(d)) if f.status.code() == Code::Cancelled && end >= d => {
                Err(Failure::uncommitted(deadline::exceeded(path)))
            }
            (result, _) => result,
        };
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(f) => f.status.code(),
        };
        if let (Some(b), Some(p)) = (this.state.breaker_at(*this.index), this.permit.take()) {
            b.record_at(p, b.classify(code), end);
        }
        if code == Code::Ok
            && let Some(t) = this.state.throttle()
        {
            t.record_success();
        }
        Poll::Ready((result, end))
    }
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
    }
}

/// The `grpc-timeout` header name, built at compile time.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The transport of one attempt: the client's transport, writing the attempt's
/// `grpc-timeout` straight into the HTTP request that tonic has built. Through
/// tonic's metadata the same header costs about three times as much: the name
/// is validated at run time and hashed once for the insert and again by each of
/// the eight removals of tonic's sanitising pass.
#[derive(Clone, Debug)]
pub(crate) struct Stamped<T> {
    inner: T,
    timeout: Option<http::HeaderValue>,
}

impl<T: Transport> tower::Service<http::Request<tonic::body::Body>> for Stamped<T> {
    type Response = http::Response<T::ResponseBody>;
    type Error = T::Error;
    type Future = T::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        GrpcService::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> T::Future {
        if let Some(value) = self.timeout.take() {
            request.headers_mut().insert(GRPC_TIMEOUT, value);
        }
        GrpcService::call(&mut self.inner, request)
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
    T: Transport,
    C: Codec<Encode = M>,
    M: Send + Sync + 'static,
    C::Decode: Send + Sync + 'static,
{
    ready(&mut grpc, path).await?;
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
    T: Transport,
    C: Codec<Encode = M>,
    M: Send + Sync + 'static,
    C::Decode: Send + Sync + 'static,
{
    ready(&mut grpc, path).await?;
    grpc.streaming(request, PathAndQuery::from_static(path), codec)
        .await
}

async fn ready<T: Transport>(grpc: &mut Grpc<T>, path: &str) -> Result<(), Status> {
    grpc.ready().await.map_err(|e| {
        let e: BoxError = e.into();
        Status::unavailable(format!("{path}: transport not ready: {e}"))
    })
}

/// Reads the single message and the trailers of a unary response.
async fn read_unary<Resp>(
    response: Response<Streaming<Resp>>,
    _deadline: Option<Instant>,
    _path: &'static str,
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
    deadline: Option<Instant>,
    path: &'static str,
) -> Result<ResponseStream<Resp>, Status> {
    Ok(ResponseStream::new(response.into_inner(), deadline, path))
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
