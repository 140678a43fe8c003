//! Prometheus metrics of every tai client and server in the process.
//!
//! Label values come only from compiled-in policies (service and method names) or,
//! on servers, from the set of registered services — never from peer input — so
//! every metric family is bounded.
//!
//! Per-method handles are resolved once, when a client is built; recording a call
//! is then a few atomic additions, with no label hashing or lock on the call path.
//!
//! ```
//! let text = tai_runtime::metrics::Metrics::global().encode();
//! assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");
//! ```

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

/// Latency buckets in seconds: 100µs to 10s, roughly ×2.5 apart.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[cfg(feature = "redis")]
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrefixLabels {
    prefix: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    service: String,
    method: String,
    code: String,
}

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The process-wide metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    client_calls: Family<CodeLabels, Counter>,
    client_latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    client_retries: Family<MethodLabels, Counter>,
    client_hedges: Family<MethodLabels, Counter>,
    breaker_rejections: Family<MethodLabels, Counter>,
    breaker_open: Family<MethodLabels, Gauge>,
    server_calls: Family<CodeLabels, Counter>,
    server_latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    #[cfg(feature = "redis")]
    rate_limit_fallbacks: Family<PrefixLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("tai")),
            client_calls: Family::default(),
            client_latency: Family::new_with_constructor(new_histogram),
            client_retries: Family::default(),
            client_hedges: Family::default(),
            breaker_rejections: Family::default(),
            breaker_open: Family::default(),
            server_calls: Family::default(),
            server_latency: Family::new_with_constructor(new_histogram),
            #[cfg(feature = "redis")]
            rate_limit_fallbacks: Family::default(),
        };
        {
            let mut r = crate::sync::lock(&m.registry);
            r.register(
                "client_calls",
                "Client calls by final status code",
                m.client_calls.clone(),
            );
            r.register(
                "client_call_duration_seconds",
                "Client call latency, all attempts and backoffs included",
                m.client_latency.clone(),
            );
            r.register(
                "client_retries",
                "Retry attempts sent",
                m.client_retries.clone(),
            );
            r.register(
                "client_hedges",
                "Hedged attempts sent",
                m.client_hedges.clone(),
            );
            r.register(
                "breaker_rejections",
                "Attempts refused by an open circuit breaker",
                m.breaker_rejections.clone(),
            );
            r.register(
                "breaker_open",
                "1 while a method's breaker is open or half-open",
                m.breaker_open.clone(),
            );
            r.register(
                "server_calls",
                "Server calls by status code",
                m.server_calls.clone(),
            );
            r.register(
                "server_call_duration_seconds",
                "Server handling time to response headers",
                m.server_latency.clone(),
            );
            #[cfg(feature = "redis")]
            r.register(
                "rate_limit_redis_fallbacks",
                "Calls the rate limit decided locally because Redis was unreachable, by key prefix",
                m.rate_limit_fallbacks.clone(),
            );
        }
        m
    }

    /// The metrics of this process.
    pub fn global() -> &'static Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(Metrics::new)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = crate::sync::lock(&self.registry);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Handles for one client method.
    pub(crate) fn client_method(&self, service: &str, method: &str) -> MethodMetrics {
        let labels = MethodLabels {
            service: service.to_owned(),
            method: method.to_owned(),
        };
        MethodMetrics {
            calls: codes(&self.client_calls, service, method),
            latency: self.client_latency.get_or_create(&labels).clone(),
            retries: self.client_retries.get_or_create(&labels).clone(),
            hedges: self.client_hedges.get_or_create(&labels).clone(),
            rejections: self.breaker_rejections.get_or_create(&labels).clone(),
            open: self.breaker_open.get_or_create(&labels).clone(),
        }
    }

    /// The counter of calls a Redis-backed rate limit with key `prefix` decided
    /// locally (the prefix is server configuration, not peer input).
    #[cfg(feature = "redis")]
    pub(crate) fn rate_limit_redis_fallbacks(&self, prefix: &str) -> Counter {
        self.rate_limit_fallbacks
            .get_or_create(&PrefixLabels {
                prefix: prefix.to_owned(),
            })
            .clone()
    }

    /// Handles for one server method.
    #[cfg(feature = "server")]
    pub(crate) fn server_method(&self, service: &str, method: &str) -> ServerMethodMetrics {
        let labels = MethodLabels {
            service: service.to_owned(),
            method: method.to_owned(),
        };
        ServerMethodMetrics {
            calls: codes(&self.server_calls, service, method),
            latency: self.server_latency.get_or_create(&labels).clone(),
        }
    }
}

fn codes(family: &Family<CodeLabels, Counter>, service: &str, method: &str) -> Box<[Counter; 17]> {
    Box::new(std::array::from_fn(|i| {
        family
            .get_or_create(&CodeLabels {
                service: service.to_owned(),
                method: method.to_owned(),
                code: format!("{:?}", Code::from_i32(i as i32)),
            })
            .clone()
    }))
}

/// Pre-resolved metric handles of one client method.
#[derive(Debug, Clone)]
pub(crate) struct MethodMetrics {
    calls: Box<[Counter; 17]>,
    latency: Histogram,
    pub(crate) retries: Counter,
    pub(crate) hedges: Counter,
    pub(crate) rejections: Counter,
    pub(crate) open: Gauge,
}

impl MethodMetrics {
    pub(crate) fn record(&self, code: Code, elapsed: Duration) {
        self.calls[(code as usize).min(16)].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// Pre-resolved metric handles of one server method.
#[cfg(feature = "server")]
#[derive(Debug, Clone)]
pub(crate) struct ServerMethodMetrics {
    calls: Box<[Counter; 17]>,
    latency: Histogram,
}

#[cfg(feature = "server")]
impl ServerMethodMetrics {
    pub(crate) fn record(&self, code: Code, elapsed: Duration) {
        self.calls[(code as usize).min(16)].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}
