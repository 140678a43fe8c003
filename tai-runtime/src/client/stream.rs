//! Streams in and out of a resilient call.
//!
//! A response stream is tai's own type rather than tonic's `Streaming` (a
//! concrete type that cannot be extended): it ends with the call's deadline and
//! reports its final status to the breaker and the throttle. It offers what
//! `Streaming` offers — `message()`, `trailers()` and `Stream` — so a tonic call
//! site (`stream.message().await?`, `while let Some(x) = stream.next().await`)
//! compiles unchanged.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status, Streaming};

use crate::client::breaker::{Detached, Permit};
use crate::client::state::ClientState;

/// The requests of a client-streaming or bidi call: any `Send` stream of messages.
///
/// ```
/// use tai_runtime::RequestStream;
/// let requests: RequestStream<u32> = Box::pin(futures_util::stream::iter([1, 2, 3]));
/// # drop(requests);
/// ```
pub type RequestStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// The responses of a server-streaming or bidi call, as the body of the call's
/// `tonic::Response` (where tonic gives a `tonic::Streaming`).
///
/// It ends with the call's deadline: once the deadline passes it yields one
/// `DEADLINE_EXCEEDED` error and then ends, even if the server keeps the stream
/// open. The deadline is one timer per stream, never a clock read per message;
/// it is looked at whenever the stream would wait for the server, and before
/// every 32nd message that was already there, so a server that keeps messages
/// coming without pause cannot outrun it by more than 32 messages.
///
/// The call's circuit breaker counts the stream's final status (an error in the
/// middle of a stream is a failure, even though its headers were fine); a stream
/// dropped before its end counts as neither a success nor a failure.
pub struct ResponseStream<T> {
    inner: Streaming<T>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Messages handed out since the deadline was last looked at.
    unchecked: u32,
    method: &'static str,
    done: bool,
    /// Ended by the call's deadline, not by the server.
    expired: bool,
    outcome: Option<StreamOutcome>,
}

impl<T> ResponseStream<T> {
    pub(crate) fn new(
        inner: Streaming<T>,
        deadline: Option<Instant>,
        method: &'static str,
        outcome: Option<StreamOutcome>,
    ) -> Self {
        Self {
            inner,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            unchecked: 0,
            method,
            done: false,
            expired: false,
            outcome,
        }
    }

    /// Ends the stream with `code` as its final status.
    fn finish(&mut self, code: Code) {
        self.done = true;
        if let Some(outcome) = self.outcome.take() {
            outcome.finish(code);
        }
    }

    /// The next message, `None` at the end of the stream.
    ///
    /// ```no_run
    /// # async fn f(mut s: tai_runtime::ResponseStream<String>) -> Result<(), tai_runtime::Status> {
    /// while let Some(msg) = s.message().await? {
    ///     println!("{msg}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        // Polled directly rather than through `StreamExt::next`, whose adapter
        // is one more call per message.
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }

    /// The trailers the server ended the stream with, once it has ended; the
    /// messages not read yet are read and dropped first (as tonic's
    /// `Streaming::trailers` does). An error status, or the call's deadline
    /// passing, is the error.
    ///
    /// ```no_run
    /// # async fn f(mut s: tai_runtime::ResponseStream<String>) -> Result<(), tai_runtime::Status> {
    /// while let Some(msg) = s.message().await? {}
    /// if let Some(trailers) = s.trailers().await? {
    ///     println!("{:?}", trailers.get("x-checksum"));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn trailers(&mut self) -> Result<Option<tonic::metadata::MetadataMap>, Status> {
        while self.message().await?.is_some() {}
        if self.expired {
            return Err(crate::client::deadline::exceeded(self.method));
        }
        self.inner.trailers().await
    }
}

impl<T> Unpin for ResponseStream<T> {}

/// Messages a [`ResponseStream`] hands out, when the server had them there
/// already, before it looks at the call's deadline again.
///
/// Polling the deadline's timer registers the task's waker with it: done per
/// message, that was an eighth of the client's work per streamed message
/// (callgrind: 172 of 1,200 instructions). A stream that has to wait for the
/// server looks at it every time, so only a server keeping messages coming
/// without pause is read up to this many messages past the deadline.
pub(crate) const DEADLINE_CHECK_INTERVAL: u32 = 32;

impl<T> ResponseStream<T> {
    /// Whether the call's deadline has passed (and, when it has not, its timer
    /// will wake this task when it does).
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.unchecked = 0;
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }

    /// Ends the stream at its deadline.
    fn expire(&mut self) -> Poll<Option<Result<T, Status>>> {
        self.expired = true;
        self.finish(Code::DeadlineExceeded);
        Poll::Ready(Some(Err(crate::client::deadline::exceeded(self.method))))
    }
}

impl<T> Stream for ResponseStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.unchecked >= DEADLINE_CHECK_INTERVAL && this.deadline_passed(cx) {
            return this.expire();
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => {
                // About to wait for the server: the deadline's timer must be
                // able to wake this task.
                if this.deadline_passed(cx) {
                    return this.expire();
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(message))) => {
                this.unchecked += 1;
                Poll::Ready(Some(Ok(message)))
            }
            Poll::Ready(None) => {
                // tonic ends the stream after OK trailers; any other status is an
                // error item first.
                this.finish(Code::Ok);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                this.finish(status.code());
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}

impl<T> std::fmt::Debug for ResponseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("method", &self.method)
            .field("has_deadline", &self.deadline.is_some())
            .finish()
    }
}

/// Where a response stream reports its final status: the breaker permit of the
/// attempt that opened it (the ticket, since the stream outlives the client's
/// borrow) and the client's retry throttle.
pub(crate) struct StreamOutcome {
    state: Arc<ClientState>,
    index: usize,
    permit: Option<Detached>,
}

impl StreamOutcome {
    /// The outcome sink of a stream of method `index`, if there is anything to
    /// report to (a breaker, a throttle).
    pub(crate) fn new(
        state: &Arc<ClientState>,
        index: usize,
        permit: Option<Permit<'_>>,
    ) -> Option<Self> {
        if permit.is_none() && !state.throttles() {
            return None;
        }
        Some(Self {
            state: Arc::clone(state),
            index,
            permit: permit.map(Permit::detach),
        })
    }

    fn finish(mut self, code: Code) {
        match self.permit.take() {
            Some(Detached::Ticket(ticket)) => {
                if let Some(breaker) = self.state.breaker_at(self.index) {
                    breaker.resume(ticket).finish(code, Instant::now);
                }
            }
            Some(Detached::Owned(permit)) => permit.finish(code, Instant::now),
            None => {}
        }
        if code == Code::Ok {
            self.state.record_success();
        }
    }
}

impl Drop for StreamOutcome {
    fn drop(&mut self) {
        // Dropped before the stream ended: neither a success nor a failure. The
        // permit, resumed and dropped, releases a half-open probe slot.
        if let Some(Detached::Ticket(ticket)) = self.permit.take()
            && let Some(breaker) = self.state.breaker_at(self.index)
        {
            drop(breaker.resume(ticket));
        }
    }
}
