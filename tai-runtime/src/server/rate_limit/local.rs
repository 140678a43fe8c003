//! The quotas of one replica, in its own memory: governor's GCRA, one atomic word
//! per client and quota, no timers, no background task.
//!
//! One keyed limiter (over a bounded [store](super::store)) for the per-client
//! default, one per method with a quota of its own, and an optional unkeyed one
//! for all clients together. A call is counted against its client's quota first
//! (its method's, if it has one), then against the global one, so calls a client
//! is refused cost the other clients nothing. These are also the quotas a
//! [Redis](super::RedisStore)-backed layer falls back to while Redis is away.

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};

use super::key::ClientKey;
use super::method::Methods;
use super::refusal::{Refusal, Scope};
use super::store::ClientStore;

type Keyed<C> = RateLimiter<ClientKey, ClientStore<C>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One quota per client: the limiter and its store (to tell tracked clients from
/// the shared overflow bucket).
struct PerClient<C: Clock> {
    limiter: Keyed<C>,
    store: ClientStore<C>,
}

impl<C: Clock + Clone> PerClient<C> {
    fn new(quota: Quota, max_clients: usize, clock: &C) -> Self {
        let store = ClientStore::new(quota, max_clients, clock.clone());
        Self {
            limiter: RateLimiter::new(quota, store.clone(), clock.clone()),
            store,
        }
    }
}

/// Every local quota of one layer.
pub(super) struct Local<C: Clock> {
    clients: PerClient<C>,
    methods: Box<[PerClient<C>]>,
    global: Option<Direct<C>>,
    clock: C,
}

impl<C: Clock + Clone> Local<C> {
    pub(super) fn new(
        quota: Quota,
        methods: &Methods,
        global: Option<Quota>,
        max_clients: usize,
        clock: &C,
    ) -> Self {
        Self {
            clients: PerClient::new(quota, max_clients, clock),
            methods: methods
                .iter()
                .map(|(_, quota)| PerClient::new(quota, max_clients, clock))
                .collect(),
            global: global.map(|q| RateLimiter::direct_with_clock(q, clock.clone())),
            clock: clock.clone(),
        }
    }
}

impl<C: Clock> Local<C> {
    /// Counts one call from `key` to `method` (an index into the layer's
    /// [`Methods`], `None` for the per-client default).
    pub(super) fn check(&self, key: &ClientKey, method: Option<usize>) -> Result<(), Refusal> {
        let per_client = match method {
            Some(i) => &self.methods[i],
            None => &self.clients,
        };
        if let Err(refused) = per_client.limiter.check_key(key) {
            let shared = !per_client.store.is_tracked(key);
            let scope = match method {
                Some(index) => Scope::Method { index, shared },
                None => Scope::Client { shared },
            };
            return Err(self.refusal(scope, &refused));
        }
        if let Some(global) = &self.global
            && let Err(refused) = global.check()
        {
            return Err(self.refusal(Scope::Global, &refused));
        }
        Ok(())
    }

    #[cold]
    fn refusal(&self, scope: Scope, refused: &NotUntil<C::Instant>) -> Refusal {
        Refusal {
            scope,
            quota: refused.quota(),
            wait: refused.wait_time_from(self.clock.now()),
        }
    }

    /// Buckets held, over the per-client and per-method tables.
    pub(super) fn len(&self) -> usize {
        self.clients.limiter.len() + self.methods.iter().map(|m| m.limiter.len()).sum::<usize>()
    }

    /// Forgets the buckets no different from a fresh one, in every table.
    pub(super) fn retain_recent(&self) {
        self.clients.limiter.retain_recent();
        for method in &self.methods {
            method.limiter.retain_recent();
        }
    }
}
