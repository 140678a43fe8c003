//! Quotas shared by every replica of a service, kept in Redis.
//!
//! A quota enforced by each replica on its own multiplies with the replica count.
//! [`RedisStore`] keeps the buckets in Redis instead — the store people already
//! run for this — so the replicas share them. Each check is one round trip: one
//! Lua script (GCRA, the same algorithm as the local quotas; `gcra.lua`), loaded
//! once and run with `EVALSHA`, checking the client's bucket and the global one
//! atomically, on Redis' clock (`TIME`), so replicas with skewed clocks agree.
//! Buckets are keys under a prefix that expire when they are full again, so Redis
//! memory holds only the clients spending their quota right now.
//!
//! When Redis cannot be reached (an error, or no answer within the
//! [timeout](RedisStore::timeout)), the call is decided by the layer's local
//! quotas instead: each replica then enforces the quotas on its own (the total
//! can reach replicas × quota, as without Redis). The outage is logged once (a
//! warning, and an info line when it ends), each call decided locally counts in
//! `tai_rate_limit_redis_fallbacks`, and while Redis is away only one call per
//! [`retry_every`](RedisStore::retry_every) tries it, so the others wait for
//! nothing. The first call that gets an answer ends the outage: the limiter
//! recovers by itself. (The connection is redis' `ConnectionManager`, which
//! reconnects on its own.)

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use governor::Quota;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::key::ClientKey;
use super::refusal::{Refusal, Scope};
use crate::sync::lock;

/// The key prefix of a [`RedisStore`] unless set: `tai:rate_limit`.
pub const DEFAULT_REDIS_PREFIX: &str = "tai:rate_limit";

/// The GCRA check, one script for one or two buckets (see `gcra.lua`).
static GCRA: &str = include_str!("gcra.lua");

/// Where a [`RateLimitLayer`](super::RateLimitLayer) keeps its quotas so that
/// every replica of a service shares them (see the
/// [module docs](super#across-replicas-redis)).
///
/// Each check is one round trip: one Lua script (GCRA, as the local quotas),
/// loaded once and run with `EVALSHA`, checking the client's bucket (or its
/// method's) and the global one atomically on Redis' clock (`TIME`), so replicas
/// with skewed clocks agree. Buckets are keys under the [prefix](Self::prefix)
/// that expire once full again. A single Redis (or a primary with replicas), not
/// Redis Cluster: the two buckets of a check are not in one hash slot.
///
/// When Redis cannot be reached (an error, or no answer within the
/// [timeout](RedisStore::timeout)), the call is decided by the layer's local
/// quotas: each replica then enforces them on its own, starting from full
/// buckets, so the total can reach replicas × quota as without Redis. The outage
/// is logged once (a warning, and an info line when it ends), every call decided
/// locally counts in the `tai_rate_limit_redis_fallbacks` metric (and
/// [`RateLimitLayer::redis_fallbacks`](super::RateLimitLayer::redis_fallbacks)),
/// and while Redis is away one call per [`retry_every`](RedisStore::retry_every)
/// tries it, the others waiting for nothing. The first answer ends the outage.
///
/// ```no_run
/// # fn run() -> Result<(), redis::RedisError> {
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use tai_runtime::server::rate_limit::{Quota, RateLimitLayer, RedisStore};
///
/// const PER_CLIENT: Quota = Quota::per_second(NonZeroU32::new(50).unwrap());
/// // Every replica of the billing service names the same Redis and prefix.
/// let redis = RedisStore::open("redis://redis.internal:6379/")?
///     .prefix("billing:rate_limit")
///     .timeout(Duration::from_millis(20));
/// let layer = RateLimitLayer::per_client(PER_CLIENT).shared_in(redis);
/// # let _ = layer; Ok(()) }
/// ```
pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    retry_every: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.client.get_connection_info().addr())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("retry_every", &self.retry_every)
            .finish()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://host:port/db`, see
    /// [`redis::Client::open`]). Nothing connects until the first call: a server
    /// starts while Redis is away, on its local quotas.
    pub fn open(url: &str) -> Result<Self, redis::RedisError> {
        redis::Client::open(url).map(Self::new)
    }

    /// A store on the Redis `client` names.
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            timeout: Duration::from_millis(50),
            retry_every: Duration::from_secs(1),
        }
    }

    /// The prefix of every key (default [`DEFAULT_REDIS_PREFIX`]): replicas that
    /// share quotas use the same one, services that do not, different ones.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a check waits for Redis before the call is decided locally
    /// (default 50 ms). Also the connection and response timeout of the
    /// connection.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// While Redis is away, one call per `interval` tries it again (default 1 s);
    /// the others are decided locally at once.
    pub fn retry_every(mut self, interval: Duration) -> Self {
        self.retry_every = interval;
        self
    }
}

/// A [`RedisStore`] in use by one layer.
pub(super) struct Redis {
    store: RedisStore,
    /// Made on first use, inside the runtime (the manager spawns a task).
    manager: OnceLock<Result<ConnectionManager, String>>,
    script: redis::Script,
    down: AtomicBool,
    next_probe: std::sync::Mutex<Instant>,
    fallbacks: Counter,
}

/// A bucket in Redis: its key and its quota, as the script takes them.
struct Bucket {
    key: Vec<u8>,
    t_us: u64,
    tau_us: u64,
}

impl Bucket {
    fn new(key: Vec<u8>, quota: Quota) -> Self {
        // Rounded up: never more generous than the quota.
        let t_us = u64::try_from(quota.replenish_interval().as_nanos().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            key,
            t_us,
            tau_us: t_us.saturating_mul(u64::from(quota.burst_size().get() - 1)),
        }
    }
}

impl Redis {
    pub(super) fn new(store: RedisStore) -> Self {
        let fallbacks = crate::metrics::Metrics::global().rate_limit_redis_fallbacks(&store.prefix);
        Self {
            store,
            manager: OnceLock::new(),
            script: redis::Script::new(GCRA),
            down: AtomicBool::new(false),
            next_probe: std::sync::Mutex::new(Instant::now()),
            fallbacks,
        }
    }

    /// Whether this call should ask Redis: always, unless Redis is away; then
    /// one call per `retry_every`.
    pub(super) fn should_ask(&self) -> bool {
        if !self.down.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        let mut next = lock(&self.next_probe);
        if now < *next {
            return false;
        }
        *next = now + self.store.retry_every;
        true
    }

    /// Counts a call decided locally because Redis is away.
    pub(super) fn fell_back(&self) {
        self.fallbacks.inc();
    }

    /// Calls decided locally because Redis was away, since the layer was built
    /// (shared by layers with the same prefix).
    pub(super) fn fallbacks(&self) -> u64 {
        self.fallbacks.get()
    }

    /// Whether Redis is away (calls are decided locally).
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn manager(&self) -> Result<ConnectionManager, String> {
        self.manager
            .get_or_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.store.timeout))
                    .set_response_timeout(Some(self.store.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(self.store.timeout);
                ConnectionManager::new_lazy_with_config(self.store.client.clone(), config)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Counts one call from `key` in Redis: against `quota` (the client's, or
    /// its method's when `method` is set, named by its path) and `global`. `Err`
    /// when Redis did not answer; the outage is then logged (once) and counted.
    pub(super) async fn check(
        &self,
        key: &ClientKey,
        method: Option<(usize, &str)>,
        quota: Quota,
        global: Option<Quota>,
    ) -> Result<Result<(), Refusal>, ()> {
        let mut client_key = Vec::with_capacity(self.store.prefix.len() + 64);
        client_key.extend_from_slice(self.store.prefix.as_bytes());
        match method {
            Some((_, path)) => {
                client_key.extend_from_slice(b":method:");
                client_key.extend_from_slice(path.as_bytes());
                client_key.push(b':');
            }
            None => client_key.extend_from_slice(b":client:"),
        }
        key.write_redis_key(&mut client_key);
        let mut buckets = vec![Bucket::new(client_key, quota)];
        if let Some(global) = global {
            let key = format!("{}:global", self.store.prefix).into_bytes();
            buckets.push(Bucket::new(key, global));
        }
        match self.run(&buckets).await {
            Ok((0, _)) => {
                self.up();
                Ok(Ok(()))
            }
            Ok((refused_by, wait_us)) => {
                self.up();
                let scope = match (refused_by, method) {
                    (1, Some((index, _))) => Scope::Method {
                        index,
                        shared: false,
                    },
                    (1, None) => Scope::Client { shared: false },
                    _ => Scope::Global,
                };
                let quota = if scope == Scope::Global {
                    global.unwrap_or(quota)
                } else {
                    quota
                };
                Ok(Err(Refusal {
                    scope,
                    quota,
                    wait: Duration::from_micros(wait_us),
                }))
            }
            Err(error) => {
                self.away(&error);
                Err(())
            }
        }
    }

    async fn run(&self, buckets: &[Bucket]) -> Result<(u64, u64), String> {
        let mut manager = self.manager()?;
        let mut invocation = self.script.prepare_invoke();
        for bucket in buckets {
            invocation.key(&bucket.key[..]);
        }
        for bucket in buckets {
            invocation.arg(bucket.t_us).arg(bucket.tau_us);
        }
        match tokio::time::timeout(self.store.timeout, invocation.invoke_async(&mut manager)).await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.store.timeout)),
        }
    }

    fn up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(
                prefix = %self.store.prefix,
                "rate limit: Redis answers again; quotas are shared by the replicas again"
            );
        }
    }

    #[cold]
    fn away(&self, error: &str) {
        *lock(&self.next_probe) = Instant::now() + self.store.retry_every;
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                prefix = %self.store.prefix,
                %error,
                "rate limit: Redis unreachable; each replica enforces the quotas on its own \
                 until it is back (counted in tai_rate_limit_redis_fallbacks)"
            );
        }
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("store", &self.store)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}
