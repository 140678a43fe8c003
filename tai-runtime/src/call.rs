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
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::uri::PathAndQuery;
use tokio::time::Instant;
use tonic::client::{Grpc, GrpcService};
use tonic::codec::{Codec, Streaming};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::breaker::{CircuitBreaker, Rejected};
use crate::codec::SharedCodec;
use crate::deadline;
use crate::policy::{HedgingPolicy, MethodPolicy, RetryPolicy};
use crate::pushback::Pushback;
use crate::retry::{MAX_ATTEMPTS, Retries};
use crate::state::ClientState;
use crate::stream::{RequestStream, ResponseStream};

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

    /// Runs a whole call inside a tracing span and records its metrics.
    async fn observed<Out>(
        &self,
        index: usize,
        call: impl Future<Output = Result<Out, Status>>,
    ) -> Result<Out, Status> {
        let m = self.method(index);
        let start = Instant::now();
        let span = tracing::debug_span!("grpc.client", method = m.path);
        // Instrument a pinned reference, not the call itself: the call's future is
        // kilobytes (tonic's included), and moving it into `Instrumented` and then
        // into this state machine costs a memcpy of it per call.
        let call = std::pin::pin!(call);
        let result = tracing::Instrument::instrument(call, span).await;
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.state.metrics_at(index).record(code, start.elapsed());
        result
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
        self.observed(method, async move {
            self.limits.check_send(&request, self.method(method).path)?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            self.once(method, request, codec, send_one, read_unary)
                .await
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
        self.observed(method, self.retried(method, request, read_unary))
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
        self.observed(method, async move {
            self.limits.check_send(&request, self.method(method).path)?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            self.once(method, request, codec, send_one, open_stream)
                .await
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
        self.observed(method, self.retried(method, request, open_stream))
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
        self.observed(
            method,
            self.once(method, requests, codec, send_stream, read_unary),
        )
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
        self.observed(
            method,
            self.once(method, requests, codec, send_stream, open_stream),
        )
    }

    /// One attempt under the method's deadline and breaker, no retry loop.
    async fn once<M, C, S, SFut, Out, R, RFut>(
        &self,
        method: usize,
        message: M,
        codec: C,
        send: S,
        read: R,
    ) -> Result<Out, Status>
    where
        C: Codec,
        S: FnOnce(Grpc<T>, Request<M>, &'static str, C) -> SFut,
        SFut: Future<Output = Result<Response<Streaming<C::Decode>>, Status>>,
        R: FnOnce(Response<Streaming<C::Decode>>, Option<Instant>, &'static str) -> RFut,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let deadline = deadline::for_call(self.method(method));
        self.attempt(
            method,
            deadline,
            0,
            Request::new(message),
            codec,
            send,
            read,
        )
        .await
        .map_err(|f| f.status)
    }

    /// A single-request call under the method's retry or hedging policy, the request
    /// shared by every attempt.
    async fn retried<Req, Resp, Out, R, RFut>(
        &self,
        method: usize,
        request: Req,
        read: R,
    ) -> Result<Out, Status>
    where
        Req: RequestMessage,
        Resp: ResponseMessage,
        R: Fn(Response<Streaming<Resp>>, Option<Instant>, &'static str) -> RFut + Copy,
        RFut: Future<Output = Result<Out, Status>>,
    {
        let m = self.method(method);
        self.limits.check_send(&request, m.path)?;
        let shared = Arc::new(request);
        let deadline = deadline::for_call(m);
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
        deadline: Option<Instant>,
        attempt: F,
    ) -> Result<Out, Status>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<Out, Failure>>,
    {
        let m = self.method(index);
        if let Some(retry) = &m.retry {
            self.retry(index, retry, deadline, attempt).await
        } else if let Some(hedging) = &m.hedging {
            self.hedge(index, hedging, deadline, attempt).await
        } else {
            attempt(0).await.map_err(|f| f.status)
        }
    }

    /// gRFC A6 retry, decision for decision as grpc-go makes it.
    async fn retry<Out, F, Fut>(
        &self,
        index: usize,
        retry: &RetryPolicy,
        deadline: Option<Instant>,
        attempt: F,
    ) -> Result<Out, Status>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<Out, Failure>>,
    {
        let m = self.method(index);
        let throttle = self.state.throttle();
        let mut retries = Retries::default();
        loop {
            let failure = match attempt(retries.previous).await {
                Ok(out) => return Ok(out),
                Err(f) => f,
            };
            if failure.committed || failure.rejected {
                return Err(failure.status);
            }
            let decision = self
                .state
                .with_rng(|rng| retries.next_delay(retry, &failure.status, throttle, rng));
            let Some(delay) = decision else {
                return Err(failure.status);
            };
            if let Some(d) = deadline
                && Instant::now() + delay >= d
            {
                return Err(deadline::exceeded_before_retry(m.path, &failure.status));
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
        deadline: Option<Instant>,
        attempt: F,
    ) -> Result<Out, Status>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<Out, Failure>>,
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
                    let failure = match done {
                        Some(Ok(out)) => return Ok(out),
                        Some(Err(f)) => f,
                        None => unreachable!("guarded by is_empty"),
                    };
                    let fatal = failure.committed
                        || failure.rejected
                        || !crate::policy::contains(hedging.non_fatal, failure.status.code());
                    if fatal {
                        return Err(failure.status);
                    }
                    if let Some(t) = throttle {
                        t.record_failure();
                    }
                    match Pushback::from_metadata(failure.status.metadata()) {
                        Pushback::Stop => next_at = None,
                        Pushback::After(d) => next_at = Some(Instant::now() + d),
                        Pushback::None => next_at = Some(Instant::now()),
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
        Err(last.unwrap_or_else(|| {
            deadline.map_or_else(
                || Status::unavailable(format!("{}: no hedged attempt could be made", m.path)),
                |_| deadline::exceeded(m.path),
            )
        }))
    }

    /// One attempt: breaker gate, headers, send, classify, record.
    #[allow(clippy::too_many_arguments)]
    async fn attempt<M, C, S, SFut, Out, R, RFut>(
        &self,
        index: usize,
        deadline: Option<Instant>,
        previous: u32,
        mut request: Request<M>,
        codec: C,
        send: S,
        read: R,
    ) -> Result<Out, Failure>
    where
        C: Codec,
        S: FnOnce(Grpc<T>, Request<M>, &'static str, C) -> SFut,
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
                return Err(breaker_open(m, rejected));
            }
        };
        if let Some(d) = deadline {
            match deadline::remaining(d) {
                Some(left) => match grpc_timeout(left) {
                    Some(value) => {
                        request.metadata_mut().insert("grpc-timeout", value);
                    }
                    None => request.set_timeout(left),
                },
                None => {
                    let status = deadline::exceeded(m.path);
                    if let (Some(b), Some(p)) = (breaker, permit) {
                        b.record(p, b.classify(Code::DeadlineExceeded));
                    }
                    return Err(Failure::uncommitted(status));
                }
            }
        }
        if previous > 0 {
            request
                .metadata_mut()
                .insert("grpc-previous-rpc-attempts", MetadataValue::from(previous));
        }
        let grpc = Grpc::new(self.transport.clone())
            .max_encoding_message_size(self.limits.send)
            .max_decoding_message_size(self.limits.receive);
        let exchange = async {
            let response = send(grpc, request, m.path, codec)
                .await
                .map_err(Failure::uncommitted)?;
            read(response, deadline, m.path)
                .await
                .map_err(|status| Failure {
                    status,
                    committed: true,
                    rejected: false,
                })
        };
        // Pinned in place, so that `Timeout` holds a pointer to the exchange rather
        // than a copy of it (see `observed`).
        let exchange = std::pin::pin!(exchange);
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(d, exchange)
                .await
                .unwrap_or_else(|_| Err(Failure::uncommitted(deadline::exceeded(m.path)))),
            None => exchange.await,
        };
        // tonic's channel enforces `grpc-timeout` itself and reports it as CANCELLED
        // ("Timeout expired"); gRPC calls that DEADLINE_EXCEEDED, and so do we.
        let result = match (result, deadline) {
            (Err(f), Some(d)) if f.status.code() == Code::Cancelled && Instant::now() >= d => {
                Err(Failure::uncommitted(deadline::exceeded(m.path)))
            }
            (result, _) => result,
        };
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(f) => f.status.code(),
        };
        if let (Some(b), Some(p)) = (breaker, permit) {
            b.record(p, b.classify(code));
        }
        if code == Code::Ok
            && let Some(t) = self.state.throttle()
        {
            t.record_success();
        }
        result
    }
}

/// The `grpc-timeout` header value for `left`: the most precise of microseconds,
/// milliseconds, seconds, minutes and hours that fits the 8 digits gRPC allows,
/// rounded down (so the server's deadline is never later than ours).
///
/// tonic's `Request::set_timeout` writes the same header through `format!` and a
/// re-parse of its own output: two allocations and some 1,500 instructions on
/// every attempt. This writes the digits into a stack buffer: one allocation (the
/// header's bytes) and a few dozen instructions. `None` cannot happen (digits and a
/// unit letter are always a valid header value); the caller falls back to tonic.
fn grpc_timeout(left: std::time::Duration) -> Option<tonic::metadata::AsciiMetadataValue> {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(left.as_secs());
    let (value, unit) = [
        (left.as_micros(), b'u'),
        (left.as_millis(), b'm'),
        (secs, b'S'),
        (secs / 60, b'M'),
        (secs / 3600, b'H'),
    ]
    .into_iter()
    .find(|(v, _)| *v <= MAX)
    .unwrap_or((MAX, b'H'));
    let mut buf = [0u8; 9];
    buf[8] = unit;
    let mut at = 8;
    let mut v = value as u32; // at most 99_999_999
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    tonic::metadata::AsciiMetadataValue::try_from(&buf[at..]).ok()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    #[test]
    fn grpc_timeout_picks_the_finest_unit_that_fits() {
        let t = |d: Duration| grpc_timeout(d).unwrap().to_str().unwrap().to_owned();
        assert_eq!(t(Duration::from_nanos(1_500)), "1u");
        assert_eq!(t(Duration::ZERO), "0u");
        assert_eq!(t(Duration::from_millis(500)), "500000u");
        assert_eq!(t(Duration::from_micros(4_999_987)), "4999987u");
        assert_eq!(t(Duration::from_micros(99_999_999)), "99999999u");
        assert_eq!(t(Duration::from_micros(100_000_001)), "100000m");
        assert_eq!(t(Duration::from_secs(3600)), "3600000m");
        assert_eq!(t(Duration::from_secs(200_000)), "200000S");
        assert_eq!(t(Duration::from_secs(6_000_000_000)), "1666666H");
        assert_eq!(t(Duration::MAX), "99999999H");
    }
}
