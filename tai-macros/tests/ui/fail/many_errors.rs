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

// Every mistake is reported in one compilation, each at its own token.
#[resilient(service = "x.v1.Svc", timeout = "1 s", retires = 3, retry(max_attempts = 1))]
pub trait Svc {
    #[resilient(breaker(failure_threshold = 0, failure_codes = [NOPE]), hedging = default)]
    fn call(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send;
}

fn main() {
    // The client still exists despite the errors above, for the IDE and for this code.
    let _ = SvcClient::connect("http://127.0.0.1:50051");
}
