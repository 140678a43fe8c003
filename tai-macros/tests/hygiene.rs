//! The expansion names everything by absolute path, so it compiles in a module that
//! shadows the prelude and the standard crates' names.

#![allow(
    missing_docs,
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    clippy::disallowed_names
)]

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(uint32, tag = "1")]
    pub n: u32,
}

pub mod shadowed {
    // Modules and items named like what the expansion uses.
    pub mod core {}
    pub mod std {}
    pub mod tai_runtime {}
    pub mod prost {}
    pub struct Option;
    pub struct Result;
    pub struct Duration;
    pub struct String;
    pub struct Channel;
    pub struct Status;
    pub struct ClientCore;
    pub const Some: () = ();
    pub const None: () = ();
    pub const Ok: () = ();
    pub const Err: () = ();
    pub trait Send {}
    pub trait Sync {}
    pub trait Clone {}
    pub trait From {}
    pub trait Into {}
    pub trait Future {}
    pub trait Transport {}
    pub trait Resilient {}

    use super::Ping;

    #[::tai_macros::resilient(
        service = "hygiene.v1.Shadow",
        timeout = "1s",
        max_timeout = "2s",
        retry(max_attempts = 3, multiplier = 1.5),
        breaker(failure_rate = 0.5),
        throttle = default
    )]
    pub trait Shadow {
        /// Unary, retried.
        fn ping(
            &self,
            request: Ping,
        ) -> impl ::core::future::Future<
            Output = ::core::result::Result<Ping, ::tai_runtime::Status>,
        > + ::core::marker::Send;

        /// Server streaming, hedged.
        #[resilient(idempotent, hedging(non_fatal_codes = [UNAVAILABLE]))]
        async fn watch(
            &self,
            request: Ping,
        ) -> ::core::result::Result<::tai_runtime::ResponseStream<Ping>, ::tai_runtime::Status>;

        /// Bidi.
        fn chat(
            &self,
            request: ::tai_runtime::RequestStream<Ping>,
        ) -> impl ::core::future::Future<
            Output = ::core::result::Result<
                ::tai_runtime::ResponseStream<Ping>,
                ::tai_runtime::Status,
            >,
        > + ::core::marker::Send;
    }
}

#[test]
fn expands_in_a_shadowing_module() {
    fn is_client<C: shadowed::Shadow + tai_runtime::Resilient + Clone>() {}
    is_client::<shadowed::ShadowClient>();
}
