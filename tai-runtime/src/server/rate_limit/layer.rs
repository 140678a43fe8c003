//! The rate limit as a tower layer: [`RateLimitLayer`], the [`RateLimit`]
//! service and its [`ResponseFuture`].
//!
//! The layer is configuration plus one shared state (the [local](super::local)
//! quotas and, optionally, the [Redis](super::redis) store); every service it
//! wraps holds an `Arc` of that state, so clones count against the same buckets.
//! A call is decided before it reaches the service. Locally that takes no await:
//! the future is the service's own or a refusal that is ready at once, so an
//! admitted call costs no allocation here. With Redis the future first awaits the
//! check (boxed: it is a network round trip anyway) with a clone of the ready
//! service and the request, as tower-http's async authorization does; this is
//! why the service must be `Clone`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use http::HeaderName;
use pin_project_lite::pin_project;
use tonic::Status;
use tower::{Layer, Service};

use super::key::{ClientKey, KeyBy};
use super::local::Local;
use super::method::Methods;
#[cfg(feature = "redis")]
use super::redis::{Redis, RedisStore};
use super::refusal::{Refusal, Scope};
use super::store::DEFAULT_MAX_CLIENTS;

#[derive(Clone, Debug)]
struct Settings<C> {
    quota: Quota,
    methods: Methods,
    global: Option<Quota>,
    max_clients: usize,
    key_by: KeyBy,
    clock: C,
    #[cfg(feature = "redis")]
    redis: Option<Arc<Redis>>,
    /// Where refusals are counted (`tai_server_rate_limited_total`).
    metrics: crate::metrics::Metrics,
}

impl<C> Settings<C> {
    /// Counts a refused call and makes its status.
    fn refuse(&self, key: &ClientKey, refusal: Refusal) -> Status {
        let (quota, method) = match refusal.scope {
            Scope::Client { .. } => ("client", ""),
            Scope::Method { index, .. } => ("method", self.methods.path(index)),
            Scope::Global => ("global", ""),
        };
        self.metrics.rate_limited(quota, method).inc();
        refusal.into_status(key, self.max_clients, &self.methods)
    }
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
            .field("per_method", &s.methods)
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
            methods: Methods::default(),
            global: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            key_by: KeyBy::Peer,
            clock,
            #[cfg(feature = "redis")]
            redis: None,
            metrics: crate::metrics::Metrics::global().clone(),
        })
    }

    /// Gives the method at `path` (`/package.Service/Method`) its own quota per
    /// client, counted instead of the per-client default for calls to it. Only
    /// the paths listed here get buckets of their own; calls to any other path
    /// (made-up ones included) count against the default, so a peer cannot add
    /// entries by inventing paths.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use tai_runtime::server::rate_limit::{Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::per_client(Quota::per_second(NonZeroU32::new(100).unwrap()))
    ///     // An expensive method: 2 a second per client, on top of nothing else.
    ///     .per_method("/billing.v1.Billing/Export", Quota::per_second(NonZeroU32::new(2).unwrap()));
    /// # let _ = layer;
    /// ```
    pub fn per_method(self, path: &str, quota: Quota) -> Self {
        self.rebuild(|s| s.methods.set(path, quota))
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

    /// Keys clients by an authenticated identity that an earlier layer put in the
    /// request's extensions as a `T`, read by `identity` (e.g. a token's subject,
    /// else a certificate's SAN); requests without a `T`, or for which `identity`
    /// returns `None`, an empty value or one over
    /// [`MAX_KEY_LEN`](super::MAX_KEY_LEN) bytes, are keyed by their peer address.
    /// Refusals name the client as `identity "…"`.
    ///
    /// tai's own authentication puts a `server::auth::Identity` there; with any
    /// other authenticating layer, name its type:
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use tai_runtime::server::rate_limit::{Quota, RateLimitLayer};
    ///
    /// /// What your authentication layer inserts into each request's extensions.
    /// struct Caller {
    ///     subject: Option<String>,
    ///     certificate_sans: Vec<String>,
    /// }
    ///
    /// let layer = RateLimitLayer::per_client(Quota::per_second(NonZeroU32::new(10).unwrap()))
    ///     .key_by_extension(|caller: &Caller| {
    ///         caller.subject.as_deref().or(caller.certificate_sans.first().map(String::as_str))
    ///     });
    /// # let _ = layer;
    /// ```
    pub fn key_by_extension<T, F>(self, identity: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> Option<&str> + Send + Sync + 'static,
    {
        self.rebuild(|s| s.key_by = KeyBy::extension(identity))
    }

    /// Keeps the quotas in Redis, shared by every replica that names the same
    /// store and prefix; this layer's own quotas are what each replica falls back
    /// to while Redis is unreachable. See [`RedisStore`].
    #[cfg(feature = "redis")]
    pub fn shared_in(self, store: RedisStore) -> Self {
        let redis = Arc::new(Redis::new(store));
        self.rebuild(|s| s.redis = Some(redis))
    }

    /// Counts refused calls in `metrics` (`tai_server_rate_limited_total`, by the
    /// quota that refused them) instead of [`Metrics::global`](crate::metrics::Metrics::global).
    pub fn metrics(self, metrics: &crate::metrics::Metrics) -> Self {
        let metrics = metrics.clone();
        self.rebuild(|s| s.metrics = metrics)
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
        let local = Local::new(
            settings.quota,
            &settings.methods,
            settings.global,
            settings.max_clients,
            &settings.clock,
        );
        Self {
            shared: Arc::new(Shared {
                local,
                settings,
                warned_unknown: AtomicBool::new(false),
            }),
        }
    }
}

impl<C: Clock> RateLimitLayer<C> {
    /// Local buckets held now: clients with a bucket of their own, over the
    /// per-client table and each method's (each at most
    /// [`max_clients`](RateLimitLayer::max_clients)).
    pub fn tracked_clients(&self) -> usize {
        self.shared.local.len()
    }

    /// Forgets the clients whose state is no different from a fresh one. The
    /// layer does this by itself when its table is full; call it on a timer to
    /// give memory back sooner.
    pub fn retain_recent(&self) {
        self.shared.local.retain_recent();
    }

    /// Calls decided by the local quotas because Redis was unreachable, counted
    /// since start-up over every layer with the same Redis prefix (also the
    /// `tai_rate_limit_redis_fallbacks` metric); 0 without Redis.
    #[cfg(feature = "redis")]
    pub fn redis_fallbacks(&self) -> u64 {
        self.shared
            .settings
            .redis
            .as_ref()
            .map_or(0, |r| r.fallbacks())
    }

    /// Whether the quotas are being decided locally because Redis is unreachable.
    #[cfg(feature = "redis")]
    pub fn redis_is_down(&self) -> bool {
        self.shared
            .settings
            .redis
            .as_ref()
            .is_some_and(|r| r.is_down())
    }

    /// Counts one call from `key` against the local per-client default, as the
    /// service does for each request: `Err` is the RESOURCE_EXHAUSTED status a
    /// refused call gets. For benchmarks.
    #[doc(hidden)]
    pub fn check(&self, key: &ClientKey) -> Result<(), Status> {
        self.shared.check_local(key, None)
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
    local: Local<C>,
    settings: Settings<C>,
    warned_unknown: AtomicBool,
}

/// A boxed Redis check: the status of a refused call.
type Check = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// How a call is decided.
enum Decision {
    Admit,
    Refuse(Status),
    /// Redis decides, after a round trip.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Ask(Check),
}

impl<C: Clock> Shared<C> {
    fn key_of<B>(&self, request: http::Request<B>) -> (ClientKey, http::Request<B>) {
        self.settings.key_by.key_of(request, &self.warned_unknown)
    }

    fn check_local(&self, key: &ClientKey, method: Option<usize>) -> Result<(), Status> {
        self.local
            .check(key, method)
            .map_err(|refusal| self.settings.refuse(key, refusal))
    }
}

impl<C> Shared<C>
where
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn decide(self: &Arc<Self>, key: ClientKey, path: &str) -> Decision {
        let method = self.settings.methods.find(path);
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.settings.redis {
            if redis.should_ask() {
                return Decision::Ask(Box::pin(Arc::clone(self).ask_redis(
                    Arc::clone(redis),
                    key,
                    method,
                )));
            }
            redis.fell_back();
        }
        match self.check_local(&key, method) {
            Ok(()) => Decision::Admit,
            Err(status) => Decision::Refuse(status),
        }
    }

    #[cfg(feature = "redis")]
    async fn ask_redis(
        self: Arc<Self>,
        redis: Arc<Redis>,
        key: ClientKey,
        method: Option<usize>,
    ) -> Result<(), Status> {
        let s = &self.settings;
        let (quota, named) = match method {
            Some(i) => {
                let (path, quota) = s.methods.get(i);
                (quota, Some((i, path)))
            }
            None => (s.quota, None),
        };
        match redis.check(&key, named, quota, s.global).await {
            Ok(decided) => decided.map_err(|refusal| s.refuse(&key, refusal)),
            Err(()) => {
                redis.fell_back();
                self.check_local(&key, method)
            }
        }
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
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    ResBody: Default,
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, http::Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (key, request) = self.shared.key_of(request);
        let state = match self.shared.decide(key, request.uri().path()) {
            Decision::Admit => State::Admitted {
                future: self.inner.call(request),
            },
            Decision::Refuse(status) => State::Refused {
                status: Some(status),
            },
            Decision::Ask(check) => {
                // The ready service goes with the call; this one gets a clone,
                // which `poll_ready` readies before its next call.
                let clone = self.inner.clone();
                State::Checking {
                    check,
                    service: Some(std::mem::replace(&mut self.inner, clone)),
                    request: Some(request),
                }
            }
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The future of a [`RateLimit`] call: a Redis check then the service's
    /// call, the service's call at once, or a refusal that is ready at once.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R>
    where
        S: Service<R>,
    {
        Checking { check: Check, service: Option<S>, request: Option<R> },
        Admitted { #[pin] future: S::Future },
        Refused { status: Option<Status> },
    }
}

impl<S: Service<R>, R> fmt::Debug for ResponseFuture<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Checking { .. } => "Checking",
            State::Admitted { .. } => "Admitted",
            State::Refused { .. } => "Refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, R, B> Future for ResponseFuture<S, R>
where
    S: Service<R, Response = http::Response<B>>,
    B: Default,
{
    type Output = Result<http::Response<B>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Checking {
                    check,
                    service,
                    request,
                } => {
                    let decided = std::task::ready!(check.as_mut().poll(cx));
                    let next = match (decided, service.take(), request.take()) {
                        (Ok(()), Some(mut service), Some(request)) => State::Admitted {
                            future: service.call(request),
                        },
                        (Err(status), ..) => State::Refused {
                            status: Some(status),
                        },
                        _ => State::Refused { status: None },
                    };
                    state.set(next);
                }
                StateProj::Admitted { future } => return future.poll(cx),
                StateProj::Refused { status } => {
                    let status = status.take().unwrap_or_else(|| {
                        Status::internal("rate limit: response polled after completion")
                    });
                    // Trailers-only: HTTP 200, `grpc-status` and the pushback in headers.
                    return Poll::Ready(Ok(status.into_http()));
                }
            }
        }
    }
}
