//! Per-client rate limiting for tai servers.
//!
//! [`RateLimitLayer`] gives every client its own [`Quota`] (a rate and a burst,
//! enforced with [governor]'s GCRA: one atomic word per client, no timers, no
//! background task), optionally a quota of their own to chosen methods, and a
//! second quota for all clients together. With the `redis` feature the quotas
//! can live in Redis, shared by every replica of a service.
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
//! Whoever authenticated, when an authentication layer ran before this one:
//! [`RateLimitLayer::key_by_extension`] reads the identity (a token's subject, a
//! certificate's SAN) from a type that layer put in the request's extensions, and
//! falls back to the peer address only for calls without one. tai's own
//! `server::auth::Identity` plugs in there:
//! `.key_by_extension(|id: &Identity| id.subject.as_deref().or(id.certificate_sans.first().map(String::as_str)))`.
//!
//! Otherwise the peer's IP address, from the [`TcpConnectInfo`] tonic puts in each
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
//! # Quotas per method
//!
//! [`RateLimitLayer::per_method`] gives a method (by its request path) a quota per
//! client of its own, counted instead of the default for calls to it. Paths are
//! chosen by peers, so only the paths the server owner listed get buckets; calls
//! to any other path count against the per-client default.
//!
//! # Across replicas: Redis
//!
//! Each replica enforcing a quota on its own lets a client spend it once per
//! replica. With the `redis` feature, `RateLimitLayer::shared_in` keeps the
//! buckets in Redis (`RedisStore`): one Lua script per check (GCRA, the same
//! algorithm, on Redis' clock), atomic and one round trip, keys under a prefix
//! that expire once full again. When Redis cannot be reached, each replica
//! falls back to this layer's local quotas — logged once per outage, counted in
//! the `tai_rate_limit_redis_fallbacks` metric — and returns to Redis by itself
//! once it answers; see `RedisStore` (both exist only with the feature).
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
//! [`global`](RateLimitLayer::global) quota to bound the total. Each method with
//! a quota of its own has such a table too.
//!
//! In Redis, a bucket expires when it is full again (at most the quota's burst
//! tolerance plus one interval after the client's last admitted call), so Redis
//! holds a key per client spending its quota right now, under the layer's
//! prefix.
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
//! `key.rs` names clients (who is a client, above), `method.rs` holds the
//! methods with quotas of their own, `store.rs` bounds the table of buckets,
//! `local.rs` checks the quotas in memory and `redis.rs` (with `gcra.lua`) in
//! Redis, `refusal.rs` turns a refusal into a status, and `layer.rs` holds the
//! layer, its service and its future.
//!
//! [`TcpConnectInfo`]: tonic::transport::server::TcpConnectInfo

mod key;
mod layer;
mod local;
mod method;
#[cfg(feature = "redis")]
mod redis;
mod refusal;
mod store;

pub use governor::Quota;
pub use governor::clock::{Clock, DefaultClock, FakeRelativeClock};
pub use key::{ClientKey, MAX_KEY_LEN};
pub use layer::{RateLimit, RateLimitLayer, ResponseFuture};
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_PREFIX, RedisStore};
pub use store::DEFAULT_MAX_CLIENTS;
