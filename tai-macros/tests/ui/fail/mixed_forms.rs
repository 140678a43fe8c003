use core::future::Future;

use tai_macros::resilient;
use tai_runtime::{Request, Response, Status};

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Msg {}

#[resilient(service = "mixed.v1.Mixed")]
pub trait Mixed {
    fn request_only(&self, request: Request<Msg>) -> impl Future<Output = Result<Msg, Status>> + Send;
    fn response_only(&self, request: Msg) -> impl Future<Output = Result<Response<Msg>, Status>> + Send;
}

fn main() {}
