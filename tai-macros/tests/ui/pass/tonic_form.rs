//! A trait written as tonic writes its methods (`Request` in, `Response` out),
//! for all four kinds, and the client options tonic offers.
#![deny(warnings, missing_docs)]

use core::future::Future;
use std::time::Duration;

use tai_macros::resilient;
use tai_runtime::{Request, RequestStream, Response, ResponseStream, Status};
use tonic::codec::CompressionEncoding;

/// A message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(uint32, tag = "1")]
    n: u32,
}

/// Every shape of RPC, the tonic way.
#[resilient(service = "tonic.v1.Shapes", idempotent, retry = default, max_timeout = "10s")]
pub trait Shapes {
    /// Unary.
    fn unary(&self, request: Request<Msg>) -> impl Future<Output = Result<Response<Msg>, Status>> + Send;
    /// Server streaming.
    async fn server(&self, request: tonic::Request<Msg>) -> Result<tonic::Response<ResponseStream<Msg>>, Status>;
    /// Client streaming.
    fn client(&self, request: Request<RequestStream<Msg>>) -> impl Future<Output = Result<Response<Msg>, Status>> + Send;
    /// Bidi.
    async fn bidi(&self, request: Request<RequestStream<Msg>>) -> Result<Response<ResponseStream<Msg>>, Status>;
}

/// Through the trait, generically.
async fn generic<S: Shapes>(shapes: &S) -> Result<Msg, Status> {
    let mut request = Request::new(Msg::default());
    request.set_timeout(Duration::from_millis(300));
    Ok(shapes.unary(request).await?.into_inner())
}

async fn calls(requests: fn() -> RequestStream<Msg>) -> Result<(), Box<dyn std::error::Error>> {
    let channel = tai_runtime::Channel::to("http://127.0.0.1:50051")?;
    let client = ShapesClient::with_interceptor(channel, |mut request: Request<()>| {
        request.metadata_mut().insert("x-trace", "1".parse().unwrap());
        Ok(request)
    })
    .send_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Zstd)
    .max_decoding_message_size(1 << 20)
    .max_encoding_message_size(1 << 20);
    let _ = generic(&client).await?;
    // A plain message is a request too, and so is a stream.
    let reply: Response<Msg> = client.unary(Msg::default()).await?;
    let _ = reply.metadata().get("x-served-by");
    let mut stream = client.server(Msg::default()).await?.into_inner();
    while let Some(_msg) = stream.message().await? {}
    let _: Msg = client.client(requests()).await?.into_inner();
    let _ = client.bidi(Request::new(requests())).await?;
    let lazy = ShapesClient::connect_lazy("http://127.0.0.1:50051")?;
    drop(lazy);
    Ok(())
}

fn main() {
    let _ = calls;
}
