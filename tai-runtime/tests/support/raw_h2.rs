//! A raw HTTP/2 server (the `h2` crate) for what a tonic server never sends:
//! resets, non-gRPC error pages, bad status details, headers long before the
//! message. Each stream's answer is scripted by its index; served in memory so
//! that paused tokio time stays deterministic.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::Echo;

/// How the server answers one stream.
#[derive(Clone, Debug)]
pub enum Answer {
    /// RST_STREAM with REFUSED_STREAM: the stream was never processed.
    Refuse,
    /// A trailers-only response with these headers (`grpc-status` and friends).
    TrailersOnly(Vec<(&'static str, &'static str)>),
    /// A response that is not gRPC: an HTTP status, a content type and a body.
    Http(u16, &'static str, &'static str),
    /// A gRPC response: headers at once, then after `delay` the message and
    /// trailers with these extra fields (`grpc-status: 0` unless given).
    Grpc {
        delay: Duration,
        message: &'static str,
        trailers: Vec<(&'static str, &'static str)>,
    },
}

impl Answer {
    pub fn ok(message: &'static str) -> Self {
        Answer::Grpc {
            delay: Duration::ZERO,
            message,
            trailers: vec![],
        }
    }
}

/// The scripted server and how many streams it has seen.
#[derive(Clone)]
pub struct H2Server {
    script: Arc<dyn Fn(usize) -> Answer + Send + Sync>,
    streams: Arc<AtomicUsize>,
}

impl H2Server {
    pub fn new(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        Self {
            script: Arc::new(script),
            streams: Arc::default(),
        }
    }

    /// Streams opened by clients so far.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// A tonic channel to this server over an in-memory pipe (a new connection
    /// per connect).
    pub fn channel(&self) -> Channel {
        let server = self.clone();
        Endpoint::from_static("http://h2.test").connect_with_connector_lazy(tower::service_fn(
            move |_| {
                let (client, io) = tokio::io::duplex(1 << 20);
                tokio::spawn(server.clone().serve(io));
                async move { Ok::<_, std::io::Error>(TokioIo::new(client)) }
            },
        ))
    }

    async fn serve(self, io: tokio::io::DuplexStream) {
        let Ok(mut connection) = h2::server::handshake(io).await else {
            return;
        };
        while let Some(Ok((_request, respond))) = connection.accept().await {
            let index = self.streams.fetch_add(1, Ordering::SeqCst);
            let answer = (self.script)(index);
            tokio::spawn(answer_stream(answer, respond));
        }
    }
}

async fn answer_stream(answer: Answer, mut respond: h2::server::SendResponse<Bytes>) {
    let response = |status: u16, content_type: &str| {
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(())
            .unwrap()
    };
    match answer {
        Answer::Refuse => respond.send_reset(h2::Reason::REFUSED_STREAM),
        Answer::TrailersOnly(headers) => {
            let mut head = response(200, "application/grpc");
            for (k, v) in headers {
                head.headers_mut().insert(k, v.parse().unwrap());
            }
            let _ = respond.send_response(head, true);
        }
        Answer::Http(status, content_type, body) => {
            if let Ok(mut send) = respond.send_response(response(status, content_type), false) {
                let _ = send.send_data(Bytes::from_static(body.as_bytes()), true);
            }
        }
        Answer::Grpc {
            delay,
            message,
            trailers,
        } => {
            let Ok(mut send) = respond.send_response(response(200, "application/grpc"), false)
            else {
                return;
            };
            tokio::time::sleep(delay).await;
            let _ = send.send_data(grpc_frame(message), false);
            let mut map = HeaderMap::new();
            map.insert("grpc-status", "0".parse().unwrap());
            for (k, v) in trailers {
                map.insert(k, v.parse().unwrap());
            }
            let _ = send.send_trailers(map);
        }
    }
}

/// One gRPC length-prefixed message holding an `Echo`.
fn grpc_frame(message: &str) -> Bytes {
    let body = prost::Message::encode_to_vec(&Echo {
        msg: message.to_owned(),
        n: 0,
    });
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(body.len() as u32);
    frame.put_slice(&body);
    frame.freeze()
}
