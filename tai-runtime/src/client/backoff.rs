//! gRFC A6 retry backoff: exponential, capped, with ±20% jitter.

use std::time::Duration;

use rand::Rng;

use crate::policy::RetryPolicy;

/// The delay before retry number `n` (1-based) counted since the last server
/// pushback: `min(initial * multiplier^(n-1), max) * uniform(0.8, 1.2)`.
///
/// The jitter spreads synchronized clients apart; the cap is applied before the
/// jitter, exactly as A6 (and grpc-go) does.
pub(crate) fn delay(policy: &RetryPolicy, n: u32, rng: &mut impl Rng) -> Duration {
    let exponent = n.saturating_sub(1).min(i32::MAX as u32) as i32;
    let raw = policy.initial_backoff.as_secs_f64() * policy.multiplier.powi(exponent);
    let capped = raw.min(policy.max_backoff.as_secs_f64());
    let jittered = capped * rng.random_range(0.8..1.2);
    Duration::try_from_secs_f64(jittered).unwrap_or(policy.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CodeSet;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(1000),
        multiplier: 2.0,
        retryable: CodeSet(1 << 14),
    };

    #[test]
    fn grows_then_caps_within_jitter_bounds() {
        let mut rng = SmallRng::seed_from_u64(7);
        for (n, base_ms) in [
            (1, 100.0),
            (2, 200.0),
            (3, 400.0),
            (4, 800.0),
            (5, 1000.0),
            (9, 1000.0),
        ] {
            for _ in 0..200 {
                let d = delay(&POLICY, n, &mut rng).as_secs_f64() * 1000.0;
                assert!(
                    d >= base_ms * 0.8 - 1e-9 && d <= base_ms * 1.2 + 1e-9,
                    "retry {n}: {d}ms"
                );
            }
        }
    }

    #[test]
    fn jitter_actually_spreads() {
        let mut rng = SmallRng::seed_from_u64(1);
        let samples: Vec<Duration> = (0..50).map(|_| delay(&POLICY, 1, &mut rng)).collect();
        let min = samples.iter().min().unwrap();
        let max = samples.iter().max().unwrap();
        assert!(*max - *min > Duration::from_millis(20), "{min:?}..{max:?}");
    }

    #[test]
    fn same_seed_same_delays() {
        let a: Vec<_> = {
            let mut rng = SmallRng::seed_from_u64(42);
            (1..5).map(|n| delay(&POLICY, n, &mut rng)).collect()
        };
        let b: Vec<_> = {
            let mut rng = SmallRng::seed_from_u64(42);
            (1..5).map(|n| delay(&POLICY, n, &mut rng)).collect()
        };
        assert_eq!(a, b);
    }
}
