//! The server side of tai: tower layers for any tonic server, and reflection.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let (_, health) = tonic_health::server::health_reporter();
//! use std::num::NonZeroU32;
//! use tai_runtime::server::ServerLayer;
//! use tai_runtime::server::rate_limit::{Quota, RateLimitLayer};
//!
//! const PER_CLIENT: Quota = Quota::per_second(NonZeroU32::new(50).unwrap());
//!
//! tonic::transport::Server::builder()
//!     // Outermost first: metrics see what the layers below them answer.
//!     .layer(ServerLayer::new())
//!     .layer(RateLimitLayer::per_client(PER_CLIENT))
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! One concept per module, each with its layer, service and future, as in tower:
//! - [`auth`]: UNAUTHENTICATED without a valid bearer JWT; the caller's
//!   identity handed to handlers;
//! - [`deadline`]: DEADLINE_EXCEEDED when the caller's `grpc-timeout` passes;
//! - [`metrics`]: calls by method and status code, and their latency;
//! - [`outcome`]: a call's status where its response ends (the trailers of a
//!   stream), for its metrics and its span;
//! - [`ContextLayer`]: the handler runs inside its call's context (trace and
//!   deadline), which the tai calls it makes carry on ([`crate::context`]);
//! - [`ServerLayer`]: the three above as one, sharing a clock read per call;
//! - [`rate_limit`]: a quota per client (and optionally for all clients);
//! - [`reflection`]: `grpc.reflection.v1` and `v1alpha`, files sent with their
//!   imports;
//! - [`DependencyHealth`]: the [`Server`]'s health driven by the application's
//!   dependencies (a service NOT_SERVING while one it needs is down).
//!
//! All of it is behind the `server` feature (on by default); a client-only build
//! turns default features off and builds none of it.

mod accept;
pub mod auth;
mod builder;
mod call;
mod context;
pub mod deadline;
mod decided;
mod frames;
mod health;
mod keepalive;
mod layer;
mod limits;
pub mod metrics;
pub mod outcome;
pub mod rate_limit;
pub mod reflection;
mod serve;
mod shed;
mod signal;

pub use crate::wire::timeout::decode as parse_grpc_timeout;
pub use accept::{Accept, ConnectInfo, PlainTcp};
pub use builder::{
    DEFAULT_CONCURRENCY_LIMIT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_CONNECTIONS, Routed, Server,
};
pub use context::{ContextLayer, Traced, WithContext};
pub use health::DependencyHealth;
pub use keepalive::KeepalivePolicy;
pub use layer::{ServerFuture, ServerLayer, ServerService};
pub use limits::DEFAULT_MAX_MESSAGE;
pub use serve::{Drained, ServeError, bind};
pub use shed::InFlight;
pub use signal::shutdown_signal;
