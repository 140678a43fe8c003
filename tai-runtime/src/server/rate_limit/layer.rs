//! The rate limit as a tower layer: [`RateLimitLayer`], the [`RateLimit`]
//! service and its [`ResponseFuture`].
//!
//! The layer is configuration plus one shared state (the keyed limiter over the
//! [store](super::store), the optional global limiter); every service it wraps
//! holds an `Arc` of that state, so clones count against the same buckets. A call
//! is decided before it reaches the service: the future is either the service's
//! own or a refusal that is ready at once, a two-state enum rather than a box, so
//! an admitted call costs no allocation here.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use http::HeaderName;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tower::{Layer, Service};

use super::key::{ClientKey, KeyBy};
use super::store::{ClientStore, DEFAULT_MAX_CLIENTS};

pub use crate::server::decided::ResponseFuture;
use crate::wire::GRPC_RETRY_PUSHBACK_MS as PUSHBACK;

#[derive(Clone, Debug)]
struct Settings<C> {
    quota: Quota,
    global: Option<Quota>,
    max_clients: usize,
    key_by: KeyBy,
    clock: C,
}

/// Adds per-client (and optionally global) rate limiting to a tonic server; see
/// the [module docs](super).
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
    /// [`FakeRelativeClock`](super::FakeRelativeClock) in tests (its clones share one time).
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
    /// [module docs](super#bounded-memory)). `0` makes every client share it.
    pub fn max_clients(self, max: usize) -> Self {
        self.rebuild(|s| s.max_clients = max)
    }

    /// Keys clients by the value of request header `name` (gRPC metadata, e.g.
    /// `x-client-id`); calls without it, or with an empty value or one over
    /// [`MAX_KEY_LEN`](super::MAX_KEY_LEN) bytes, are keyed by their peer address.
    pub fn key_by_header(self, name: HeaderName) -> Self {
        self.rebuild(|s| s.key_by = KeyBy::Header(name))
    }

    /// Keys clients with `key`, given the request's method, URI, headers and
    /// extensions; where it returns `None`, by the peer address.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use tai_runtime::server::rate_limit::{ClientKey, Quota, RateLimitLayer};
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
        let store = ClientStore::new(settings.quota, settings.max_clients, settings.clock.clone());
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
        self.settings.key_by.key_of(request, &self.warned_unknown)
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
            Scope::Client if self.store.is_tracked(key) => format!(
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
        match self.shared.check(&key) {
            Ok(()) => ResponseFuture::admitted(self.inner.call(request)),
            Err(status) => ResponseFuture::refused(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

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
}
