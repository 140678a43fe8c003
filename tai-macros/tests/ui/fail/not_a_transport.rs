use std::future::Future;

use tai_macros::resilient;
use tai_runtime::Status;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Msg {}

#[resilient(service = "x.v1.Svc")]
pub trait Svc {
    fn call(&self, request: Msg) -> impl Future<Output = Result<Msg, Status>> + Send;
}

fn main() {
    // A tower service speaking gRPC, but not wrapped in `tai_runtime::Tower`.
    let routes = tonic::service::Routes::default();
    let _client = SvcClient::new(routes);
}
