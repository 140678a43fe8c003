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

// A service-level retry on ABORTED is fine for idempotent methods only; the error
// is at the service's codes and names the method it concerns.
#[resilient(service = "x.v1.Svc", retry(codes = [UNAVAILABLE, ABORTED]))]
pub trait Svc {
    #[resilient(idempotent)]
    fn safe(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send;
    fn not_safe(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send;
}

fn main() {}
