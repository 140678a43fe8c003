//! A call's request kept for another attempt, by the retry and hedge layers.
//!
//! The engine shares the request *message* between attempts; a layer sees only
//! HTTP, whose body is a stream read once. So the layers read the body once into
//! [`Bytes`] and give each attempt a copy of the head and a body over the same
//! bytes (a reference count, not a copy of the data).
//!
//! Only what is complete when the call starts is kept: the body is read for as
//! long as it is ready at once. tonic encodes a unary or server-streaming
//! request in one go, so those are; a client's request *stream* is not (its
//! messages come later, maybe only after responses), and waiting for it could
//! deadlock a bidi call. Such a body, or one larger than the limit, is sent once
//! as it is — the frames already read first — and the call is not retried.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use http_body::{Body as _, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

use crate::wire;

/// How many attempts came before this one (gRFC A6).
const PREVIOUS_ATTEMPTS: HeaderName = HeaderName::from_static(wire::GRPC_PREVIOUS_RPC_ATTEMPTS);

/// A request kept whole, ready to be sent again.
#[derive(Debug)]
pub(crate) struct Replay {
    head: http::Request<()>,
    body: Bytes,
}

/// What reading a request's body found.
#[derive(Debug)]
pub(crate) enum Kept {
    /// Complete and small enough: any number of attempts.
    Replay(Replay),
    /// Streaming or too large: one attempt, with this request.
    Once(http::Request<Body>),
}

/// Reads `request`'s body for as long as it is ready, up to `max` bytes.
pub(crate) async fn keep(request: http::Request<Body>, max: usize) -> Result<Kept, Status> {
    let (parts, mut body) = request.into_parts();
    let mut frames = VecDeque::new();
    let too_large = |n: u64| n > max as u64;
    if too_large(body.size_hint().lower()) {
        return Ok(Kept::Once(http::Request::from_parts(parts, body)));
    }
    let mut size = 0u64;
    let complete = std::future::poll_fn(|cx| {
        loop {
            let frame = match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Err(status)),
                Poll::Ready(None) => return Poll::Ready(Ok(true)),
                // More is coming later: a stream, sent once.
                Poll::Pending => return Poll::Ready(Ok(false)),
            };
            let Some(data) = frame.data_ref() else {
                // Request trailers: not a gRPC request this layer can replay.
                frames.push_back(frame);
                return Poll::Ready(Ok(false));
            };
            size += data.len() as u64;
            frames.push_back(frame);
            if too_large(size) {
                return Poll::Ready(Ok(false));
            }
        }
    })
    .await?;
    if !complete {
        let body = Body::new(Resumed {
            frames,
            rest: Some(body),
        });
        return Ok(Kept::Once(http::Request::from_parts(parts, body)));
    }
    let body = match frames.len() {
        0 => Bytes::new(),
        1 => frames
            .pop_front()
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(size as usize);
            for frame in frames {
                if let Ok(data) = frame.into_data() {
                    all.extend_from_slice(&data);
                }
            }
            all.freeze()
        }
    };
    Ok(Kept::Replay(Replay {
        head: http::Request::from_parts(parts, ()),
        body,
    }))
}

impl Replay {
    /// The path of the request, for messages.
    pub(crate) fn path(&self) -> &str {
        self.head.uri().path()
    }

    /// The request of attempt number `previous` (0 for the first), telling the
    /// server how many came before and, with a deadline, how long it has left.
    pub(crate) fn attempt(
        &self,
        previous: u32,
        timeout: Option<HeaderValue>,
    ) -> http::Request<Body> {
        let mut request = http::Request::new(Body::new(Resumed {
            frames: VecDeque::from([Frame::data(self.body.clone())]),
            rest: None,
        }));
        *request.method_mut() = self.head.method().clone();
        *request.uri_mut() = self.head.uri().clone();
        *request.version_mut() = self.head.version();
        *request.headers_mut() = self.head.headers().clone();
        *request.extensions_mut() = self.head.extensions().clone();
        if previous > 0 {
            request
                .headers_mut()
                .insert(PREVIOUS_ATTEMPTS, HeaderValue::from(previous));
        }
        if let Some(timeout) = timeout {
            request.headers_mut().insert(wire::GRPC_TIMEOUT, timeout);
        }
        request
    }
}

/// A body that gives the frames already read, then the rest of the original.
struct Resumed {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Body>,
}

impl http_body::Body for Resumed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let kept: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint);
        // Upper first: a lower bound above the upper one panics.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + kept);
        }
        hint.set_lower(hint.lower() + kept);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn request(body: Body) -> http::Request<Body> {
        http::Request::builder()
            .uri("http://x/test.Echo/Unary")
            .header("te", "trailers")
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn a_complete_body_is_replayed_with_attempt_headers() {
        let body = Body::new(http_body_util::Full::new(Bytes::from_static(b"hello")));
        let Kept::Replay(replay) = keep(request(body), 16).await.unwrap() else {
            panic!("a complete small body is kept")
        };
        for previous in 0..3 {
            let r = replay.attempt(previous, HeaderValue::from_static("1S").into());
            assert_eq!(r.uri().path(), "/test.Echo/Unary");
            assert_eq!(r.headers()["te"], "trailers");
            assert_eq!(
                r.headers().get("grpc-previous-rpc-attempts").is_some(),
                previous > 0
            );
            let bytes = r.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(bytes, "hello");
        }
    }

    #[tokio::test]
    async fn a_large_or_streaming_body_is_sent_once_whole() {
        let body = Body::new(http_body_util::Full::new(Bytes::from_static(b"hello")));
        let Kept::Once(r) = keep(request(body), 4).await.unwrap() else {
            panic!("too large")
        };
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "hello");

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Status>>(2);
        tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        let stream =
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let Kept::Once(r) = keep(request(Body::new(stream)), 1024).await.unwrap() else {
            panic!("a stream is not complete")
        };
        tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "onetwo");
    }
}
