//! gRFC A6 retry throttling: a token bucket shared by every method of a client.
//!
//! Why a bucket and not just a retry count: when a backend is down, every client
//! retrying every call multiplies load exactly when the backend can least take it.
//! The bucket drains on failures and refills on successes, so a mostly failing
//! backend sees retries stop altogether until it recovers.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::policy::ThrottlePolicy;

/// Tokens are kept in thousandths: A6 fixes `token_ratio` to three decimals, so
/// integer milli-tokens are exact and the bucket is one lock-free atomic.
const SCALE: u32 = 1000;

/// The retry throttle of one client.
#[derive(Debug)]
pub struct RetryThrottle {
    milli_tokens: AtomicU32,
    max: u32,
    threshold: u32,
    ratio: u32,
}

impl RetryThrottle {
    /// A full bucket for `policy`.
    pub fn new(policy: &ThrottlePolicy) -> Self {
        let max = policy.max_tokens.clamp(1, 1000) * SCALE;
        Self {
            milli_tokens: AtomicU32::new(max),
            max,
            threshold: max / 2,
            ratio: (policy.token_ratio * f64::from(SCALE)).round() as u32,
        }
    }

    /// Counts a failed attempt with a retryable code; returns `true` if retries are
    /// now throttled (tokens at or below half the bucket), as grpc-go does.
    pub fn record_failure(&self) -> bool {
        let previous = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(SCALE))
            })
            .unwrap_or_else(|t| t);
        previous.saturating_sub(SCALE) <= self.threshold
    }

    /// Counts a successful call: refills `token_ratio` tokens, up to the bucket size.
    pub fn record_success(&self) {
        let (max, ratio) = (self.max, self.ratio);
        if self.milli_tokens.load(Ordering::Relaxed) >= max {
            return; // the common case: a full bucket stays full without a write
        }
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + ratio).min(max))
            });
    }

    /// Current tokens, e.g. `8.5`.
    pub fn tokens(&self) -> f64 {
        f64::from(self.milli_tokens.load(Ordering::Acquire)) / f64::from(SCALE)
    }

    /// Whether retries are currently throttled.
    pub fn is_throttled(&self) -> bool {
        self.milli_tokens.load(Ordering::Acquire) <= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_refills_and_throttles_at_half() {
        let t = RetryThrottle::new(&ThrottlePolicy {
            max_tokens: 10,
            token_ratio: 0.5,
        });
        assert_eq!(t.tokens(), 10.0);
        t.record_success();
        assert_eq!(t.tokens(), 10.0, "never above max");
        for expected in [9.0, 8.0, 7.0, 6.0] {
            assert!(!t.record_failure());
            assert_eq!(t.tokens(), expected);
        }
        assert!(t.record_failure(), "5 tokens is at the threshold");
        t.record_success();
        assert_eq!(t.tokens(), 5.5);
        assert!(!t.is_throttled());
        for _ in 0..20 {
            t.record_failure();
        }
        assert_eq!(t.tokens(), 0.0, "never below zero");
    }
}
