//! The failure-rate rule's sliding window, lock-free: the breaker's common
//! outcome (a success while closed) must never wait for a lock, so the window is
//! a ring of atomic words rather than a deque of timestamps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window: the window slides by a tenth of its length.
const WINDOW_BUCKETS: usize = 10;

/// The failure-rate rule's sliding window: `WINDOW_BUCKETS` buckets of
/// `window / WINDOW_BUCKETS` each, kept without a lock so that the common outcome
/// (a success while closed) never waits for one.
///
/// Each bucket is one atomic word: the low 24 bits of its time slot, then 20 bits
/// of calls and 20 bits of failures. A bucket that would pass about a million calls
/// halves both counts first, so a saturated bucket keeps its failure ratio (and
/// weighs recent outcomes more) instead of counting failures past its calls.
///
/// A bucket belongs to the window while its slot is one of the last
/// `WINDOW_BUCKETS`; an older one is reset by the first outcome that lands in it.
/// `head`, the latest slot counted, is kept at full width: an outcome is late (and
/// dropped, its bucket having moved on to a later slot) only if that later slot is
/// no later than `head`, so a bucket left untouched for any length of time is
/// stale, never "from the future". Slots are otherwise compared modulo 2^24, so a
/// bucket left untouched for within `WINDOW_BUCKETS` slots of a multiple of 2^24
/// slots would be read as current once — at the smallest window (10 ms buckets)
/// that takes two days of silence and only ever replays counts the window once held.
#[derive(Debug)]
pub(super) struct Window {
    buckets: [AtomicU64; WINDOW_BUCKETS],
    /// The latest slot any outcome was counted in (full width, only grows).
    head: AtomicU64,
    /// Bucket width in nanoseconds.
    width: u64,
}

const SLOT_BITS: u32 = 24;
const COUNT_BITS: u32 = 20;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

impl Window {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            buckets: Default::default(),
            head: AtomicU64::new(0),
            width: (window.as_nanos() / WINDOW_BUCKETS as u128).clamp(1, u128::from(u64::MAX))
                as u64,
        }
    }

    /// The slot `now` falls in, counted from `epoch`.
    pub(super) fn slot(&self, epoch: Instant, now: Instant) -> u64 {
        let since = now.saturating_duration_since(epoch).as_nanos();
        since.min(u128::from(u64::MAX)) as u64 / self.width
    }

    fn unpack(word: u64) -> (u64, u64, u64) {
        (
            word >> (2 * COUNT_BITS),
            (word >> COUNT_BITS) & COUNT_MAX,
            word & COUNT_MAX,
        )
    }

    /// Slots from the stored slot `at` forward to `current`, modulo 2^24.
    fn age(current: u64, at: u64) -> u64 {
        current.wrapping_sub(at) & SLOT_MASK
    }

    /// Counts one call (a failure if `failed`) in `slot`'s bucket.
    pub(super) fn add(&self, slot: u64, failed: bool) {
        // Once per slot, not per outcome: the common case only reads `head`.
        if self.head.load(Ordering::Relaxed) < slot {
            self.head.fetch_max(slot, Ordering::Relaxed);
        }
        let bucket = &self.buckets[slot as usize % WINDOW_BUCKETS];
        // Acquire pairs with the Release below: having seen another outcome's slot
        // in the bucket, the `head` read after it is at least that slot.
        let mut word = bucket.load(Ordering::Acquire);
        loop {
            let (at, calls, failures) = Self::unpack(word);
            let (calls, failures) = match Self::age(slot, at) {
                0 => (calls, failures),
                age => {
                    // A bucket slot later than this outcome's, yet no later than
                    // `head`, means this outcome was timed before a concurrent one
                    // that moved the bucket on: too late to count. Any other slot is
                    // stale, however long ago it was written: reset the bucket.
                    let ahead = (SLOT_MASK + 1 - age) & SLOT_MASK;
                    let newest = self.head.load(Ordering::Relaxed);
                    if calls > 0 && ahead <= newest.saturating_sub(slot) {
                        return;
                    }
                    (0, 0)
                }
            };
            // Full: halve both counts, so that the ratio holds.
            let (calls, failures) = if calls == COUNT_MAX {
                (calls.div_ceil(2), failures.div_ceil(2))
            } else {
                (calls, failures)
            };
            let next = (slot & SLOT_MASK) << (2 * COUNT_BITS)
                | (calls + 1) << COUNT_BITS
                | (failures + u64::from(failed));
            match bucket.compare_exchange_weak(word, next, Ordering::Release, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
    }

    /// Calls and failures in the window that ends with `slot`.
    pub(super) fn totals(&self, slot: u64) -> (u32, u32) {
        self.buckets
            .iter()
            .map(|b| Self::unpack(b.load(Ordering::Relaxed)))
            .filter(|(at, _, _)| Self::age(slot, *at) < WINDOW_BUCKETS as u64)
            .fold((0, 0), |(c, f), (_, calls, failures)| {
                (c + calls as u32, f + failures as u32)
            })
    }

    pub(super) fn clear(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_every_concurrent_outcome() {
        let w = Window::new(Duration::from_secs(10));
        std::thread::scope(|s| {
            for t in 0..4 {
                let w = &w;
                s.spawn(move || {
                    for i in 0..10_000 {
                        w.add(7, t == 0 && i % 10 == 0);
                    }
                });
            }
        });
        assert_eq!(w.totals(7), (40_000, 1_000));
    }

    #[test]
    fn window_rolls_buckets_and_drops_late_outcomes() {
        let w = Window::new(Duration::from_secs(10));
        w.add(3, true);
        w.add(3 + WINDOW_BUCKETS as u64, false); // same bucket, a window later: reset
        assert_eq!(w.totals(3 + WINDOW_BUCKETS as u64), (1, 0));
        w.add(3, true); // timed before the outcome that rolled the bucket: dropped
        assert_eq!(w.totals(3 + WINDOW_BUCKETS as u64), (1, 0));
        // Slots wrap at 2^24 and the window still spans the wrap.
        w.add(SLOT_MASK, true);
        w.add(SLOT_MASK + 1, false);
        assert_eq!(w.totals(SLOT_MASK + 1), (2, 1));
    }

    #[test]
    fn window_counts_again_after_a_long_idle() {
        // Slot 8_388_615 lands in slot 5's bucket more than 2^23 slots later (9.7
        // days of silence with 100 ms buckets): the bucket is stale, not "from the
        // future", and the new outcome must count.
        let w = Window::new(Duration::from_secs(1));
        w.add(5, true);
        w.add(8_388_615, true);
        assert_eq!(w.totals(8_388_615), (1, 1));
        // An outcome timed a window before the latest one is still late: dropped.
        w.add(8_388_605, false);
        assert_eq!(w.totals(8_388_615), (1, 1));
    }

    #[test]
    fn a_saturated_bucket_keeps_its_failure_ratio() {
        // 2,000,000 calls, 40% of them failures, all in one bucket: more than the
        // counts can hold, and the ratio must survive.
        let w = Window::new(Duration::from_secs(10));
        for i in 0..2_000_000u32 {
            w.add(42, i % 5 < 2);
        }
        let (calls, failures) = w.totals(42);
        let ratio = f64::from(failures) / f64::from(calls);
        assert!(
            (ratio - 0.4).abs() < 1e-4,
            "{failures} of {calls} calls read as {ratio}"
        );
    }
}
