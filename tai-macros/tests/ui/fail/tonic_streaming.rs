use tai_macros::resilient;
use tai_runtime::{Request, Response, Status, Streaming};

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Msg {}

#[resilient(service = "streams.v1.Streams")]
pub trait Streams {
    async fn watch(&self, request: Request<Msg>) -> Result<Response<Streaming<Msg>>, Status>;
    async fn upload(&self, request: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status>;
}

fn main() {}
