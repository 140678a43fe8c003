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

/// The bucket sizes A6 (and grpc-go's service config parser) accept.
const MAX_TOKENS: std::ops::RangeInclusive<u32> = 1..=1000;

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
    ///
    /// As in gRFC A6, `token_ratio` counts to three decimals and further decimals
    /// are dropped, not rounded: `0.1239` refills `0.123` tokens per success.
    /// `tai-build` and `#[resilient]` reject policies outside A6's ranges; a
    /// policy built by hand is brought into them: `max_tokens` into 1..=1000, and
    /// a `token_ratio` into 0.001..=`max_tokens` (a smaller, zero, negative or NaN
    /// ratio refills 0.001 tokens, so that a throttled client can still recover).
    ///
    /// ```
    /// use tai_runtime::policy::ThrottlePolicy;
    /// use tai_runtime::throttle::RetryThrottle;
    ///
    /// let throttle = RetryThrottle::new(&ThrottlePolicy::new(10, 0.1239));
    /// throttle.record_failure();
    /// throttle.record_success();
    /// assert_eq!(throttle.tokens(), 9.123);
    /// ```
    pub fn new(policy: &ThrottlePolicy) -> Self {
        let max = policy
            .max_tokens
            .clamp(*MAX_TOKENS.start(), *MAX_TOKENS.end())
            * SCALE;
        Self {
            milli_tokens: AtomicU32::new(max),
            max,
            threshold: max / 2,
            ratio: milli_ratio(policy.token_ratio).clamp(1, max),
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
                Some(t.saturating_add(ratio).min(max))
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

/// `ratio` in thousandths, further decimals truncated as gRPC does; saturating
/// (NaN and negatives are 0).
///
/// Truncating `ratio * 1000` would lose a thousandth to binary floating point
/// (`1.005 * 1000.0` is `1004.999…`), so this truncates the decimal digits of the
/// shortest representation of `ratio` instead (what `Display` prints, and what a
/// policy author wrote), as gRPC C++ truncates the digits of the JSON number.
fn milli_ratio(ratio: f64) -> u32 {
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio >= f64::from(u32::MAX / SCALE) {
        return u32::MAX; // also infinity
    }
    // Below 4.3 million, so `Display` writes plain decimal digits, never an exponent.
    let text = ratio.to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut milli = whole.parse::<u32>().unwrap_or(0).saturating_mul(SCALE);
    let mut place = SCALE / 10;
    for digit in fraction.bytes().take(3) {
        milli += u32::from(digit - b'0') * place;
        place /= 10;
    }
    milli
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

    fn throttle(max_tokens: u32, token_ratio: f64) -> RetryThrottle {
        RetryThrottle::new(&ThrottlePolicy {
            max_tokens,
            token_ratio,
        })
    }

    /// Refills once from `max - 1` tokens and reports what was added.
    fn refill(t: &RetryThrottle) -> f64 {
        t.record_failure();
        let before = t.tokens();
        t.record_success();
        t.tokens() - before
    }

    /// A6: "Up to 3 decimal places are supported"; gRPC truncates the rest (it
    /// reads the decimal digits), it does not round.
    #[test]
    fn token_ratio_keeps_three_decimals_truncated() {
        assert_eq!(throttle(10, 0.1239).ratio, 123);
        assert_eq!(throttle(10, 0.9999).ratio, 999);
        assert_eq!(throttle(10, 0.0015).ratio, 1);
        // Binary floating point must not cost a thousandth: 1.005 * 1000 is
        // 1004.999... in f64, yet the ratio written is 1.005.
        assert_eq!(throttle(10, 1.005).ratio, 1005);
        assert_eq!(throttle(10, 0.1).ratio, 100);
        assert_eq!(throttle(10, 0.3).ratio, 300);
        assert_eq!(throttle(10, 0.57).ratio, 570);
        assert_eq!(throttle(10, 2.0).ratio, 2000);
        let t = throttle(10, 0.1239);
        assert!((refill(&t) - 0.123).abs() < 1e-9, "{}", t.tokens());
    }

    /// `max_tokens` is 1..=1000 (tai's validators reject the rest; a policy built
    /// by hand is brought into range).
    #[test]
    fn max_tokens_is_brought_into_1_to_1000() {
        assert_eq!(throttle(0, 0.1).tokens(), 1.0);
        assert_eq!(throttle(1, 0.1).tokens(), 1.0);
        assert_eq!(throttle(1000, 0.1).tokens(), 1000.0);
        assert_eq!(throttle(5000, 0.1).tokens(), 1000.0);
        assert_eq!(throttle(u32::MAX, 0.1).tokens(), 1000.0);
    }

    /// A ratio no policy should have must not overflow the bucket or stop refills.
    #[test]
    fn extreme_ratios_neither_overflow_nor_stall() {
        for ratio in [1e10, f64::MAX, f64::INFINITY] {
            let t = throttle(1000, ratio);
            for _ in 0..600 {
                t.record_failure();
            }
            assert!(t.is_throttled());
            t.record_success();
            assert_eq!(t.tokens(), 1000.0, "{ratio}: one success fills the bucket");
        }
        // Below a thousandth (or not a positive number): the smallest refill, so
        // that a throttled client can still recover.
        for ratio in [0.0004, 0.0, -1.0, f64::NAN] {
            let t = throttle(10, ratio);
            assert_eq!(t.ratio, 1, "{ratio}");
        }
    }
}
