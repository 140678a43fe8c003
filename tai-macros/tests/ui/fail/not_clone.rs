use std::future::Future;

use tai_macros::resilient;
use tai_runtime::Status;

// A prost message without `Clone`.
#[derive(PartialEq, ::prost::Message)]
pub struct Req {
    #[prost(uint32, tag = "1")]
    pub n: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Resp {}

#[resilient(service = "x.v1.Svc")]
pub trait Svc {
    #[resilient(retry = 3)]
    fn call(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send;
}

fn main() {}
