//! Streams in and out of a resilient call.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::time::{Instant, Sleep};
use tonic::{Status, Streaming};

/// The requests of a client-streaming or bidi call: any `Send` stream of messages.
///
/// ```
/// use tai_runtime::RequestStream;
/// let requests: RequestStream<u32> = Box::pin(futures_util::stream::iter([1, 2, 3]));
/// # drop(requests);
/// ```
pub type RequestStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// The responses of a server-streaming or bidi call.
///
/// It ends with the call's deadline: once the deadline passes it yields one
/// `DEADLINE_EXCEEDED` error and then ends, even if the server keeps the stream
/// open. The deadline is one timer per stream, never a clock read per message.
pub struct ResponseStream<T> {
    inner: Streaming<T>,
    deadline: Option<Pin<Box<Sleep>>>,
    method: &'static str,
    done: bool,
}

impl<T> ResponseStream<T> {
    pub(crate) fn new(
        inner: Streaming<T>,
        deadline: Option<Instant>,
        method: &'static str,
    ) -> Self {
        Self {
            inner,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            method,
            done: false,
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
        use futures_util::StreamExt;
        self.next().await.transpose()
    }
}

impl<T> Unpin for ResponseStream<T> {}

impl<T> Stream for ResponseStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.done = true;
            return Poll::Ready(Some(Err(crate::deadline::exceeded(this.method))));
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            other => other,
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
