//! A request body as the channel hands it to HTTP/2: ending with its last
//! message.
//!
//! tonic's request body says it has ended only once it has been polled after its
//! last message. hyper asks right after each DATA frame whether the body has
//! ended, to set END_STREAM on that frame; told no, it sends the end later as an
//! empty DATA frame of its own. So every unary call took two DATA frames (the
//! message, then an empty one ending the stream), and a server that waits for
//! the end of a unary request (tonic's does, for its trailers) could only start
//! the handler after the second. [`RequestBody`] looks one frame ahead after
//! each data frame: when the body has nothing more, the message's own frame
//! ends the stream. A frame found ahead (a client stream's next message) is
//! handed out at the next poll; a body that is not ready yet is left as it is.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

/// What polling the inner body gave, kept for the next poll.
type Polled = Option<Result<Frame<Bytes>, Status>>;

pin_project! {
    /// A call's request body on a [`Channel`](super::Channel); see the
    /// [module docs](self).
    pub(crate) struct RequestBody {
        #[pin]
        inner: tonic::body::Body,
        // A frame (or the end, or an error) read ahead of its turn.
        ahead: Option<Polled>,
    }
}

impl RequestBody {
    pub(crate) fn new(inner: tonic::body::Body) -> Self {
        Self { inner, ahead: None }
    }

    /// The body it wraps, for a request HTTP/2 gave back unsent (so never
    /// polled: nothing was read ahead).
    pub(crate) fn into_inner(self) -> tonic::body::Body {
        debug_assert!(self.ahead.is_none(), "an unsent body was never polled");
        self.inner
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Polled> {
        let mut this = self.project();
        let polled = match this.ahead.take() {
            Some(polled) => polled,
            None => std::task::ready!(this.inner.as_mut().poll_frame(cx)),
        };
        if let Some(Ok(frame)) = &polled
            && frame.is_data()
            && let Poll::Ready(next) = this.inner.poll_frame(cx)
        {
            *this.ahead = Some(next);
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.ahead {
            Some(None) => true,
            Some(Some(_)) => false,
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.ahead {
            None => self.inner.size_hint(),
            Some(None) => SizeHint::with_exact(0),
            // The inner body's hint no longer counts the frame held here.
            Some(Some(_)) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn data(bytes: &'static [u8]) -> Result<Frame<Bytes>, Status> {
        Ok(Frame::data(Bytes::from_static(bytes)))
    }

    /// A one-message body ends with its message: hyper then sends a single DATA
    /// frame with END_STREAM.
    #[tokio::test]
    async fn a_single_message_ends_the_stream_with_it() {
        let inner = StreamBody::new(futures_util::stream::iter([data(b"message")]));
        let mut body = std::pin::pin!(RequestBody::new(tonic::body::Body::new(inner)));
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "message");
        assert!(body.is_end_stream(), "ended with its message");
        assert!(body.frame().await.is_none());
    }

    /// Frames read ahead are handed out in order, trailers and errors included.
    #[tokio::test]
    async fn frames_read_ahead_come_in_order() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-end", "1".parse().unwrap());
        let frames = [data(b"one"), data(b"two"), Ok(Frame::trailers(trailers))];
        let inner = StreamBody::new(futures_util::stream::iter(frames));
        let mut body = std::pin::pin!(RequestBody::new(tonic::body::Body::new(inner)));
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            seen.push(match frame.into_data() {
                Ok(data) => String::from_utf8(data.to_vec()).unwrap(),
                Err(frame) => format!("trailers {:?}", frame.into_trailers().unwrap()["x-end"]),
            });
        }
        assert_eq!(seen, ["one", "two", "trailers \"1\""]);

        let failing = [data(b"one"), Err(Status::cancelled("gone"))];
        let inner = StreamBody::new(futures_util::stream::iter(failing));
        let mut body = std::pin::pin!(RequestBody::new(tonic::body::Body::new(inner)));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(!body.is_end_stream());
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::Cancelled);
    }

    /// A body whose next message is not ready yet is not waited for.
    #[tokio::test]
    async fn a_body_not_ready_is_not_waited_for() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Status>>(1);
        tx.send(data(b"first")).await.unwrap();
        let inner = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut body = std::pin::pin!(RequestBody::new(tonic::body::Body::new(inner)));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "first");
        assert!(!body.is_end_stream());
        tx.send(data(b"second")).await.unwrap();
        drop(tx);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "second");
        assert!(body.is_end_stream());
    }
}
