//! A call's response on a channel: the guard that keeps the call counted as in
//! flight on its endpoint and connection until the body ends, and the statuses a
//! response or a failed connection map to.
//!
//! The endpoint's health (outlier ejection, peak-EWMA) needs each call's final
//! gRPC status, which arrives in the trailers of a body the caller reads long
//! after `Channel::call` returned: so the guard rides in the body.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tonic::{Code, Status};

use super::connection::Connection;
use super::endpoint::{CallResult, Endpoint};
use super::endpoint_set::EndpointSet;

/// Keeps a call counted as in flight until its response body is finished or
/// dropped, and records its result once.
pub(super) struct CallGuard {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) connection: Arc<Connection>,
    pub(super) set: Arc<EndpointSet>,
    pub(super) recorded: bool,
}

impl CallGuard {
    pub(super) fn finish(&mut self, result: CallResult) {
        if !self.recorded {
            self.recorded = true;
            self.set.record(&self.endpoint, result);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.endpoint.call_ended(&self.connection);
    }
}

pub(super) fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(crate::wire::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// A status the caller's own request body failed with (tonic's encoder refusing
/// an oversize message, say), found in the transport error's source chain.
pub(super) fn own_status(error: &hyper::Error) -> Option<Status> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<Status>() {
            return Some(Status::new(status.code(), status.message()));
        }
        source = e.source();
    }
    None
}

/// The status of a call whose connection failed under it: UNAVAILABLE, as gRPC
/// specifies for transport failures, unless tonic knows better.
pub(super) fn connection_status(address: &str, error: hyper::Error) -> Status {
    let status = Status::from_error(Box::new(error));
    match status.code() {
        Code::Unknown | Code::Internal => {
            // The error stays reachable as the source: the call engine reads it
            // (an HTTP/2 REFUSED_STREAM is retried transparently).
            let mut unavailable = Status::unavailable(format!("{address}: {}", status.message()));
            unavailable.set_source(Arc::new(status));
            unavailable
        }
        _ => status,
    }
}

/// The response body of a call on a [`Channel`](super::Channel): tracks the call until it ends and
/// reads its final status for the endpoint's health.
pub struct ResponseBody {
    pub(super) inner: Incoming,
    pub(super) guard: Option<CallGuard>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Only the trailers frame ends the call; data frames leave the guard.
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut guard) = this.guard.take()
                {
                    guard.finish(CallResult::Status(
                        grpc_status(trailers).unwrap_or(Code::Unknown),
                    ));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let address = this
                    .guard
                    .as_ref()
                    .map(|g| g.endpoint.address.clone())
                    .unwrap_or_default();
                if let Some(mut guard) = this.guard.take() {
                    guard.finish(CallResult::ConnectionLost);
                }
                Poll::Ready(Some(Err(connection_status(&address, e))))
            }
            Poll::Ready(None) => {
                this.guard = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
