use std::future::Future;

use tai_macros::resilient;
use tai_runtime::Status;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Req {
    #[prost(uint32, tag = "1")]
    pub n: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Resp {}

#[resilient()]
pub trait Svc {
    #[resilient(balancer = "least_loaded")]
    fn call(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send;
}

fn main() {}
