//! A channel's metrics, one set of handles per endpoint: the `tai_channel_*`
//! families, labelled by `endpoint`.
//!
//! Why handles resolved once per endpoint, and a cap on the label values: a
//! channel records on every connection event and call, so the hot path must be a
//! few atomic additions with no label hashing; and the addresses come from a
//! resolver (peer-controlled DNS answers), so at most [`MAX_ENDPOINT_LABELS`]
//! distinct values are kept and later ones are counted as `endpoint="other"`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Metrics, new_histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

/// The most distinct `endpoint` label values one [`Metrics`] set keeps; later
/// endpoints are counted under `endpoint="other"`.
pub const MAX_ENDPOINT_LABELS: usize = 256;

/// Reconnect backoff buckets in seconds: 100ms to 2 minutes (the production
/// preset's cap).
const BACKOFF_BUCKETS: [f64; 9] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 30.0, 120.0];

fn new_backoff_histogram() -> Histogram {
    Histogram::new(BACKOFF_BUCKETS)
}

pub(super) struct ChannelFamilies {
    connect_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    connect_failures: Family<EndpointLabels, Counter>,
    created: Family<EndpointLabels, Counter>,
    closed: Family<EndpointLabels, Counter>,
    open: Family<EndpointLabels, Gauge>,
    pool_size: Family<EndpointLabels, Gauge>,
    pool_busy: Family<EndpointLabels, Gauge>,
    backoff: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    ejections: Family<EndpointLabels, Counter>,
    ejected: Family<EndpointLabels, Gauge>,
    in_flight: Family<EndpointLabels, Gauge>,
}

impl ChannelFamilies {
    pub(super) fn new() -> Self {
        Self {
            connect_duration: Family::new_with_constructor(new_histogram),
            backoff: Family::new_with_constructor(new_backoff_histogram),
            connect_failures: Family::default(),
            created: Family::default(),
            closed: Family::default(),
            open: Family::default(),
            pool_size: Family::default(),
            pool_busy: Family::default(),
            ejections: Family::default(),
            ejected: Family::default(),
            in_flight: Family::default(),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "channel_connect_duration_seconds",
            "Connection establishment time: dial, TLS and the server's HTTP/2 SETTINGS",
            self.connect_duration.clone(),
        );
        r.register(
            "channel_connect_failures",
            "Connection attempts that failed or timed out",
            self.connect_failures.clone(),
        );
        r.register(
            "channel_connections_created",
            "Connections established",
            self.created.clone(),
        );
        r.register(
            "channel_connections_closed",
            "Established connections that ended (closed by the peer, idle, or shut down)",
            self.closed.clone(),
        );
        r.register(
            "channel_connections_open",
            "Live HTTP/2 connections",
            self.open.clone(),
        );
        r.register(
            "channel_pool_size",
            "Connection slots in the endpoint's pool",
            self.pool_size.clone(),
        );
        r.register(
            "channel_pool_busy",
            "Pool connections with at least one call in flight",
            self.pool_busy.clone(),
        );
        r.register(
            "channel_reconnect_backoff_seconds",
            "Each wait before dialling an unreachable endpoint again",
            self.backoff.clone(),
        );
        r.register(
            "channel_ejections",
            "Outlier ejections of the endpoint",
            self.ejections.clone(),
        );
        r.register(
            "channel_ejected",
            "1 while the endpoint is ejected",
            self.ejected.clone(),
        );
        r.register(
            "channel_in_flight",
            "Calls in flight on the endpoint",
            self.in_flight.clone(),
        );
    }

    fn endpoint(&self, labels: &EndpointLabels) -> EndpointMetrics {
        EndpointMetrics {
            connect_duration: self.connect_duration.get_or_create(labels).clone(),
            connect_failures: self.connect_failures.get_or_create(labels).clone(),
            created: self.created.get_or_create(labels).clone(),
            closed: self.closed.get_or_create(labels).clone(),
            open: self.open.get_or_create(labels).clone(),
            pool_size: self.pool_size.get_or_create(labels).clone(),
            pool_busy: self.pool_busy.get_or_create(labels).clone(),
            backoff: self.backoff.get_or_create(labels).clone(),
            ejections: self.ejections.get_or_create(labels).clone(),
            ejected: self.ejected.get_or_create(labels).clone(),
            in_flight: self.in_flight.get_or_create(labels).clone(),
        }
    }
}

impl Metrics {
    /// Handles for one endpoint of a channel, labelled by its `address` (or
    /// `other` once the set holds [`MAX_ENDPOINT_LABELS`] endpoints).
    pub(crate) fn endpoint(&self, address: &str) -> EndpointMetrics {
        let endpoint = {
            let mut seen = crate::sync::lock(&self.families.endpoints);
            if seen.contains(address) {
                address.to_owned()
            } else if seen.len() < MAX_ENDPOINT_LABELS {
                seen.insert(address.to_owned());
                address.to_owned()
            } else {
                "other".to_owned()
            }
        };
        self.families.channel.endpoint(&EndpointLabels { endpoint })
    }
}

/// Pre-resolved metric handles of one endpoint of a channel.
#[derive(Debug, Clone)]
pub(crate) struct EndpointMetrics {
    pub(crate) connect_duration: Histogram,
    pub(crate) connect_failures: Counter,
    pub(crate) created: Counter,
    pub(crate) closed: Counter,
    pub(crate) open: Gauge,
    pub(crate) pool_size: Gauge,
    pub(crate) pool_busy: Gauge,
    pub(crate) backoff: Histogram,
    pub(crate) ejections: Counter,
    pub(crate) ejected: Gauge,
    pub(crate) in_flight: Gauge,
}
