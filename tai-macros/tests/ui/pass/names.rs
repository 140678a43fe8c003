//! Method names that clash with the client's own API, raw identifiers, a type named
//! `T`, no attribute arguments, restricted visibility and supertraits.
#![deny(warnings, missing_docs)]

use std::future::Future;

use tai_runtime::Status;

/// A message called `T`, like the client's transport parameter.
#[allow(non_camel_case_types)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct T {}

/// Another message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

mod service {
    use super::*;

    /// The proto service is named after the trait: `Names`.
    #[tai_macros::resilient]
    pub(crate) trait Names: Send + Sync + 'static {
        /// `New`: the client has no inherent `new`, only `From`.
        #[tai_macros::resilient(idempotent, retry = 2)]
        fn new(&self, request: T) -> impl Future<Output = Result<T, Status>> + Send;
        /// `Connect`: the client has no inherent `connect`.
        fn connect(&self, request: Empty) -> impl Future<Output = Result<Empty, Status>> + Send;
        /// A raw identifier: the proto method `Type`.
        fn r#type(&self, request: Empty) -> impl Future<Output = Result<Empty, Status>> + Send;
        /// Clashes with nothing: `Resilient` methods live on a trait.
        fn client_state(&self, request: Empty) -> impl Future<Output = Result<Empty, Status>> + Send;
    }
}

/// A service without methods is valid.
#[tai_macros::resilient(service = "empty.v1.Nothing", throttle = default)]
pub trait Nothing {}

mod server_only {
    use super::*;

    /// Only a server implements this private trait: its generated client, never used,
    /// must not warn.
    #[tai_macros::resilient]
    trait ServerOnly {
        fn ping(&self, request: Empty) -> impl Future<Output = Result<Empty, Status>> + Send;
    }

    struct Server;

    impl ServerOnly for Server {
        async fn ping(&self, request: Empty) -> Result<Empty, Status> {
            Ok(request)
        }
    }

    pub(crate) async fn serve() -> Result<Empty, Status> {
        Server.ping(Empty {}).await
    }
}

use service::{Names, NamesClient};

async fn calls(channel: tai_runtime::Channel) -> Result<(), Status> {
    let client = NamesClient::from(channel);
    let _: T = client.new(T {}).await?.into_inner();
    let _: Empty = client.connect(Empty {}).await?.into_inner();
    let _: Empty = client.r#type(Empty {}).await?.into_inner();
    let _: Empty = client.client_state(Empty {}).await?.into_inner();
    let _: &tai_runtime::ClientState = tai_runtime::Resilient::client_state(&client);
    let policy = tai_runtime::Resilient::service_policy(&client);
    assert_eq!(policy.name, "Names");
    assert_eq!(policy.methods[2].name, "Type");
    assert_eq!(policy.methods[2].rust_name, "type");
    assert_eq!(policy.methods[0].path, "/Names/New");
    fn generic<N: Names>(_: &N) {}
    generic(&client);
    Ok(())
}

fn main() {
    let _ = calls;
    let _ = server_only::serve;
    let _ = NothingClient::<tai_runtime::Channel>::new;
}
