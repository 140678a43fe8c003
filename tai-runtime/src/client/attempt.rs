//! One attempt of a call, as one flat state machine: wait for the transport,
//! send, read, and report to the breaker and the throttle.
//!
//! ```text
//! deadline check ─► breaker gate ─► transport ready ─► send (until headers)
//!     ─► read (committed) ─► classify ─► breaker / throttle
//! ```
//!
//! The breaker gates every attempt, not just the call: a retry loop must not keep
//! hammering a method whose breaker has just opened (resilience4j and Polly order
//! them the same way). Attempts are sent with tonic's `server_streaming` even for
//! unary calls, because that returns as soon as response headers arrive — the
//! moment gRFC A6 says a call is committed and must no longer be retried. Waiting
//! for the transport is a stage of its own, so an attempt knows whether anything
//! was sent when its deadline passes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::PathAndQuery;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::client::{Grpc, GrpcService};
use tonic::codec::{Codec, Streaming};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

use super::breaker::{Permit, Rejected};
use super::contract::Transport;
use super::core::{ClientCore, Exchange};
use super::deadline::{self, CallDeadline};
use super::options::{Compression, MessageLimits};
use super::state::ClientState;
use super::stream::{RequestStream, ResponseStream, StreamOutcome};
use super::timer::{DeadlineTimer, Registration};
use super::transport::{Screened, TransportFailure};
use crate::BoxError;
use crate::policy::{MethodKind, MethodPolicy};
use crate::wire;

/// Why an attempt did not produce a result.
pub(super) struct Failure {
    pub(super) status: Status,
    /// The server sent response headers (or a message): A6 forbids retrying now.
    pub(super) committed: bool,
    /// The breaker or the client's interceptor refused the attempt; nothing was
    /// sent, and no attempt after it may be (the call's status is final).
    pub(super) rejected: bool,
    /// The server never processed the attempt (REFUSED_STREAM), or it never left
    /// the client: sending it again is safe, and costs no attempt (A6 transparent
    /// retry).
    pub(super) unprocessed: bool,
}

impl Failure {
    pub(super) fn uncommitted(status: Status) -> Self {
        Self {
            status,
            committed: false,
            rejected: false,
            unprocessed: false,
        }
    }

    /// A failure of the transport, as classified before tonic read it.
    pub(super) fn transport(failure: TransportFailure, path: &str) -> Self {
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

impl<T: Transport> ClientCore<T> {
    /// One attempt: the deadline check and the breaker gate now, then wait for
    /// the transport, send, classify and record as the returned future runs.
    pub(super) fn attempt<M, C, S, SFut, Out, R, RFut>(
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
            // (Unless a run-time config changed the timeout since the call started.)
            Some(d)
                if previous == 0
                    && d.from_policy
                    && deadline::policy_timeout(&m) == Some(d.timeout) =>
            {
                m.timeout_header()
            }
            Some(d) if previous == 0 => wire::timeout::encode(d.timeout),
            // Checked before the breaker is asked: an attempt that is never sent
            // must not take a half-open probe, nor count as a failure.
            Some(d) => match deadline::remaining(d.at) {
                Some(left) => wire::timeout::encode(left),
                None => {
                    return Attempt::failed(
                        &self.state,
                        index,
                        Failure::uncommitted(deadline::exceeded(m.path)),
                    );
                }
            },
        };
        let permit = match m.admit(&self.state, index) {
            Ok(permit) => permit,
            Err(rejected) => {
                self.state.metrics_at(index).rejections.inc();
                return Attempt::failed(&self.state, index, breaker_open(&m, rejected));
            }
        };
        let span = attempt_span(&m, previous);
        crate::context::write_trace(exchange.request.metadata_mut(), span_ids(&span));
        if previous > 0 {
            exchange.request.metadata_mut().insert(
                wire::GRPC_PREVIOUS_RPC_ATTEMPTS,
                MetadataValue::from(previous),
            );
        }
        if let Some(interceptor) = &self.interceptor {
            // After the attempt's own metadata, so the interceptor sees what is
            // sent; before the breaker gate, so a refusal takes no probe slot.
            let (metadata, extensions, message) = exchange.request.into_parts();
            let asked = Request::from_parts(metadata, extensions, ());
            match crate::sync::lock(interceptor).call(asked) {
                Ok(request) => {
                    let (metadata, extensions, ()) = request.into_parts();
                    exchange.request = Request::from_parts(metadata, extensions, message);
                }
                Err(status) => {
                    return Attempt::failed(
                        &self.state,
                        index,
                        Failure {
                            status,
                            committed: false,
                            rejected: true,
                            unprocessed: false,
                        },
                    );
                }
            }
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
            compression: self.compression,
            state: &self.state,
            index,
            span,
        }
    }
}

/// An attempt's OpenTelemetry span (feature `otel`); nothing without it, so an
/// attempt is no bigger.
#[cfg(feature = "otel")]
type AttemptSpan = tracing::Span;
#[cfg(not(feature = "otel"))]
type AttemptSpan = NoSpan;

/// An attempt's span without the `otel` feature: nothing, in no bytes.
#[cfg(not(feature = "otel"))]
#[derive(Clone, Copy, Debug)]
struct NoSpan;

#[cfg(feature = "otel")]
fn no_span() -> AttemptSpan {
    tracing::Span::none()
}

#[cfg(not(feature = "otel"))]
fn no_span() -> AttemptSpan {
    NoSpan
}

#[cfg(feature = "otel")]
fn attempt_span(m: &MethodPolicy, previous: u32) -> AttemptSpan {
    // A retry policy wins over hedging (`ClientCore::single_retried`).
    let hedged = m.retry.is_none() && m.hedging.is_some();
    crate::otel::attempt_span(m.path, previous + 1, hedged)
}

#[cfg(not(feature = "otel"))]
fn attempt_span(_: &MethodPolicy, _: u32) -> AttemptSpan {
    NoSpan
}

#[cfg(feature = "otel")]
fn span_ids(span: &AttemptSpan) -> Option<(crate::context::TraceId, crate::context::SpanId, u8)> {
    crate::otel::ids(span)
}

#[cfg(not(feature = "otel"))]
fn span_ids(_: &AttemptSpan) -> Option<(crate::context::TraceId, crate::context::SpanId, u8)> {
    None
}

/// Records how an attempt ended on its span (`None`: OK).
#[cfg(feature = "otel")]
fn record_end(span: &AttemptSpan, failed: Option<&Status>) {
    let (code, message) = failed.map_or((Code::Ok, ""), |s| (s.code(), s.message()));
    crate::otel::ended(span, crate::otel::Side::Client, code, message);
}

#[cfg(not(feature = "otel"))]
fn record_end(_: &AttemptSpan, _: Option<&Status>) {}

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
    #[project = StageProj]
    #[project_ref = StageProjRef]
    pub(super) enum Stage<T, M, C, S, SFut, RFut> {
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
    pub(super) struct Attempt<'a, T, M, C, S, SFut, R, RFut> {
        #[pin]
        stage: Stage<T, M, C, S, SFut, RFut>,
        read: Option<R>,
        // The attempt's place in the client's deadline timer, once pending.
        timer: Option<Registration<&'a DeadlineTimer>>,
        deadline: Option<Instant>,
        permit: Option<Permit<'a>>,
        limits: MessageLimits,
        compression: Compression,
        state: &'a Arc<ClientState>,
        index: usize,
        span: AttemptSpan,
    }
}

impl<'a, T, M, C, S, SFut, R, RFut> Attempt<'a, T, M, C, S, SFut, R, RFut> {
    /// An attempt that ends with `failure` without sending anything.
    pub(super) fn failed(state: &'a Arc<ClientState>, index: usize, failure: Failure) -> Self {
        Self {
            stage: Stage::Done {
                failure: Some(failure),
            },
            read: None,
            timer: None,
            deadline: None,
            permit: None,
            limits: MessageLimits::DEFAULT,
            compression: Compression::default(),
            state,
            index,
            span: no_span(),
        }
    }
}

/// An attempt that can tell whether the server has begun answering it (response
/// headers arrived): what commits a hedged call.
pub(super) trait Answering {
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
                            let mut grpc = Grpc::new(transport)
                                .max_encoding_message_size(this.limits.send)
                                .max_decoding_message_size(this.limits.receive);
                            if let Some(encoding) = this.compression.send {
                                grpc = grpc.send_compressed(encoding);
                            }
                            for encoding in this.compression.accept.into_iter().flatten() {
                                grpc = grpc.accept_compressed(encoding);
                            }
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
        record_end(this.span, result.as_ref().err().map(|f| &f.status));
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
        if let Some(p) = this.permit.take() {
            p.finish(code, || end);
        }
        // A response stream reports its own success when it ends.
        if code == Code::Ok && !streams_responses(method.kind) {
            this.state.record_success();
        }
        Poll::Ready((result, end))
    }
}

/// Whether the server answers `kind` with a stream, whose final status comes
/// after the attempt's future has ended.
pub(super) fn streams_responses(kind: MethodKind) -> bool {
    matches!(kind, MethodKind::ServerStreaming | MethodKind::Bidi)
}

pub(super) fn breaker_open(m: &MethodPolicy, rejected: Rejected) -> Failure {
    Failure {
        status: rejected.status(m.path),
        committed: false,
        rejected: true,
        unprocessed: false,
    }
}

/// Sends one request message; returns at response headers.
pub(super) async fn send_one<T, M, C>(
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
pub(super) async fn send_stream<T, M, C>(
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

/// Reads the single message and the trailers of a unary response: the response
/// carries the server's headers with its trailers merged in, as tonic's does.
pub(super) async fn read_unary<Resp>(
    response: Response<Streaming<Resp>>,
    _head: Head,
) -> Result<Response<Resp>, Status> {
    let (metadata, mut body, extensions) = response.into_parts();
    let message = body
        .message()
        .await?
        .ok_or_else(|| Status::internal("the server ended the call without a response message"))?;
    // Trailers carry the final status: an error there fails the call even after a message.
    let trailers = body.trailers().await?;
    let metadata = match trailers {
        Some(trailers) => merged(metadata, trailers),
        None => metadata,
    };
    Ok(Response::from_parts(metadata, message, extensions))
}

/// Response headers with the trailers added, as tonic merges them (a trailer
/// replaces a header of the same name).
fn merged(headers: MetadataMap, trailers: MetadataMap) -> MetadataMap {
    let mut headers = headers.into_headers();
    headers.extend(trailers.into_headers());
    MetadataMap::from_headers(headers)
}

/// Opens a response stream: the response carries the server's headers; the
/// stream, its messages and (at its end) its trailers.
pub(super) async fn open_stream<Resp>(
    response: Response<Streaming<Resp>>,
    head: Head,
) -> Result<Response<ResponseStream<Resp>>, Status> {
    let (metadata, body, extensions) = response.into_parts();
    let stream = ResponseStream::new(body, head.deadline, head.path, head.outcome);
    Ok(Response::from_parts(metadata, stream, extensions))
}
