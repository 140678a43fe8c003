//! Choosing an endpoint for a call.
//!
//! Least-loaded is the power of two choices (Mitzenmacher): draw two eligible
//! endpoints at random and take the one with fewer calls in flight. Unlike tonic's
//! balancer (whose load signal is always zero, tonic#1231) the count is real: a
//! call is in flight from the moment it is sent until its response body ends. Two
//! random choices avoid the herd that "always the least loaded" causes when many
//! clients see the same counts, at O(1) cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::endpoint::{EjectionBudget, Endpoint};
use super::rng::Rng;
use crate::config::BalancerKind;

/// What the balancer needs to know of an endpoint.
pub(crate) trait Candidate {
    /// May take a call now.
    fn eligible(&self, budget: &EjectionBudget) -> bool;
    /// Calls in flight.
    fn load(&self) -> usize;
    /// Peak-EWMA cost.
    fn cost(&self) -> f64;
}

impl Candidate for Arc<Endpoint> {
    fn eligible(&self, budget: &EjectionBudget) -> bool {
        self.is_eligible(budget)
    }
    fn load(&self) -> usize {
        Endpoint::load(self)
    }
    fn cost(&self) -> f64 {
        Endpoint::cost(self)
    }
}

/// The index in `endpoints` of an eligible endpoint, or `None` if none is
/// eligible.
pub(crate) fn pick<E: Candidate>(
    kind: BalancerKind,
    endpoints: &[E],
    budget: &EjectionBudget,
    rng: &Rng,
    cursor: &AtomicUsize,
) -> Option<usize> {
    // Eligibility is read once per endpoint per pick; the endpoints of a channel are
    // few, and this keeps every balancer honest about ejected or down endpoints.
    let mut eligible = [0u16; 64];
    let mut count = 0;
    let mut overflow = false;
    for (i, e) in endpoints.iter().enumerate() {
        if e.eligible(budget) {
            if count < eligible.len() {
                eligible[count] = i as u16;
            } else {
                overflow = true;
            }
            count += 1;
        }
    }
    if count == 0 {
        return None;
    }
    if overflow {
        // More than 64 eligible endpoints: sample among all and skip ineligible ones.
        return pick_large(kind, endpoints, budget, rng, cursor);
    }
    let eligible = &eligible[..count];
    let at = |k: usize| usize::from(eligible[k]);
    Some(match kind {
        BalancerKind::RoundRobin => at(cursor.fetch_add(1, Ordering::Relaxed) % count),
        BalancerKind::Random => at(rng.below(count)),
        BalancerKind::LeastLoaded | BalancerKind::PeakEwma => {
            if count == 1 {
                return Some(at(0));
            }
            let a = rng.below(count);
            let mut b = rng.below(count - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (at(a), at(b));
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            let a_better = if kind == BalancerKind::LeastLoaded {
                ea.load() <= eb.load()
            } else {
                ea.cost() <= eb.cost()
            };
            if a_better { a } else { b }
        }
    })
}

fn pick_large<E: Candidate>(
    kind: BalancerKind,
    endpoints: &[E],
    budget: &EjectionBudget,
    rng: &Rng,
    cursor: &AtomicUsize,
) -> Option<usize> {
    let n = endpoints.len();
    let start = match kind {
        BalancerKind::RoundRobin => cursor.fetch_add(1, Ordering::Relaxed),
        _ => rng.below(n),
    };
    let first = (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| endpoints[i].eligible(budget))?;
    if matches!(kind, BalancerKind::LeastLoaded | BalancerKind::PeakEwma) {
        let other = (0..n)
            .map(|k| (rng.below(n) + k) % n)
            .find(|&i| i != first && endpoints[i].eligible(budget));
        if let Some(o) = other {
            let (eo, ef) = (&endpoints[o], &endpoints[first]);
            let better = if kind == BalancerKind::LeastLoaded {
                eo.load() < ef.load()
            } else {
                eo.cost() < ef.cost()
            };
            if better {
                return Some(o);
            }
        }
    }
    Some(first)
}

/// The balancer on synthetic endpoints, for its tests and (through
/// `bench_support`) tai's benchmarks.
#[cfg(any(test, feature = "bench"))]
pub mod bench {
    use super::*;

    /// A synthetic endpoint.
    #[derive(Debug, Default)]
    pub struct Fake {
        /// Calls in flight.
        pub load: AtomicUsize,
        /// Whether it may be picked.
        pub eligible: bool,
    }

    impl Candidate for Fake {
        fn eligible(&self, _: &EjectionBudget) -> bool {
            self.eligible
        }
        fn load(&self) -> usize {
            self.load.load(Ordering::Relaxed)
        }
        fn cost(&self) -> f64 {
            self.load.load(Ordering::Relaxed) as f64
        }
    }

    /// A balancer over fake endpoints.
    #[derive(Debug)]
    pub struct Picker {
        kind: BalancerKind,
        budget: EjectionBudget,
        rng: Rng,
        cursor: AtomicUsize,
    }

    impl Picker {
        /// A picker of `kind` with a seeded random source.
        pub fn new(kind: BalancerKind, seed: u64) -> Self {
            Self {
                kind,
                budget: EjectionBudget::default(),
                rng: Rng::seeded(seed),
                cursor: AtomicUsize::new(0),
            }
        }

        /// The index of the endpoint picked, if any.
        pub fn pick(&self, endpoints: &[Fake]) -> Option<usize> {
            pick(self.kind, endpoints, &self.budget, &self.rng, &self.cursor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bench::{Fake, Picker};
    use super::*;

    fn fakes(loads: &[usize], eligible: &[bool]) -> Vec<Fake> {
        loads
            .iter()
            .zip(eligible)
            .map(|(l, e)| Fake {
                load: AtomicUsize::new(*l),
                eligible: *e,
            })
            .collect()
    }

    #[test]
    fn round_robin_skips_ineligible() {
        let e = fakes(&[0, 0, 0], &[true, false, true]);
        let p = Picker::new(BalancerKind::RoundRobin, 1);
        let picks: Vec<_> = (0..4).map(|_| p.pick(&e).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(p.pick(&fakes(&[0], &[false])), None);
    }

    #[test]
    fn least_loaded_never_picks_the_most_loaded_of_two() {
        let e = fakes(&[5, 1], &[true, true]);
        let p = Picker::new(BalancerKind::LeastLoaded, 3);
        for _ in 0..100 {
            assert_eq!(p.pick(&e), Some(1));
        }
    }

    #[test]
    fn least_loaded_prefers_lighter_endpoints_overall() {
        let e = fakes(&[9, 0, 4, 9], &[true; 4]);
        let p = Picker::new(BalancerKind::LeastLoaded, 5);
        let mut counts = [0; 4];
        for _ in 0..10_000 {
            counts[p.pick(&e).unwrap()] += 1;
        }
        // P2C: the lightest wins every pair it is in (half of all pairs), the
        // heaviest never wins against a lighter one.
        assert!(counts[1] > 4_500 && counts[1] < 5_500, "{counts:?}");
        assert!(counts[1] > counts[2] && counts[2] > counts[0], "{counts:?}");
    }

    #[test]
    fn more_than_64_endpoints_still_balance() {
        let mut e = fakes(&[3; 100], &[true; 100]);
        e[42] = Fake {
            load: AtomicUsize::new(0),
            eligible: true,
        };
        e[7].eligible = false;
        let p = Picker::new(BalancerKind::RoundRobin, 1);
        for _ in 0..200 {
            assert_ne!(p.pick(&e), Some(7));
        }
    }
}
