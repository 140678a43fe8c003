use std::future::Future;

use tai_macros::resilient;
use tai_runtime::Status;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Req {}

// The trait itself has no #[resilient].
pub trait Svc {
    #[resilient(retry = 3)]
    fn call(&self, request: Req) -> impl Future<Output = Result<Req, Status>> + Send;
}

fn main() {}
