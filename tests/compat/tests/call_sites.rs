//! A tonic client's call sites, written once (`call_sites!`), compile and run
//! unchanged against tonic's generated client and against tai's, for the same
//! proto: the only difference between the two expansions is the channel type
//! (`tonic::transport::Channel` or `tai_runtime::Channel`) and which generated
//! module is imported. Both run against one real tonic server, and must see the
//! same answers.

use std::pin::Pin;
use std::time::Duration;

use tai_compat::tonic_side::greeter_server::{Greeter, GreeterServer};
use tai_compat::tonic_side::{HelloReply, HelloRequest};
use tokio_stream::{Stream, StreamExt};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

type Calls = Result<Vec<String>, Box<dyn std::error::Error>>;

/// What a tonic user writes, verbatim: constructors and options, a plain
/// message, a `Request` with metadata and a timeout, response metadata, every
/// streaming shape, `message()`, `next()`, `trailers()`, an interceptor.
macro_rules! call_sites {
    ($channel:ty) => {
        pub async fn run(address: String) -> super::Calls {
            use std::time::Duration;
            use tokio_stream::StreamExt;
            use tonic::codec::CompressionEncoding;
            let mut seen = Vec::new();

            let mut client = GreeterClient::connect(address.clone()).await?;
            let reply = client
                .say_hello(HelloRequest { name: "ada".into() })
                .await?;
            seen.push(reply.into_inner().message);

            let mut request = tonic::Request::new(HelloRequest { name: "bob".into() });
            request
                .metadata_mut()
                .insert("x-tenant", "acme".parse().unwrap());
            request.set_timeout(Duration::from_secs(5));
            let reply = client.say_hello(request).await?;
            let served_by = reply
                .metadata()
                .get("x-served-by")
                .unwrap()
                .to_str()?
                .to_owned();
            seen.push(format!(
                "{} (served by {served_by})",
                reply.get_ref().message
            ));

            let mut stream = client
                .spell(HelloRequest { name: "cy".into() })
                .await?
                .into_inner();
            while let Some(letter) = stream.message().await? {
                seen.push(letter.message);
            }
            let trailers = stream.trailers().await?;
            seen.push(format!("trailers: {}", trailers.is_some()));

            let mut stream = client
                .spell(HelloRequest { name: "di".into() })
                .await?
                .into_inner();
            while let Some(letter) = stream.next().await {
                seen.push(letter?.message);
            }

            let names = vec![
                HelloRequest { name: "eve".into() },
                HelloRequest { name: "fay".into() },
            ];
            let reply = client
                .greet_all(tokio_stream::iter(names))
                .await?
                .into_inner();
            seen.push(reply.message);

            let names = vec![HelloRequest { name: "gus".into() }];
            let mut replies = client
                .chat(tonic::Request::new(tokio_stream::iter(names)))
                .await?
                .into_inner();
            while let Some(reply) = replies.message().await? {
                seen.push(reply.message);
            }

            let channel: $channel = connect(&address).await?;
            let mut client = GreeterClient::new(channel)
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(1 << 20);
            let reply = client
                .say_hello(HelloRequest { name: "hal".into() })
                .await?;
            seen.push(reply.into_inner().message);

            let channel: $channel = connect(&address).await?;
            let mut client =
                GreeterClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
                    request
                        .metadata_mut()
                        .insert("x-tenant", "intercepted".parse().unwrap());
                    Ok(request)
                });
            let reply = client
                .say_hello(HelloRequest { name: "ivy".into() })
                .await?;
            seen.push(reply.into_inner().message);

            let channel: $channel = connect(&address).await?;
            let mut client = GreeterClient::with_interceptor(channel, |_: tonic::Request<()>| {
                Err(tonic::Status::unauthenticated("no token"))
            });
            let refused = client.say_hello(HelloRequest { name: "jo".into() }).await;
            seen.push(format!("{:?}", refused.map(|_| ()).map_err(|s| s.code())));
            Ok(seen)
        }
    };
}

mod with_tonic {
    use tai_compat::tonic_side::HelloRequest;
    use tai_compat::tonic_side::greeter_client::GreeterClient;

    async fn connect(address: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Channel::from_shared(address.to_owned())
            .unwrap()
            .connect()
            .await
    }

    call_sites!(tonic::transport::Channel);
}

// tai's client methods take `&self`, so tonic's `let mut client` is more than
// tai needs: a warning, not a change.
#[allow(unused_mut)]
mod with_tai {
    use tai_compat::tai_side::HelloRequest;
    use tai_compat::tai_side::greeter_client::GreeterClient;

    async fn connect(address: &str) -> Result<tai_runtime::Channel, tai_runtime::ConnectError> {
        tai_runtime::Channel::to(address)
    }

    call_sites!(tai_runtime::Channel);
}

/// Greets with the caller's tenant, says who served it, compresses when asked.
struct Hello;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

fn reply(message: String) -> HelloReply {
    HelloReply { message }
}

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let tenant = request
            .metadata()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned();
        let mut response = Response::new(reply(format!(
            "hello {} of {tenant}",
            request.get_ref().name
        )));
        response
            .metadata_mut()
            .insert("x-served-by", "tonic".parse().unwrap());
        Ok(response)
    }

    type SpellStream = ReplyStream;

    async fn spell(&self, request: Request<HelloRequest>) -> Result<Response<ReplyStream>, Status> {
        let letters: Vec<_> = request
            .into_inner()
            .name
            .chars()
            .map(|c| Ok(reply(c.to_string())))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(letters))))
    }

    async fn greet_all(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut names = Vec::new();
        let mut requests = request.into_inner();
        while let Some(r) = requests.message().await? {
            names.push(r.name);
        }
        Ok(Response::new(reply(format!(
            "hello {}",
            names.join(" and ")
        ))))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let replies = request
            .into_inner()
            .map(|r| r.map(|r| reply(format!("hi {}", r.name))));
        Ok(Response::new(Box::pin(replies)))
    }
}

#[tokio::test]
async fn tonic_call_sites_compile_and_answer_the_same_against_tai() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let service = GreeterServer::new(Hello)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let tonic = with_tonic::run(address.clone()).await.unwrap();
    let tai = tokio::time::timeout(Duration::from_secs(30), with_tai::run(address))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tai, tonic);
    assert_eq!(
        tonic,
        [
            "hello ada of nobody",
            "hello bob of acme (served by tonic)",
            "c",
            "y",
            "trailers: true",
            "d",
            "i",
            "hello eve and fay",
            "hi gus",
            "hello hal of nobody",
            "hello ivy of intercepted",
            "Err(Unauthenticated)",
        ]
    );
    server.abort();
}
