//! tai's tower layers under a client tonic generated: the same proto's tonic
//! client, unchanged, over `RetryLayer` on tonic's own `Channel`, against a real
//! tonic server that fails twice before it answers.

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

/// Answers UNAVAILABLE to its first `failures` calls, then greets.
struct Flaky {
    calls: Arc<AtomicUsize>,
    failures: usize,
}

type ReplyStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl Greeter for Flaky {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(Status::unavailable("warming up"));
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
    let service = GreeterServer::new(Flaky {
        calls: Arc::clone(&calls),
        failures: 2,
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
