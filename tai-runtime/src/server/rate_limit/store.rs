//! The bounded table of per-client buckets the rate limit keeps.
//!
//! governor's keyed store (a DashMap) grows with every key it sees, and keys come
//! from peers; this store wraps it with a bound. Known clients are looked up as in
//! governor's own store (one shard read lock); only a new client takes the
//! `inserts` lock, where the table is swept for stale clients when full (at most
//! once per replenish interval, clamped, so a flood of new keys cannot make every
//! call sweep), and where a client that still does not fit is sent to one shared
//! overflow bucket. Known clients keep their own buckets, so such a flood cannot
//! take their share.
//!
//! An entry is 24 bytes, whatever the key: the table holds a [`Digest`] of the
//! key (128 bits of SipHash under a secret seed drawn once per table) and GCRA's
//! one word, the theoretical arrival time in nanoseconds since the limiter's
//! start. Storing the keys themselves (up to [`MAX_KEY_LEN`](super::MAX_KEY_LEN)
//! bytes each, on the heap) cost about 112 MiB per million clients; digests cost
//! about 50. Two clients share a bucket only if their digests collide, which a
//! peer cannot aim at without the seed, and which by chance is a 2^-89 event
//! among a million clients.

use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};

use super::key::ClientKey;
use crate::sync::lock;

/// Clients tracked by default, each with its own bucket (about 50 bytes of table
/// per client).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// Bounds on how often a full table of clients is swept for stale ones.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The table of clients: governor's DashMap store, bounded (see the module docs).
///
/// Lookups of known clients take one shard read lock, as governor's own store
/// does; only new clients take `inserts`, which also serialises every insert and
/// sweep, so `len` is exact and the table never exceeds `max`.
struct StoreInner<C: Clock> {
    map: DashMapStateStore<Digest, BuildHasherDefault<DigestHasher>>,
    /// The secret the table's digests are keyed with.
    seed: RandomState,
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
            seed: RandomState::new(),
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

    #[cold]
    #[inline(never)]
    fn measure_new<T, F, E>(&self, key: Digest, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut inserts = lock(&self.inserts);
        // Another call may have inserted it since the lookup.
        if !self.map.contains_key(&key) {
            if inserts.len >= self.max {
                self.sweep_if_due(&mut inserts);
            }
            if inserts.len >= self.max {
                return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
            }
            self.map.insert(key, InMemoryState::default());
            inserts.len += 1;
        }
        // Measured under the lock: no sweep can drop the new entry meanwhile.
        match self.map.get(&key) {
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

/// What the table keeps of a client's key: 128 bits of SipHash keyed with the
/// table's secret seed, as two halves: the key followed by one of two domain
/// bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digest(u64, u64);

impl Digest {
    fn of(key: &ClientKey, seed: &RandomState) -> Self {
        // The key is absorbed once and the hasher's state copied, rather than
        // hashing the key twice: this runs on every call a server takes.
        let mut first = seed.build_hasher();
        key.hash(&mut first);
        let mut second = first.clone();
        first.write_u8(1);
        second.write_u8(2);
        Self(first.finish(), second.finish())
    }
}

/// A digest is already a keyed hash: the table uses one half of it as is.
impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The table's hasher: passes a [`Digest`]'s half through.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, half: u64) {
        self.0 = half;
    }

    /// Only [`Digest`]s are hashed here, through `write_u64`; this keeps any
    /// other input well defined.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

/// [`StoreInner`] behind an `Arc`, so the layer can ask it questions governor's
/// `RateLimiter` does not pass on.
pub(super) struct ClientStore<C: Clock>(Arc<StoreInner<C>>);

impl<C: Clock> ClientStore<C> {
    /// An empty table of at most `max` clients, each limited to `quota`.
    pub(super) fn new(quota: Quota, max: usize, clock: C) -> Self {
        Self(Arc::new(StoreInner::new(quota, max, clock)))
    }

    /// Whether `key` has a bucket of its own (rather than the shared overflow).
    pub(super) fn is_tracked(&self, key: &ClientKey) -> bool {
        self.0.map.contains_key(&Digest::of(key, &self.0.seed))
    }
}

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
        let key = Digest::of(key, &self.0.seed);
        if let Some(state) = self.0.map.get(&key) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of different kinds with the same bytes are different clients, and a
    /// digest depends on its table's seed (a peer cannot compute it).
    #[test]
    fn digests_tell_kinds_apart_and_depend_on_the_seed() {
        let seed = RandomState::new();
        let id = ClientKey::id(b"10.0.0.7").unwrap();
        let identity = ClientKey::identity("10.0.0.7").unwrap();
        let peer = ClientKey::peer("10.0.0.7".parse().unwrap());
        let digests = [&id, &identity, &peer].map(|k| Digest::of(k, &seed));
        assert!(digests[0] != digests[1] && digests[1] != digests[2] && digests[0] != digests[2]);
        assert!(Digest::of(&id, &seed) == digests[0], "a digest is stable");
        assert!(Digest::of(&id, &RandomState::new()) != digests[0]);
    }
}
