//! Prometheus metrics of tai clients and servers.
//!
//! A [`Metrics`] is one set of tai's metric families. Every client and server
//! layer records into [`Metrics::global`] unless it is given another:
//! [`Metrics::new`] registers a fresh set into a `prometheus_client` [`Registry`]
//! of your own, and a generated client (`with_metrics`), a
//! [`ServerLayer`](crate::server::ServerLayer) or a
//! [`MetricsLayer`](crate::server::metrics::MetricsLayer) built with it records
//! there and nowhere else.
//!
//! Label values come only from compiled-in policies (service and method names) or,
//! on servers, from the set of registered services — never from peer input — so
//! every metric family is bounded, whichever registry it is in.
//!
//! Channel series are labelled by `endpoint`: the addresses a channel was given,
//! or those its resolver answered. A set keeps at most [`MAX_ENDPOINT_LABELS`]
//! distinct endpoints; past that, new ones are counted under `endpoint="other"`, so
//! a DNS name that keeps answering new addresses cannot grow a family without bound.
//!
//! Per-method and per-endpoint handles are resolved once, when a client or an
//! endpoint is built; recording is then a few atomic additions and one histogram
//! lock, with no label hashing on the call path.
//!
//! | family | labels | what |
//! |---|---|---|
//! | `tai_client_calls_total` | service, method, code | client calls by final status |
//! | `tai_client_call_duration_seconds` | service, method | whole-call latency |
//! | `tai_client_retries_total`, `tai_client_hedges_total` | service, method | extra attempts sent |
//! | `tai_client_retry_stops_total` | service, method, reason | failed calls, by why no further retry was made |
//! | `tai_breaker_rejections_total`, `tai_breaker_open` | service, method | circuit breakers |
//! | `tai_channel_connect_duration_seconds` | endpoint | dial + TLS + HTTP/2 SETTINGS |
//! | `tai_channel_connect_failures_total` | endpoint | dials that failed or timed out |
//! | `tai_channel_connections_created_total`, `_closed_total` | endpoint | connections established and ended |
//! | `tai_channel_connections_open` | endpoint | live HTTP/2 connections |
//! | `tai_channel_pool_size`, `tai_channel_pool_busy` | endpoint | pool slots; slots with a call in flight |
//! | `tai_channel_reconnect_backoff_seconds` | endpoint | each wait before re-dialling |
//! | `tai_channel_ejections_total`, `tai_channel_ejected` | endpoint | outlier ejections |
//! | `tai_channel_in_flight` | endpoint | calls in flight |
//! | `tai_server_calls_total`, `tai_server_call_duration_seconds` | service, method, (code) | server side |
//! | `tai_server_rate_limited_total` | quota, method | calls refused by the rate limit |
//! | `tai_server_auth_refusals_total`, `tai_server_access_refusals_total` | reason | auth |
//! | `tai_tls_reloads_total` | side, outcome | certificate reloads |
//!
//! ```
//! // The process's own metrics:
//! let text = tai_runtime::metrics::Metrics::global().encode();
//! assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");
//!
//! // Or tai's series in a registry of your own, next to yours:
//! let mut registry = prometheus_client::registry::Registry::default();
//! let metrics = tai_runtime::metrics::Metrics::new(&mut registry);
//! // Clients built `with_metrics(transport, &metrics)` and server layers built
//! // `with_metrics(&metrics)` record there; the series (`tai_client_calls_total`,
//! // ...) appear as they do, and the registry's scrape shows them.
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! # Ok::<(), std::fmt::Error>(())
//! ```

mod channel;
mod method;

pub(crate) use channel::EndpointMetrics;
pub use channel::MAX_ENDPOINT_LABELS;
#[cfg(feature = "server")]
pub(crate) use method::ServerMethodMetrics;
pub(crate) use method::{MethodMetrics, RetryStop};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The `prometheus-client` crate tai records with, for a [`Registry`] of the
/// version [`Metrics::new`] takes.
pub use prometheus_client;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsReloadLabels {
    side: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StopLabels {
    service: String,
    method: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    quota: &'static str,
    method: String,
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

/// One set of tai's metric families: the process's own ([`Metrics::global`]), or
/// a set registered into a registry of yours ([`Metrics::new`]). A cheap handle:
/// clones share the families. See the [module docs](self).
#[derive(Clone)]
pub struct Metrics {
    families: Arc<Families>,
}

struct Families {
    /// Tells sets apart (clients share breakers only within one set).
    id: u64,
    /// These families alone, for [`Metrics::encode`].
    own: Mutex<Registry>,
    client_calls: Family<CodeLabels, Counter>,
    client_latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    client_retries: Family<MethodLabels, Counter>,
    client_hedges: Family<MethodLabels, Counter>,
    breaker_rejections: Family<MethodLabels, Counter>,
    breaker_open: Family<MethodLabels, Gauge>,
    server_calls: Family<CodeLabels, Counter>,
    server_latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    tls_reloads: Family<TlsReloadLabels, Counter>,
    server_auth_refusals: Family<ReasonLabels, Counter>,
    #[cfg(feature = "redis")]
    rate_limit_fallbacks: Family<PrefixLabels, Counter>,
    server_access_refusals: Family<ReasonLabels, Counter>,
    retry_stops: Family<StopLabels, Counter>,
    rate_limited: Family<RateLimitLabels, Counter>,
    channel: channel::ChannelFamilies,
    /// The `endpoint` label values handed out so far (at most
    /// [`MAX_ENDPOINT_LABELS`]).
    endpoints: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("id", &self.families.id)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh set of tai's metric families, registered into `registry` under the
    /// prefix `tai` (`tai_client_calls_total`, ...). Clients and server layers
    /// given it (`with_metrics`) record there and not in [`Metrics::global`].
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use tai_runtime::metrics::Metrics;
    ///
    /// let mut registry = Registry::default();
    /// let metrics = Metrics::new(&mut registry);
    /// # #[cfg(feature = "server")]
    /// let layer = tai_runtime::server::ServerLayer::with_metrics(&metrics);
    /// ```
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        metrics.register(registry.sub_registry_with_prefix("tai"));
        metrics
    }

    /// The metrics of this process, where clients and server layers record unless
    /// they are given others.
    pub fn global() -> &'static Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(Metrics::unregistered)
    }

    /// Fresh families, registered only in their own registry.
    fn unregistered() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let metrics = Self {
            families: Arc::new(Families {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                own: Mutex::new(Registry::with_prefix("tai")),
                client_calls: Family::default(),
                client_latency: Family::new_with_constructor(new_histogram),
                client_retries: Family::default(),
                client_hedges: Family::default(),
                breaker_rejections: Family::default(),
                breaker_open: Family::default(),
                server_calls: Family::default(),
                server_latency: Family::new_with_constructor(new_histogram),
                tls_reloads: Family::default(),
                server_auth_refusals: Family::default(),
                #[cfg(feature = "redis")]
                rate_limit_fallbacks: Family::default(),
                server_access_refusals: Family::default(),
                retry_stops: Family::default(),
                rate_limited: Family::default(),
                channel: channel::ChannelFamilies::new(),
                endpoints: Mutex::default(),
            }),
        };
        metrics.register(&mut crate::sync::lock(&metrics.families.own));
        metrics
    }

    /// Registers every family (a shared handle to it) into `r`.
    fn register(&self, r: &mut Registry) {
        let m = &*self.families;
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
            "Server handling time, to the end of the response",
            m.server_latency.clone(),
        );
        r.register(
            "tls_reloads",
            "Changed certificate files: applied, or rejected (the last good pair kept serving)",
            m.tls_reloads.clone(),
        );
        r.register(
            "server_auth_refusals",
            "Server calls refused as UNAUTHENTICATED, by reason",
            m.server_auth_refusals.clone(),
        );
        #[cfg(feature = "redis")]
        r.register(
            "rate_limit_redis_fallbacks",
            "Calls the rate limit decided locally because Redis was unreachable, by key prefix",
            m.rate_limit_fallbacks.clone(),
        );
        r.register(
            "server_access_refusals",
            "Server calls refused by the access rules, by reason",
            m.server_access_refusals.clone(),
        );
        r.register(
            "client_retry_stops",
            "Failed client calls under a retry policy, by why no further attempt was made",
            m.retry_stops.clone(),
        );
        r.register(
            "server_rate_limited",
            "Server calls refused by the rate limit, by the quota that refused them",
            m.rate_limited.clone(),
        );
        m.channel.register(r);
    }

    /// The Prometheus text exposition of this set's metrics (for a set made with
    /// [`Metrics::new`], only tai's series, not the rest of your registry).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = crate::sync::lock(&self.families.own);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Counts one reload of certificate files on `side` (`server` or `client`).
    #[cfg(feature = "tls")]
    pub(crate) fn tls_reload(&self, side: &'static str, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.families
            .tls_reloads
            .get_or_create(&TlsReloadLabels { side, outcome })
            .inc();
    }

    /// The refusal counter for one authentication failure reason. Reasons are a
    /// closed enum (`server::auth::Reason`), so the label set is bounded.
    #[cfg(feature = "server")]
    pub(crate) fn server_auth_refusals(&self, reason: &'static str) -> Counter {
        self.families
            .server_auth_refusals
            .get_or_create(&ReasonLabels { reason })
            .clone()
    }

    /// The refusal counter for one access-rule reason. Reasons are a closed enum
    /// (`server::auth::AccessReason`), so the label set is bounded.
    #[cfg(feature = "server")]
    pub(crate) fn server_access_refusals(&self, reason: &'static str) -> Counter {
        self.families
            .server_access_refusals
            .get_or_create(&ReasonLabels { reason })
            .clone()
    }

    /// The counter of calls refused by the rate limit's `quota` (`client`,
    /// `global`, `method`); `method` is the path of a method with a quota of its
    /// own (server configuration), empty for the others.
    #[cfg(feature = "server")]
    pub(crate) fn rate_limited(&self, quota: &'static str, method: &str) -> Counter {
        self.families
            .rate_limited
            .get_or_create(&RateLimitLabels {
                quota,
                method: method.to_owned(),
            })
            .clone()
    }

    /// What tells this set apart from every other in the process.
    pub(crate) fn id(&self) -> u64 {
        self.families.id
    }

    /// The counter of calls a Redis-backed rate limit with key `prefix` decided
    /// locally (the prefix is server configuration, not peer input).
    #[cfg(feature = "redis")]
    pub(crate) fn rate_limit_redis_fallbacks(&self, prefix: &str) -> Counter {
        self.families
            .rate_limit_fallbacks
            .get_or_create(&PrefixLabels {
                prefix: prefix.to_owned(),
            })
            .clone()
    }
}
