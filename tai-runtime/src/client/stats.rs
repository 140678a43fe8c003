//! A client's own call statistics, read in process: per method the calls, how many
//! succeeded, the retries, and the latency's mean, p50 and p99; per endpoint what
//! its channel measures ([`EndpointStats`]).
//!
//! The Prometheus histogram of `tai_client_call_duration_seconds` has twelve
//! buckets (100µs to 10s, up to ×5 apart): good for dashboards, too coarse for a
//! p99 someone reads as a number (a p99 between 0.1s and 0.5s is all it can say).
//! So each method also records into an HdrHistogram of its own, at two
//! significant digits (1% error), made for latencies up to 10 s (18 KiB per
//! method) so that recording a call never allocates; a longer one grows it
//! (once per doubling). These statistics belong to one client and its clones, whereas the
//! Prometheus series add up every client of a [`Metrics`](crate::metrics::Metrics)
//! set.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::channel::EndpointStats;
use crate::sync::lock;

/// What one method of one client has recorded.
#[derive(Debug)]
pub(crate) struct MethodRecorder {
    ok: AtomicU64,
    retries: AtomicU64,
    /// Microseconds, all calls (the count is the number of calls).
    latency: Mutex<Histogram<u64>>,
}

impl Default for MethodRecorder {
    fn default() -> Self {
        Self {
            ok: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latency: Mutex::new(latency_histogram()),
        }
    }
}

/// The largest latency a method's histogram holds without growing: 10 s, in µs.
const LATENCY_RANGE_MICROS: u64 = 10_000_000;

/// Two significant digits, up to [`LATENCY_RANGE_MICROS`] without allocating,
/// growing beyond.
fn latency_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_max(LATENCY_RANGE_MICROS, 2)
        .expect("2 significant digits and a 10 s range are valid");
    h.auto(true);
    h
}

impl MethodRecorder {
    pub(crate) fn record(&self, ok: bool, elapsed: Duration) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut latency = lock(&self.latency);
        // `record` grows the histogram to a latency beyond its range;
        // `saturating_record` alone would clamp it to the range.
        if latency.record(micros).is_err() {
            latency.saturating_record(micros);
        }
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, method: &'static str) -> MethodStats {
        let h = lock(&self.latency);
        let calls = h.len();
        let at = |q: f64| (calls > 0).then(|| Duration::from_micros(h.value_at_quantile(q)));
        MethodStats {
            method,
            calls,
            ok: self.ok.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            mean: (calls > 0).then(|| Duration::from_secs_f64(h.mean() / 1e6)),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// One method's statistics in a [`ClientStats`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MethodStats {
    /// The method's proto name (`ProposePolicy`).
    pub method: &'static str,
    /// Calls finished.
    pub calls: u64,
    /// Calls that ended OK.
    pub ok: u64,
    /// Retry attempts sent (hedges not included).
    pub retries: u64,
    /// Mean call latency, every attempt and backoff included; `None` before the
    /// first call.
    pub mean: Option<Duration>,
    /// Median call latency (1% precision).
    pub p50: Option<Duration>,
    /// 99th percentile call latency (1% precision).
    pub p99: Option<Duration>,
}

impl MethodStats {
    /// The share of calls that ended OK, from 0 to 1; `None` before the first call.
    pub fn success_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.ok as f64 / self.calls as f64)
    }
}

/// A client's statistics at one moment: see
/// [`Resilient::stats`](crate::Resilient::stats). Its `Display` is a table.
///
/// ```text
/// demo.Echo           calls     ok%  retries      mean       p50       p99
///   Say                 100  98.00%        3   1.204ms   1.100ms   4.900ms
/// endpoint                 state  in flight    calls  failures  ejected
///   127.0.0.1:50051        READY          0      103         2        -
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClientStats {
    /// The service's full name.
    pub service: &'static str,
    /// Every method of the service, in declaration order.
    pub methods: Vec<MethodStats>,
    /// The endpoints of the client's channel, when its transport is a tai
    /// [`Channel`](crate::Channel); empty over any other transport.
    pub endpoints: Vec<EndpointStats>,
}

impl ClientStats {
    /// The statistics of a method by proto name.
    pub fn method(&self, name: &str) -> Option<&MethodStats> {
        self.methods.iter().find(|m| m.method == name)
    }
}

/// A latency for a table: `-` when there is none.
struct Latency(Option<Duration>);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => f.pad(&format!("{:.3}ms", d.as_secs_f64() * 1e3)),
            None => f.pad("-"),
        }
    }
}

impl fmt::Display for ClientStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
            self.service, "calls", "ok%", "retries", "mean", "p50", "p99"
        )?;
        for m in &self.methods {
            let rate = m
                .success_rate()
                .map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0));
            writeln!(
                f,
                "  {:<22} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
                m.method,
                m.calls,
                rate,
                m.retries,
                Latency(m.mean),
                Latency(m.p50),
                Latency(m.p99)
            )?;
        }
        if self.endpoints.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "{:<24} {:>18} {:>9} {:>8} {:>9} {:>9}",
            "endpoint", "state", "in flight", "calls", "failures", "ejected"
        )?;
        for e in &self.endpoints {
            let ejected = e
                .ejected_for
                .map_or_else(|| "-".to_owned(), |d| format!("{}s", d.as_secs()));
            writeln!(
                f,
                "  {:<22} {:>18} {:>9} {:>8} {:>9} {:>9}",
                e.address,
                e.state.to_string(),
                e.in_flight,
                e.calls,
                e.failures,
                ejected
            )?;
        }
        Ok(())
    }
}
