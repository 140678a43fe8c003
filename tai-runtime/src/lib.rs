//! # tai-runtime
//!
//! The runtime of **tai**, resilient gRPC for Rust. Service owners declare each RPC's
//! policy once — retry, hedging, circuit breaker, timeout, idempotency — in their
//! `.proto` files (compiled by `tai-build`) or with the [`resilient`] attribute on a
//! Rust trait, and get a typed client that runs that policy on every call.
//!
//! ```ignore
//! use tai_runtime::resilient;
//!
//! #[resilient(service = "tai.v1.Governor", timeout = "30s", breaker = default)]
//! pub trait Governor {
//!     #[resilient(idempotent, timeout = "2s", retry(max_attempts = 4, codes = [UNAVAILABLE]))]
//!     fn propose_policy(&self, request: Policy)
//!         -> impl Future<Output = Result<Receipt, tai_runtime::Status>> + Send;
//! }
//!
//! let client = GovernorClient::connect("http://127.0.0.1:50051").await?;
//! let receipt = client.propose_policy(policy).await?.into_inner();
//! ```
//!
//! What runs on a call (see the `client` module for the order and why):
//! - a deadline over the whole call, sent to the server as `grpc-timeout` with the
//!   time that is left, failing with DEADLINE_EXCEEDED;
//! - a circuit breaker per method ([`breaker`]), gating every attempt;
//! - gRFC A6 retry (backoff with jitter, pushback, attempts header, commit rules)
//!   or hedging, with retry throttling ([`throttle`]) shared by the client.
//!
//! Policies are `const` data ([`policy`]) written by the macro expansion.

#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench_support;
pub mod channel;
mod client;
pub mod auth {
    //! The client side of authentication: bearer tokens on every call.
    //!
    //! A [`TokenSource`] is a generated client's interceptor: a fixed token, or
    //! one refreshed in the background ahead of its expiry. The server side
    //! (verifying tokens, access rules) is `tai_runtime::server::auth`.
    pub use crate::client::token::{DEFAULT_REFRESH_MARGIN, Token, TokenError, TokenSource};
}
pub mod config;
pub mod context;
mod error;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod policy;
#[cfg(feature = "server")]
pub mod server;
mod sync;
#[cfg(feature = "tls")]
pub mod tls;
mod wire;

/// A boxed error, as tower and tonic pass them around.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use channel::{Channel, ConnectivityState, Endpoints};
pub use client::breaker::{self, BreakerState, TripReason};
pub use client::config::{ConfigError, ServiceConfig};
pub use client::contract::{Tower, Transport};
pub use client::layers;
pub use client::state::{ClientState, EffectivePolicy, PolicyView, Resilient};
pub use client::stats::{ClientStats, MethodStats};
pub use client::stream::{RequestStream, ResponseStream};
pub use client::throttle;
pub use context::Detached;
pub use error::ConnectError;
pub use tai_macros::resilient;
pub use tonic::codec::CompressionEncoding;
pub use tonic::service::Interceptor;
pub use tonic::{
    Code, IntoRequest, IntoStreamingRequest, Request, Response, Status, Streaming, async_trait,
};

/// Protobuf's well-known types (`Timestamp`, `Duration`, `Empty`, ...), as generated
/// code uses them.
pub use prost_types as well_known;

/// Includes the code tai-build generated for a proto package.
///
/// ```ignore
/// pub mod governance {
///     tai_runtime::include_proto!("tai.v1");
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// The encoded `FileDescriptorSet` tai-build wrote, for server reflection.
///
/// ```ignore
/// const DESCRIPTORS: &[u8] = tai_runtime::include_descriptor_set!();
/// ```
#[macro_export]
macro_rules! include_descriptor_set {
    () => {
        include_bytes!(concat!(env!("OUT_DIR"), "/tai_descriptor.bin"))
    };
}

/// What the `#[resilient]` expansion and tai-build's generated code use. Not a
/// public API: it changes with the macro.
#[doc(hidden)]
pub mod __private {
    pub use crate::client::connect::{connect, connect_lazy};
    pub use crate::client::contract::{RequestMessage, ResponseMessage, Transport};
    pub use crate::client::core::ClientCore;
    pub use crate::client::forward::into_inner;
    pub use crate::client::state::ClientState;
    pub use prost;
    pub use prost_types;
    pub use tonic;
    pub use tonic_prost;
}
