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

/// Picks an eligible endpoint, or `None` if none is eligible.
pub(crate) fn pick<'a>(
    kind: BalancerKind,
    endpoints: &'a [Arc<Endpoint>],
    budget: &EjectionBudget,
    rng: &Rng,
    cursor: &AtomicUsize,
) -> Option<&'a Arc<Endpoint>> {
    // Eligibility is read once per endpoint per pick; the endpoints of a channel are
    // few, and this keeps every balancer honest about ejected or down endpoints.
    let mut eligible = [0u16; 64];
    let mut count = 0;
    let mut overflow = false;
    for (i, e) in endpoints.iter().enumerate() {
        if e.is_eligible(budget) {
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
    let at = |k: usize| &endpoints[eligible[k] as usize];
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
            let (ea, eb) = (at(a), at(b));
            let a_better = if kind == BalancerKind::LeastLoaded {
                ea.load() <= eb.load()
            } else {
                ea.cost() <= eb.cost()
            };
            if a_better { ea } else { eb }
        }
    })
}

fn pick_large<'a>(
    kind: BalancerKind,
    endpoints: &'a [Arc<Endpoint>],
    budget: &EjectionBudget,
    rng: &Rng,
    cursor: &AtomicUsize,
) -> Option<&'a Arc<Endpoint>> {
    let n = endpoints.len();
    let start = match kind {
        BalancerKind::RoundRobin => cursor.fetch_add(1, Ordering::Relaxed),
        _ => rng.below(n),
    };
    let first = (0..n)
        .map(|k| &endpoints[(start + k) % n])
        .find(|e| e.is_eligible(budget))?;
    if matches!(kind, BalancerKind::LeastLoaded | BalancerKind::PeakEwma) {
        let other = (0..n)
            .map(|k| &endpoints[(rng.below(n) + k) % n])
            .find(|e| e.is_eligible(budget) && !Arc::ptr_eq(e, first));
        if let Some(o) = other {
            let better = if kind == BalancerKind::LeastLoaded {
                o.load() < first.load()
            } else {
                o.cost() < first.cost()
            };
            if better {
                return Some(o);
            }
        }
    }
    Some(first)
}
