//! A real tonic server for engine tests, reachable in memory (HTTP/2 over a tokio
//! duplex pipe) so that paused tokio time stays deterministic, or over loopback TCP.
//!
//! The service `test.Echo` has a unary method and a server-streaming method whose
//! behaviour each test scripts with a closure of the call's index and metadata.

#![allow(dead_code, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

pub mod grpc_go;
pub mod net;
pub mod raw_h2;

use futures_util::Stream;
use hyper_util::rt::TokioIo;
use tai_runtime::policy::{MethodKind, MethodPolicy, ServicePolicy};
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub msg: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
}

pub fn echo(msg: &str) -> Echo {
    Echo {
        msg: msg.to_owned(),
        n: 0,
    }
}

/// What the server saw of one call.
#[derive(Clone, Debug)]
pub struct Seen {
    pub index: usize,
    pub at: Instant,
    pub previous_attempts: Option<String>,
    pub grpc_timeout: Option<Duration>,
    /// The request's extensions, as the handler saw them (what layers put there).
    pub extensions: http::Extensions,
    /// All the request's metadata, as the server read it.
    pub metadata: MetadataMap,
}

impl Seen {
    /// A request header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.metadata.get(name).and_then(|v| v.to_str().ok())
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type UnaryFn = dyn Fn(usize, Echo) -> BoxFut<Result<Echo, Status>> + Send + Sync;
type StreamFn = dyn Fn(usize) -> BoxFut<Result<Vec<Result<Echo, Status>>, Status>> + Send + Sync;

/// The scripted server and what it has seen.
#[derive(Clone)]
pub struct Script {
    unary: Arc<UnaryFn>,
    stream: Arc<StreamFn>,
    /// Streams stay open after their scripted messages (a server that never ends
    /// them).
    hold_open: bool,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    pub fn unary<F, Fut>(f: F) -> Self
    where
        F: Fn(usize, Echo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Echo, Status>> + Send + 'static,
    {
        Self {
            unary: Arc::new(move |i, e| Box::pin(f(i, e))),
            stream: Arc::new(|_| Box::pin(async { Err(Status::unimplemented("no stream")) })),
            hold_open: false,
            calls: Arc::default(),
            seen: Arc::default(),
        }
    }

    pub fn streaming<F, Fut>(f: F) -> Self
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Echo, Status>>, Status>> + Send + 'static,
    {
        let mut s = Script::unary(|_, _| async { Err(Status::unimplemented("no unary")) });
        s.stream = Arc::new(move |i| Box::pin(f(i)));
        s
    }

    /// As [`streaming`](Self::streaming), but each stream stays open after its
    /// messages, as a server that never ends it.
    #[allow(dead_code)]
    pub fn streaming_held_open<F, Fut>(f: F) -> Self
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Echo, Status>>, Status>> + Send + 'static,
    {
        Self {
            hold_open: true,
            ..Self::streaming(f)
        }
    }

    /// A server that answers its `i`-th call as `answer(i)` says (`None`: an
    /// echo of "ok"), as grpc-go's tables script theirs.
    pub fn answering(answer: fn(usize) -> Option<Status>) -> Self {
        Script::unary(move |i, _| async move { answer(i).map_or(Ok(echo("ok")), Err) })
    }

    /// How many calls reached the server.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn record<T>(&self, request: &Request<T>) -> usize {
        let metadata = request.metadata();
        let index = self.calls.fetch_add(1, Ordering::SeqCst);
        let text = |k: &str| {
            metadata
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.seen.lock().unwrap().push(Seen {
            index,
            at: Instant::now(),
            previous_attempts: text("grpc-previous-rpc-attempts"),
            grpc_timeout: text("grpc-timeout").map(|t| parse_grpc_timeout(&t)),
            extensions: request.extensions().clone(),
            metadata: metadata.clone(),
        });
        index
    }

    /// Serves on an in-memory pipe; the channel connects lazily through it.
    pub fn serve_in_memory(&self) -> Channel {
        let server = Server::builder().add_service(self.clone());
        in_memory(move |incoming| server.serve_with_incoming(incoming))
    }

    /// Serves on loopback TCP; returns the address.
    pub async fn serve_tcp(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = Server::builder().add_service(self.clone());
        tokio::spawn(async move {
            server.serve_with_incoming(incoming).await.expect("server");
        });
        addr
    }
}

/// The connections an in-memory server accepts.
pub type Incoming =
    MapOkStream<tokio_stream::wrappers::UnboundedReceiverStream<tokio::io::DuplexStream>>;

/// Runs `serve` (a tonic server's `serve_with_incoming`, with any layers) on an
/// in-memory pipe; the channel connects lazily through it.
pub fn in_memory<F, Fut>(serve: F) -> Channel
where
    F: FnOnce(Incoming) -> Fut,
    Fut: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let server = serve(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map_ok());
    tokio::spawn(async move {
        server.await.expect("server");
    });
    Endpoint::from_static("http://in-memory.test").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let (client, server) = tokio::io::duplex(1 << 20);
            let sent = tx.send(server);
            async move {
                sent.map_err(|_| std::io::Error::other("server gone"))?;
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        },
    ))
}

trait MapOk: Sized {
    fn map_ok(self) -> MapOkStream<Self>;
}

impl<S: Stream> MapOk for S {
    fn map_ok(self) -> MapOkStream<Self> {
        MapOkStream(self)
    }
}

pub struct MapOkStream<S>(S);

impl<S: Stream + Unpin> Stream for MapOkStream<S> {
    type Item = Result<S::Item, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx).map(|o| o.map(Ok))
    }
}

fn parse_grpc_timeout(t: &str) -> Duration {
    let (n, unit) = t.split_at(t.len() - 1);
    let n: u64 = n.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("bad grpc-timeout {t}"),
    }
}

impl NamedService for Script {
    const NAME: &'static str = "test.Echo";
}

struct UnaryCall(Script);

impl UnaryService<Echo> for UnaryCall {
    type Response = Echo;
    type Future = BoxFut<Result<Response<Echo>, Status>>;
    fn call(&mut self, request: Request<Echo>) -> Self::Future {
        let index = self.0.record(&request);
        let fut = (self.0.unary)(index, request.into_inner());
        Box::pin(async move {
            let mut response = Response::new(fut.await?);
            // A response header for the client to read back.
            response
                .metadata_mut()
                .insert("x-served-by", MetadataValue::from(index as u32));
            Ok(response)
        })
    }
}

struct StreamCall(Script);

type EchoStream = Pin<Box<dyn Stream<Item = Result<Echo, Status>> + Send>>;

impl ServerStreamingService<Echo> for StreamCall {
    type Response = Echo;
    type ResponseStream = EchoStream;
    type Future = BoxFut<Result<Response<EchoStream>, Status>>;
    fn call(&mut self, request: Request<Echo>) -> Self::Future {
        let index = self.0.record(&request);
        let fut = (self.0.stream)(index);
        let hold_open = self.0.hold_open;
        Box::pin(async move {
            let items = futures_util::stream::iter(fut.await?);
            let s: EchoStream = if hold_open {
                Box::pin(futures_util::StreamExt::chain(
                    items,
                    futures_util::stream::pending(),
                ))
            } else {
                Box::pin(items)
            };
            Ok(Response::new(s))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Script {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let script = self.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
            // Compression as tonic's servers offer it: either way, when asked.
            let mut grpc = Grpc::new(codec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd);
            Ok(match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(UnaryCall(script), req).await,
                "/test.Echo/Stream" => grpc.server_streaming(StreamCall(script), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A method policy for `/test.Echo/Unary` with nothing on; tests fill in fields.
pub const fn unary_method() -> MethodPolicy {
    MethodPolicy::new("Unary", "unary", "/test.Echo/Unary", MethodKind::Unary).with_idempotent(true)
}

/// The same for `/test.Echo/Stream`.
pub const fn stream_method() -> MethodPolicy {
    MethodPolicy::new(
        "Stream",
        "stream",
        "/test.Echo/Stream",
        MethodKind::ServerStreaming,
    )
    .with_idempotent(true)
}

/// Leaks a service policy for one test (tests are short-lived processes).
pub fn service(
    methods: Vec<MethodPolicy>,
    throttle: Option<tai_runtime::policy::ThrottlePolicy>,
) -> &'static ServicePolicy {
    let mut policy = ServicePolicy::new("test.Echo", Box::leak(methods.into_boxed_slice()));
    policy.throttle = throttle;
    Box::leak(Box::new(policy))
}

/// Opens a stream of `test.Echo/Stream` through `core`, whose method 0 is the
/// stream method, and hands out its messages.
#[allow(dead_code)]
pub async fn open_stream<T: tai_runtime::Transport>(
    core: &tai_runtime::__private::ClientCore<T>,
) -> tai_runtime::ResponseStream<Echo> {
    core.server_streaming::<Echo, Echo>(0, echo("x"))
        .await
        .expect("the stream opens")
        .into_inner()
}
