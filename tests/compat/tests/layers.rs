//! tai's tower layers under a client tonic generated: the same proto's tonic
//! client, unchanged, over `RetryLayer` on tonic's own `Channel`, against a real
//! tonic server — one that fails twice before it answers, and grpc-go's
//! `TestRetryUnary` and `TestRetryThrottling` tables (the very tables
//! `tai-runtime/tests/retry.rs` runs through the generated client's engine).

#[path = "../../../tai-runtime/tests/support/grpc_go.rs"]
mod grpc_go;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tai_compat::tonic_side::greeter_client::GreeterClient;
use tai_compat::tonic_side::greeter_server::{Greeter, GreeterServer};
use tai_compat::tonic_side::{HelloReply, HelloRequest};
use tai_runtime::Code;
use tai_runtime::layers::RetryLayer;
use tai_runtime::policy::{CodeSet, RetryPolicy};
use tonic::{Request, Response, Status, Streaming};

/// Answers its `i`-th call (from 0) with `answer(i)`'s error, or greets.
struct Scripted {
    calls: Arc<AtomicUsize>,
    answer: fn(usize) -> Option<Status>,
}

type ReplyStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl Greeter for Scripted {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        if let Some(status) = (self.answer)(self.calls.fetch_add(1, Ordering::SeqCst)) {
            return Err(status);
        }
        Ok(Response::new(HelloReply {
            message: format!("hello {}", request.into_inner().name),
        }))
    }

    type SpellStream = ReplyStream;

    async fn spell(&self, _: Request<HelloRequest>) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn greet_all(
        &self,
        _: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        _: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn a_tonic_generated_client_retries_through_tais_retry_layer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let service = GreeterServer::new(Scripted {
        calls: Arc::clone(&calls),
        answer: |i| (i < 2).then(|| Status::unavailable("warming up")),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let channel = tonic::transport::Endpoint::from_shared(address.clone())
        .unwrap()
        .connect_lazy();
    let retry = RetryLayer::new(retry_policy(), None);
    let mut client = GreeterClient::new(tower::Layer::layer(&retry, channel));
    let reply = client
        .say_hello(HelloRequest { name: "ada".into() })
        .await
        .expect("the third attempt succeeds");
    assert_eq!(reply.into_inner().message, "hello ada");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Past the policy's attempts the caller gets the server's own status.
    calls.store(0, Ordering::SeqCst);
    let mut two = retry_policy();
    two.max_attempts = 2;
    let two_attempts = RetryLayer::new(two, None);
    let channel = tonic::transport::Endpoint::from_shared(address)
        .unwrap()
        .connect_lazy();
    let mut strict = GreeterClient::new(tower::Layer::layer(&two_attempts, channel));
    let err = strict
        .say_hello(HelloRequest { name: "bob".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!(err.message(), "warming up");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(
        3,
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
        CodeSet::of(&[Code::Unavailable]),
    )
}

/// grpc-go `TestRetryUnary` through `RetryLayer` under tonic's generated client.
#[tokio::test(start_paused = true)]
async fn grpc_go_retry_unary_table_through_the_layer_under_tonics_client() {
    run(grpc_go::retry_unary()).await;
}

/// grpc-go `TestRetryThrottling` through `RetryLayer` under tonic's generated
/// client.
#[tokio::test(start_paused = true)]
async fn grpc_go_retry_throttling_trace_through_the_layer_under_tonics_client() {
    run(grpc_go::retry_throttling()).await;
}

/// A table of grpc-go's through `RetryLayer` on tonic's `Channel` under
/// tonic's `GreeterClient`, against tonic's server scripted by the table, in
/// memory (so the backoffs run on paused time).
async fn run(table: grpc_go::Table) {
    let calls = Arc::new(AtomicUsize::new(0));
    let channel = in_memory(GreeterServer::new(Scripted {
        calls: Arc::clone(&calls),
        answer: table.answer,
    }));
    let retry = RetryLayer::new(table.retry, table.throttle);
    retry.seed_jitter(1);
    let throttle = retry.throttle().cloned();
    let client = GreeterClient::new(tower::Layer::layer(&retry, channel));
    table
        .run(
            || {
                let mut client = client.clone();
                async move {
                    let request = HelloRequest { name: "ada".into() };
                    grpc_go::code_of(&client.say_hello(request).await)
                }
            },
            || calls.load(Ordering::SeqCst),
            || throttle.as_ref().expect("the table's throttle").tokens(),
        )
        .await;
}

/// Serves `service` over in-memory pipes; the channel connects through them.
fn in_memory(service: GreeterServer<Scripted>) -> tonic::transport::Channel {
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let incoming =
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    tonic::transport::Endpoint::from_static("http://in-memory.test").connect_with_connector_lazy(
        tower::service_fn(move |_| {
            let (client, server) = tokio::io::duplex(1 << 20);
            let sent = tx.send(server);
            async move {
                sent.map_err(|_| std::io::Error::other("server gone"))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
            }
        }),
    )
}
