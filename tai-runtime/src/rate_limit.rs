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
//! use tai_runtime::rate_limit::{Quota, RateLimitLayer};
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
//! outside this layer (add it first): its `server_calls` metric then counts the
//! refusals as RESOURCE_EXHAUSTED.
//!
//! # Time
//!
//! The layer reads governor's clock ([`DefaultClock`]), not tokio's. Tests can
//! build it with [`RateLimitLayer::with_clock`] and a [`FakeRelativeClock`], and
//! move time forward by hand.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Reference;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, RateLimiter};
use http::HeaderName;
use pin_project_lite::pin_project;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use crate::sync::lock;

pub use governor::Quota;
pub use governor::clock::{Clock, DefaultClock, FakeRelativeClock};

/// Clients tracked by default, each with its own bucket (a few dozen bytes, plus
/// the id for header keys).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// The longest client key taken from a header, in bytes.
pub const MAX_KEY_LEN: usize = 128;

const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Bounds on how often a full table of clients is swept for stale ones.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Who a call is counted against.
///
/// Built by the layer's key extractor, or by your own with [`ClientKey::peer`],
/// [`ClientKey::ip`] or [`ClientKey::id`]. Displays as a person would name it
/// (`peer 10.0.0.7`, `client id "billing"`), which is how refusals name it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Ip(IpAddr),
    /// An IPv6 address with its last 64 bits cleared.
    Ipv6Net(Ipv6Addr),
    Id(Box<[u8]>),
    Unknown,
}

impl ClientKey {
    /// The key the layer gives a peer address: an IPv4 address as it is, an IPv6
    /// address by its /64 network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn peer(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V6(v6) => Self(Repr::Ipv6Net(Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            ))),
            v4 => Self(Repr::Ip(v4)),
        }
    }

    /// One IP address, whole (no /64 grouping for IPv6).
    pub fn ip(addr: IpAddr) -> Self {
        Self(Repr::Ip(addr.to_canonical()))
    }

    /// A client id (e.g. a header value): `None` if empty or longer than
    /// [`MAX_KEY_LEN`] bytes.
    pub fn id(id: &[u8]) -> Option<Self> {
        (!id.is_empty() && id.len() <= MAX_KEY_LEN).then(|| Self(Repr::Id(id.into())))
    }

    /// The one key shared by every request nothing else identifies.
    pub fn unknown() -> Self {
        Self(Repr::Unknown)
    }
}

/// One short write per key: the table's hasher (SipHash, keyed per process, since
/// keys come from peers) costs by the byte.
impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.0 {
            Repr::Ip(IpAddr::V4(a)) => state.write_u64(1 << 32 | u64::from(a.to_bits())),
            Repr::Ip(IpAddr::V6(a)) => state.write_u128(a.to_bits()),
            Repr::Ipv6Net(a) => state.write_u64((a.to_bits() >> 64) as u64),
            Repr::Id(id) => state.write(id),
            Repr::Unknown => state.write_u8(0),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Ip(a) => write!(f, "peer {a}"),
            Repr::Ipv6Net(a) => write!(f, "peer network {a}/64"),
            Repr::Id(id) => write!(f, "client id \"{}\"", id.escape_ascii()),
            Repr::Unknown => f.write_str("peers without an address"),
        }
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({self})")
    }
}

type KeyFn = dyn Fn(&http::request::Parts) -> Option<ClientKey> + Send + Sync;

#[derive(Clone)]
enum KeyBy {
    Peer,
    Header(HeaderName),
    Custom(Arc<KeyFn>),
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBy::Peer => f.write_str("Peer"),
            KeyBy::Header(name) => f.debug_tuple("Header").field(name).finish(),
            KeyBy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[derive(Clone, Debug)]
struct Settings<C> {
    quota: Quota,
    global: Option<Quota>,
    max_clients: usize,
    key_by: KeyBy,
    clock: C,
}

/// Adds per-client (and optionally global) rate limiting to a tonic server; see
/// the [module docs](self).
///
/// Clones, and every service the layer wraps, share one set of buckets. Configure
/// it before use: each builder method returns a layer with new, empty buckets.
pub struct RateLimitLayer<C: Clock = DefaultClock> {
    shared: Arc<Shared<C>>,
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared.settings;
        f.debug_struct("RateLimitLayer")
            .field("per_client", &s.quota)
            .field("global", &s.global)
            .field("max_clients", &s.max_clients)
            .field("key_by", &s.key_by)
            .field("tracked_clients", &self.tracked_clients())
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer<DefaultClock> {
    /// Limits each client (by default: each peer address) to `quota`.
    pub fn per_client(quota: Quota) -> Self {
        Self::with_clock(quota, DefaultClock::default())
    }
}

impl<C> RateLimitLayer<C>
where
    C: Clock + Clone,
{
    /// [`per_client`](RateLimitLayer::per_client) with another clock, e.g. a
    /// [`FakeRelativeClock`] in tests (its clones share one time).
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        Self::from_settings(Settings {
            quota,
            global: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            key_by: KeyBy::Peer,
            clock,
        })
    }

    /// Also limits all clients together to `quota`. Checked after the client's
    /// own quota, so a client's refused calls cost the others nothing.
    pub fn global(self, quota: Quota) -> Self {
        self.rebuild(|s| s.global = Some(quota))
    }

    /// At most `max` clients get their own bucket (default
    /// [`DEFAULT_MAX_CLIENTS`]); further new clients share one (see the
    /// [module docs](self#bounded-memory)). `0` makes every client share it.
    pub fn max_clients(self, max: usize) -> Self {
        self.rebuild(|s| s.max_clients = max)
    }

    /// Keys clients by the value of request header `name` (gRPC metadata, e.g.
    /// `x-client-id`); calls without it, or with an empty value or one over
    /// [`MAX_KEY_LEN`] bytes, are keyed by their peer address.
    pub fn key_by_header(self, name: HeaderName) -> Self {
        self.rebuild(|s| s.key_by = KeyBy::Header(name))
    }

    /// Keys clients with `key`, given the request's method, URI, headers and
    /// extensions; where it returns `None`, by the peer address.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use tai_runtime::rate_limit::{ClientKey, Quota, RateLimitLayer};
    ///
    /// // Per client and per method: the method is part of the key.
    /// let layer = RateLimitLayer::per_client(Quota::per_second(NonZeroU32::new(10).unwrap()))
    ///     .key_by(|request| {
    ///         let client = request.headers.get("x-client-id")?.as_bytes();
    ///         ClientKey::id(&[client, request.uri.path().as_bytes()].join(&b' '))
    ///     });
    /// # let _ = layer;
    /// ```
    pub fn key_by<F>(self, key: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<ClientKey> + Send + Sync + 'static,
    {
        self.rebuild(|s| s.key_by = KeyBy::Custom(Arc::new(key)))
    }

    fn rebuild(self, change: impl FnOnce(&mut Settings<C>)) -> Self {
        let mut settings = self.shared.settings.clone();
        change(&mut settings);
        Self::from_settings(settings)
    }

    fn from_settings(settings: Settings<C>) -> Self {
        let store = ClientStore(Arc::new(StoreInner::new(
            settings.quota,
            settings.max_clients,
            settings.clock.clone(),
        )));
        let clients = RateLimiter::new(settings.quota, store.clone(), settings.clock.clone());
        let global = settings
            .global
            .map(|q| RateLimiter::direct_with_clock(q, settings.clock.clone()));
        Self {
            shared: Arc::new(Shared {
                clients,
                store,
                global,
                settings,
                warned_unknown: AtomicBool::new(false),
            }),
        }
    }
}

impl<C: Clock> RateLimitLayer<C> {
    /// Clients with a bucket of their own now (at most the
    /// [`max_clients`](RateLimitLayer::max_clients)).
    pub fn tracked_clients(&self) -> usize {
        self.shared.clients.len()
    }

    /// Forgets the clients whose state is no different from a fresh one. The
    /// layer does this by itself when its table is full; call it on a timer to
    /// give memory back sooner.
    pub fn retain_recent(&self) {
        self.shared.clients.retain_recent();
    }

    /// Counts one call from `key`, as the service does for each request: `Err` is
    /// the RESOURCE_EXHAUSTED status a refused call gets. For benchmarks.
    #[doc(hidden)]
    pub fn check(&self, key: &ClientKey) -> Result<(), Status> {
        self.shared.check(key)
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> RateLimit<S, C> {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<C: Clock> {
    clients: RateLimiter<ClientKey, ClientStore<C>, C, NoOpMiddleware<C::Instant>>,
    /// The same store `clients` holds, to tell tracked clients from the overflow.
    store: ClientStore<C>,
    global: Option<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
    settings: Settings<C>,
    warned_unknown: AtomicBool,
}

/// Which quota refused a call.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Client,
    Global,
}

impl<C: Clock> Shared<C> {
    fn key_of<B>(&self, request: http::Request<B>) -> (ClientKey, http::Request<B>) {
        let (key, request) = match &self.settings.key_by {
            KeyBy::Peer => (None, request),
            KeyBy::Header(name) => (
                request
                    .headers()
                    .get(name)
                    .and_then(|v| ClientKey::id(v.as_bytes())),
                request,
            ),
            KeyBy::Custom(key) => {
                let (parts, body) = request.into_parts();
                (key(&parts), http::Request::from_parts(parts, body))
            }
        };
        let key = key.unwrap_or_else(|| self.peer_key(request.extensions()));
        (key, request)
    }

    fn peer_key(&self, extensions: &http::Extensions) -> ClientKey {
        match extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
        {
            Some(addr) => ClientKey::peer(addr.ip()),
            None => {
                if !self.warned_unknown.load(Ordering::Relaxed)
                    && !self.warned_unknown.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        "rate limit: a request without a TCP peer address; such requests \
                         share one bucket (use RateLimitLayer::key_by to identify them)"
                    );
                }
                ClientKey::unknown()
            }
        }
    }

    fn check(&self, key: &ClientKey) -> Result<(), Status> {
        if let Err(refused) = self.clients.check_key(key) {
            return Err(self.refuse(key, Scope::Client, &refused));
        }
        if let Some(global) = &self.global
            && let Err(refused) = global.check()
        {
            return Err(self.refuse(key, Scope::Global, &refused));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn refuse(&self, key: &ClientKey, scope: Scope, refused: &NotUntil<C::Instant>) -> Status {
        let wait = refused.wait_time_from(self.settings.clock.now());
        // Rounded up, and at least 1: a client that comes back on time is admitted.
        let retry_ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        let quota = QuotaText(refused.quota());
        let message = match scope {
            Scope::Client if self.store.0.is_tracked(key) => format!(
                "rate limit exceeded for {key}: the limit is {quota} per client; \
                 retry in {retry_ms} ms"
            ),
            Scope::Client => format!(
                "rate limit exceeded for {key}: this server tracks at most {} clients and \
                 is full, so {key} shares one limit of {quota} with every other client it \
                 does not track; retry in {retry_ms} ms",
                self.settings.max_clients
            ),
            Scope::Global => format!(
                "the server is over its rate limit for all clients together ({quota}); \
                 retry in {retry_ms} ms"
            ),
        };
        tracing::debug!(client = %key, ?scope, retry_ms, "rate limit: call refused");
        let mut status = Status::resource_exhausted(message);
        status
            .metadata_mut()
            .insert(PUSHBACK, AsciiMetadataValue::from(retry_ms));
        status
    }
}

/// A quota as a person reads it: `10 calls/s in bursts of up to 20`.
struct QuotaText(Quota);

impl fmt::Display for QuotaText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_second = 1e9 / (self.0.replenish_interval().as_nanos().max(1) as f64);
        let (rate, unit) = if per_second >= 1.0 {
            (per_second, "s")
        } else if per_second * 60.0 >= 1.0 {
            (per_second * 60.0, "min")
        } else {
            (per_second * 3600.0, "h")
        };
        let burst = self.0.burst_size();
        if (rate - rate.round()).abs() < 0.005 {
            write!(f, "{rate:.0}")?;
        } else {
            write!(f, "{rate:.2}")?;
        }
        let calls = |n: bool| if n { "call" } else { "calls" };
        write!(
            f,
            " {}/{unit} in bursts of up to {burst} {}",
            calls((rate - 1.0).abs() < 0.005),
            calls(burst.get() == 1)
        )
    }
}

/// The table of clients: governor's DashMap store, bounded (see the module docs).
///
/// Lookups of known clients take one shard read lock, as governor's own store
/// does; only new clients take `inserts`, which also serialises every insert and
/// sweep, so `len` is exact and the table never exceeds `max`.
struct StoreInner<C: Clock> {
    map: DashMapStateStore<ClientKey>,
    overflow: InMemoryState,
    max: usize,
    inserts: Mutex<Inserts>,
    clock: C,
    /// Taken just before the rate limiter takes its own start, so "now" measured
    /// from here is at most a few nanoseconds later than the limiter's.
    start: C::Instant,
    t: Nanos,
    sweep_every: Nanos,
}

struct Inserts {
    len: usize,
    last_sweep: Option<Nanos>,
}

impl<C: Clock> StoreInner<C> {
    fn new(quota: Quota, max: usize, clock: C) -> Self {
        let t = quota.replenish_interval().max(Duration::from_nanos(1));
        Self {
            map: DashMapStateStore::default(),
            overflow: InMemoryState::default(),
            max,
            inserts: Mutex::new(Inserts {
                len: 0,
                last_sweep: None,
            }),
            start: clock.now(),
            clock,
            t: t.into(),
            sweep_every: t.clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL).into(),
        }
    }

    fn is_tracked(&self, key: &ClientKey) -> bool {
        self.map.contains_key(key)
    }

    #[cold]
    #[inline(never)]
    fn measure_new<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut inserts = lock(&self.inserts);
        // Another call may have inserted it since the lookup.
        if !self.map.contains_key(key) {
            if inserts.len >= self.max {
                self.sweep_if_due(&mut inserts);
            }
            if inserts.len >= self.max {
                return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
            }
            self.map.insert(key.clone(), InMemoryState::default());
            inserts.len += 1;
        }
        // Measured under the lock: no sweep can drop the new entry meanwhile.
        match self.map.get(key) {
            Some(state) => state.measure_and_replace(&NotKeyed::NonKey, f),
            None => self.overflow.measure_and_replace(&NotKeyed::NonKey, f),
        }
    }

    fn sweep_if_due(&self, inserts: &mut Inserts) {
        let now = self.clock.now().duration_since(self.start);
        if let Some(last) = inserts.last_sweep
            && now.saturating_sub(last) < self.sweep_every
        {
            return;
        }
        inserts.last_sweep = Some(now);
        // governor's `retain_recent` rule: what is older than one interval ago is
        // indistinguishable from a fresh state.
        self.sweep(now.saturating_sub(self.t), inserts);
    }

    fn sweep(&self, drop_below: Nanos, inserts: &mut Inserts) {
        self.map.retain(|_, state| {
            // `InMemoryState` keeps its word private; a decision that refuses hands
            // back the stored theoretical arrival time without changing it.
            let tat = state.measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>);
            matches!(tat, Err(Some(tat)) if tat > drop_below)
        });
        inserts.len = self.map.len();
        tracing::debug!(
            tracked = inserts.len,
            max = self.max,
            "rate limit: dropped stale clients"
        );
    }
}

/// [`StoreInner`] behind an `Arc`, so the layer can ask it questions governor's
/// `RateLimiter` does not pass on.
struct ClientStore<C: Clock>(Arc<StoreInner<C>>);

impl<C: Clock> Clone for ClientStore<C> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<C: Clock> fmt::Debug for ClientStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStore")
            .field("len", &self.0.map.len())
            .field("max", &self.0.max)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> StateStore for ClientStore<C> {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.0.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.0.measure_new(key, f)
    }
}

impl<C: Clock> ShrinkableKeyedStateStore<ClientKey> for ClientStore<C> {
    fn retain_recent(&self, drop_below: Nanos) {
        let mut inserts = lock(&self.0.inserts);
        self.0.sweep(drop_below, &mut inserts);
    }

    fn shrink_to_fit(&self) {
        let _inserts = lock(&self.0.inserts);
        self.0.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.map.len()
    }

    fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }
}

/// The service [`RateLimitLayer`] wraps around a server.
pub struct RateLimit<S, C: Clock = DefaultClock> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C: Clock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C: Clock> fmt::Debug for RateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, ReqBody, ResBody> Service<http::Request<ReqBody>> for RateLimit<S, C>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
    C: Clock,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (key, request) = self.shared.key_of(request);
        let state = match self.shared.check(&key) {
            Ok(()) => State::Admitted {
                future: self.inner.call(request),
            },
            Err(status) => State::Refused {
                status: Some(status),
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The future of a [`RateLimit`] call: the service's own, or a refusal that is
    /// ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Admitted { #[pin] future: F },
        Refused { status: Option<Status> },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Admitted { .. } => "Admitted",
            State::Refused { .. } => "Refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { future } => future.poll(cx),
            StateProj::Refused { status } => {
                let status = status.take().unwrap_or_else(|| {
                    Status::internal("rate limit: response polled after completion")
                });
                // Trailers-only: HTTP 200, `grpc-status` and the pushback in headers.
                Poll::Ready(Ok(status.into_http()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn quota_text() {
        let text = |q: Quota| QuotaText(q).to_string();
        assert_eq!(
            text(Quota::per_second(nz(10)).allow_burst(nz(20))),
            "10 calls/s in bursts of up to 20 calls"
        );
        assert_eq!(
            text(Quota::per_second(nz(1))),
            "1 call/s in bursts of up to 1 call"
        );
        assert_eq!(
            text(Quota::per_minute(nz(30))),
            "30 calls/min in bursts of up to 30 calls"
        );
        assert_eq!(
            text(Quota::per_hour(nz(2))),
            "2 calls/h in bursts of up to 2 calls"
        );
        assert_eq!(
            text(Quota::with_period(Duration::from_millis(1500)).unwrap()),
            "40 calls/min in bursts of up to 1 call"
        );
    }

    #[test]
    fn keys_display_and_group() {
        let v6 = |s: &str| ClientKey::peer(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:bbbb::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(
            v6("2001:db8:1:2:aaaa::1").to_string(),
            "peer network 2001:db8:1:2::/64"
        );
        assert_eq!(v6("::ffff:10.0.0.7").to_string(), "peer 10.0.0.7");
        assert_eq!(
            ClientKey::id(b"a\"b\xff").unwrap().to_string(),
            r#"client id "a\"b\xff""#
        );
        assert!(ClientKey::id(b"").is_none());
        assert!(ClientKey::id(&[b'x'; MAX_KEY_LEN]).is_some());
        assert!(ClientKey::id(&[b'x'; MAX_KEY_LEN + 1]).is_none());
    }
}
