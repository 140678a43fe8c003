//! All four method kinds, detected from `RequestStream` / `ResponseStream`.
#![deny(warnings, missing_docs)]

use core::future::Future;

use tai_macros::resilient;
use tai_runtime::{RequestStream, ResponseStream, Status};

/// A message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(uint32, tag = "1")]
    n: u32,
}

/// Every shape of RPC.
#[resilient(service = "stream.v1.Streams", idempotent, retry = default)]
pub trait Streams {
    /// Unary, retried.
    fn unary(&self, request: Msg) -> impl Future<Output = Result<Msg, Status>> + Send;
    /// Server streaming, retried until the stream is established.
    fn server(&self, request: Msg) -> impl Future<Output = Result<ResponseStream<Msg>, Status>> + Send;
    /// Client streaming: the inherited retry does not apply.
    fn client(&self, request: RequestStream<Msg>) -> impl Future<Output = Result<Msg, Status>> + Send;
    /// Bidi, as an async fn.
    async fn bidi(&self, request: RequestStream<Msg>) -> Result<ResponseStream<Msg>, Status>;
    /// Server streaming with retry turned off.
    #[resilient(retry = none, timeout = none)]
    async fn server_once(&self, request: Msg) -> Result<tai_runtime::ResponseStream<Msg>, tonic::Status>;
}

/// The client's methods have tonic's shape; the trait's keep the plain messages.
async fn calls(client: &StreamsClient, requests: fn() -> RequestStream<Msg>) -> Result<(), Status> {
    let _: Msg = client.unary(Msg::default()).await?.into_inner();
    let mut stream: ResponseStream<Msg> = client.server(Msg::default()).await?.into_inner();
    let _ = stream.message().await?;
    let _ = stream.trailers().await?;
    let _: Msg = client.client(requests()).await?.into_inner();
    let _: ResponseStream<Msg> = client.bidi(requests()).await?.into_inner();
    let _: ResponseStream<Msg> = client.server_once(Msg::default()).await?.into_inner();
    let _: Msg = Streams::unary(client, Msg::default()).await?;
    let _: ResponseStream<Msg> = Streams::bidi(client, requests()).await?;
    Ok(())
}

fn main() {
    let _ = calls;
}
