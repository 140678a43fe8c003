//! Per-client rate limiting for tai servers.
//!
//! [`RateLimitLayer`] gives every client its own [`Quota`] (a rate and a burst,
//! enforced with [governor]'s GCRA: one atomic word per client, no timers, no
//! background task) and, optionally, a second quota for all clients together.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let (_, health) = tonic_health::server::health_reporter();
//! use std::num::NonZeroU32;
//! use tai_runtime::server::rate_limit::{Quota, RateLimitLayer};
//!
//! // 50 calls a second per client, in bursts of up to 100. `const`, so a zero is a
//! // compile error rather than a panic at start-up.
//! const PER_CLIENT: Quota = Quota::per_second(NonZeroU32::new(50).unwrap())
//!     .allow_burst(NonZeroU32::new(100).unwrap());
//! // And at most 2 000 a second for the whole server.
//! const ALL_CLIENTS: Quota = Quota::per_second(NonZeroU32::new(2_000).unwrap());
//!
//! tonic::transport::Server::builder()
//!     .layer(RateLimitLayer::per_client(PER_CLIENT).global(ALL_CLIENTS))
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Who is a client
//!
//! By default the peer's IP address, from the [`TcpConnectInfo`] tonic puts in each
//! request: an IPv4 address, or the /64 network of an IPv6 address (one host
//! usually holds a whole /64, so per-address keys would let it pick a fresh key per
//! call). Requests without a peer address (Unix sockets, or tonic's TLS, which
//! stores a different type: use [`RateLimitLayer::key_by`] there) share one key,
//! and the layer logs a warning the first time that happens.
//! [`RateLimitLayer::key_by_header`] keys by a request header instead (e.g.
//! `x-client-id`), and [`RateLimitLayer::key_by`] by any function of the request;
//! both fall back to the peer address when they find no usable key. Header values
//! are chosen by the peer: key by a header only when something you trust (an
//! authenticating proxy) sets it, or a client can spread its calls over many keys.
//! Values longer than [`MAX_KEY_LEN`] bytes, or empty, are not used as keys.
//!
//! # Bounded memory
//!
//! Keys come from peers, so the table of clients is bounded:
//! [`DEFAULT_MAX_CLIENTS`], or [`RateLimitLayer::max_clients`]. When a new client
//! arrives and the table is full, the layer first drops the clients whose state is
//! no different from a fresh one (governor's `retain_recent`; at most once per
//! replenish interval of the quota, clamped to 100 ms..10 s, so a flood of new keys
//! cannot make every call sweep the table). If the table is still full, the new
//! client is not tracked: every such client shares **one** extra bucket with the
//! per-client quota, and its refusals say so. Known clients keep their own
//! buckets, so a flood of new keys cannot take a known client's share; add a
//! [`global`](RateLimitLayer::global) quota to bound the total.
//!
//! # Refusals
//!
//! A refused call never reaches the service. The client gets RESOURCE_EXHAUSTED,
//! with a message naming its key, the quota and the wait, and the wait in the
//! `grpc-retry-pushback-ms` trailer (gRFC A6), which tai's clients honor when they
//! retry. The answer is an ordinary trailers-only gRPC response (HTTP 200).
//!
//! The per-client quota is checked before the global one, so calls a client is
//! refused do not use up the server's global budget. Each refusal is logged at
//! `debug` level; to count them, put [`ServerLayer`](crate::server::ServerLayer)
//! (or [`MetricsLayer`](crate::server::metrics::MetricsLayer)) outside this layer
//! (add it first): its `server_calls` metric then counts the refusals as
//! RESOURCE_EXHAUSTED.
//!
//! # Time
//!
//! The layer reads governor's clock ([`DefaultClock`]), not tokio's. Tests can
//! build it with [`RateLimitLayer::with_clock`] and a [`FakeRelativeClock`], and
//! move time forward by hand.
//!
//! # Layout
//!
//! `key.rs` names clients (who is a client, above), `store.rs` bounds the table
//! of their buckets, and `layer.rs` holds the layer, its service and its future.
//!
//! [`TcpConnectInfo`]: tonic::transport::server::TcpConnectInfo

mod key;
mod layer;
mod store;

pub use governor::Quota;
pub use governor::clock::{Clock, DefaultClock, FakeRelativeClock};
pub use key::{ClientKey, MAX_KEY_LEN};
pub use layer::{RateLimit, RateLimitLayer, ResponseFuture};
pub use store::DEFAULT_MAX_CLIENTS;
