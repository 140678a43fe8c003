//! Where the services keep their state: a small [`Storage`] trait, an in-memory
//! implementation with a capacity, and the [`DedupLog`] that makes mutations safe
//! to retry.
//!
//! The services hold their storage behind one lock and do "check the dedup log,
//! validate, apply, record the receipt" under it, so two attempts of one request
//! (a retry racing a slow first attempt, or hedged attempts) can never both apply.
//! A database-backed [`Storage`] would do the same in one transaction.
//!
//! Every map here is keyed by something a client chooses, so each has a bound:
//! [`MemoryStorage`] refuses new keys when full (the service turns that into
//! RESOURCE_EXHAUSTED with the capacity in the message), and the [`DedupLog`]
//! forgets its oldest receipts.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use prost::Message;

use crate::proto::Receipt;

/// Why a [`Storage`] refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The store holds `capacity` records and the key is new.
    #[error("the {what} store is full ({capacity} records)")]
    Full {
        /// What the store holds, e.g. `policy`.
        what: &'static str,
        /// How many records it holds at most.
        capacity: usize,
    },
    /// The backend failed; the write may be retried.
    #[error("the {what} store is unavailable: {reason}")]
    Unavailable {
        /// What the store holds.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<StorageError> for tonic::Status {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Full { .. } => tonic::Status::resource_exhausted(e.to_string()),
            StorageError::Unavailable { .. } => tonic::Status::unavailable(e.to_string()),
        }
    }
}

/// A keyed store of records: what a service needs from a database.
///
/// Object-safe, so a service takes a `Box<dyn Storage<V>>`; callers serialize
/// access (the services hold it behind a mutex), hence `&mut self` for writes.
pub trait Storage<V>: Send {
    /// The record at `key`.
    fn get(&self, key: &str) -> Option<V>;
    /// Inserts or replaces the record at `key`.
    ///
    /// # Errors
    ///
    /// [`StorageError::Full`] when `key` is new and the store is full.
    fn put(&mut self, key: &str, value: V) -> Result<(), StorageError>;
    /// Removes and returns the record at `key`.
    fn remove(&mut self, key: &str) -> Option<V>;
    /// Calls `f` on every record, in no particular order.
    fn for_each(&self, f: &mut dyn FnMut(&str, &V));
    /// How many records there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// How many records fit.
    fn capacity(&self) -> usize;
}

/// An in-memory [`Storage`] that holds at most `capacity` records.
#[derive(Debug)]
pub struct MemoryStorage<V> {
    what: &'static str,
    capacity: usize,
    records: HashMap<String, V>,
}

impl<V> MemoryStorage<V> {
    /// An empty store for records of kind `what` (named in errors).
    pub fn new(what: &'static str, capacity: usize) -> Self {
        Self {
            what,
            capacity,
            records: HashMap::new(),
        }
    }
}

impl<V: Clone + Send> Storage<V> for MemoryStorage<V> {
    fn get(&self, key: &str) -> Option<V> {
        self.records.get(key).cloned()
    }

    fn put(&mut self, key: &str, value: V) -> Result<(), StorageError> {
        let len = self.records.len();
        match self.records.entry(key.to_owned()) {
            Entry::Occupied(mut e) => {
                e.insert(value);
            }
            Entry::Vacant(_) if len >= self.capacity => {
                return Err(StorageError::Full {
                    what: self.what,
                    capacity: self.capacity,
                });
            }
            Entry::Vacant(e) => {
                e.insert(value);
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        self.records.remove(key)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &V)) {
        for (k, v) in &self.records {
            f(k, v);
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// What the dedup log knows about a request_id.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Never seen (or forgotten): apply the request.
    New,
    /// Seen with the same request: answer with this receipt, marked duplicate.
    Duplicate(Receipt),
    /// Seen with a different request: the client reused a request_id.
    Conflict,
}

/// The receipts of the most recent mutations, by request_id.
///
/// A repeat of a request_id gets its first receipt back. Each entry also keeps a
/// fingerprint of the request, so that a request_id reused for a *different*
/// request is refused instead of silently answered with an unrelated receipt.
///
/// Bounded: past `capacity` entries the oldest are forgotten. Retries come within
/// a call's deadline, seconds after the first attempt, so a log that remembers
/// the last 100 000 mutations is far longer than any retry needs.
#[derive(Debug)]
pub struct DedupLog {
    capacity: usize,
    entries: HashMap<String, (u64, Receipt)>,
    order: VecDeque<String>,
}

impl DedupLog {
    /// An empty log remembering at most `capacity` request_ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Looks `request_id` up; `fingerprint` identifies the request (see [`fingerprint`]).
    pub fn check(&self, request_id: &str, fingerprint: u64) -> Seen {
        match self.entries.get(request_id) {
            None => Seen::New,
            Some((fp, receipt)) if *fp == fingerprint => {
                let mut receipt = receipt.clone();
                receipt.duplicate = true;
                Seen::Duplicate(receipt)
            }
            Some(_) => Seen::Conflict,
        }
    }

    /// Records the receipt of an applied request.
    pub fn record(&mut self, request_id: &str, fingerprint: u64, receipt: Receipt) {
        if self
            .entries
            .insert(request_id.to_owned(), (fingerprint, receipt))
            .is_none()
        {
            self.order.push_back(request_id.to_owned());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    /// How many request_ids it remembers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A fingerprint of a request that does not depend on map order.
///
/// prost keeps `map<..>` fields in `HashMap`s, whose encoding order differs from
/// one decode to the next, so the encoded bytes of the same request can differ
/// between a call and its retry. `maps` takes the map fields out of a copy of the
/// request; they are hashed sorted, and the rest is hashed as encoded.
pub fn fingerprint<M: Message + Clone>(
    request: &M,
    maps: impl FnOnce(&mut M) -> Vec<HashMap<String, String>>,
) -> u64 {
    let mut rest = request.clone();
    let maps = maps(&mut rest);
    let mut hasher = DefaultHasher::new();
    rest.encode_to_vec().hash(&mut hasher);
    for map in maps {
        let mut entries: Vec<_> = map.into_iter().collect();
        entries.sort_unstable();
        entries.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_storage_refuses_new_keys_when_full_but_replaces() {
        let mut s = MemoryStorage::new("thing", 2);
        s.put("a", 1).unwrap();
        s.put("b", 2).unwrap();
        assert_eq!(
            s.put("c", 3),
            Err(StorageError::Full {
                what: "thing",
                capacity: 2
            })
        );
        s.put("a", 10).unwrap();
        assert_eq!(s.get("a"), Some(10));
        assert_eq!(s.remove("b"), Some(2));
        s.put("c", 3).unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn dedup_log_replays_detects_conflicts_and_forgets_the_oldest() {
        let mut log = DedupLog::new(2);
        let receipt = |id: &str| Receipt {
            id: id.to_owned(),
            accepted: true,
            ..Receipt::default()
        };
        assert_eq!(log.check("r1", 7), Seen::New);
        log.record("r1", 7, receipt("r1"));
        match log.check("r1", 7) {
            Seen::Duplicate(r) => assert!(r.duplicate && r.accepted),
            other => panic!("{other:?}"),
        }
        assert_eq!(log.check("r1", 8), Seen::Conflict);
        log.record("r2", 1, receipt("r2"));
        log.record("r3", 1, receipt("r3"));
        assert_eq!(log.len(), 2);
        assert_eq!(log.check("r1", 7), Seen::New);
    }

    #[test]
    fn fingerprints_ignore_map_order() {
        use crate::proto::{Policy, ProposePolicyRequest};
        let request = |pairs: &[(&str, &str)]| ProposePolicyRequest {
            request_id: "r".into(),
            policy: Some(Policy {
                id: "p".into(),
                rules: pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Policy::default()
            }),
        };
        let take = |r: &mut ProposePolicyRequest| {
            vec![std::mem::take(
                &mut r.policy.as_mut().expect("set above").rules,
            )]
        };
        let many: Vec<(String, String)> = (0..50)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let a: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut b = a.clone();
        b.reverse();
        assert_eq!(
            fingerprint(&request(&a), take),
            fingerprint(&request(&b), take)
        );
        assert_ne!(
            fingerprint(&request(&[("k", "v")]), take),
            fingerprint(&request(&[("k", "w")]), take)
        );
    }
}
