//! A method's metrics, client or server: the handles of one method's series,
//! resolved once when a client or a server layer is built.
//!
//! Why resolved up front: recording happens on every call, so it is an index into
//! an array of counters (one per status code) and a histogram observation, with no
//! label hashing; the labels (service and method names) come from compiled-in
//! policies or registered services, never from a peer, so the set stays bounded.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tonic::Code;

use super::{CodeLabels, MethodLabels, Metrics, StopLabels};

impl Metrics {
    /// Handles for one client method.
    pub(crate) fn client_method(&self, service: &str, method: &str) -> MethodMetrics {
        let labels = MethodLabels {
            service: service.to_owned(),
            method: method.to_owned(),
        };
        let m = &*self.families;
        MethodMetrics {
            calls: codes(&m.client_calls, service, method),
            latency: m.client_latency.get_or_create(&labels).clone(),
            retries: m.client_retries.get_or_create(&labels).clone(),
            hedges: m.client_hedges.get_or_create(&labels).clone(),
            rejections: m.breaker_rejections.get_or_create(&labels).clone(),
            open: m.breaker_open.get_or_create(&labels).clone(),
            stops: Box::new(RetryStop::ALL.map(|stop| {
                m.retry_stops
                    .get_or_create(&StopLabels {
                        service: service.to_owned(),
                        method: method.to_owned(),
                        reason: stop.as_str(),
                    })
                    .clone()
            })),
            stats: Arc::default(),
        }
    }

    /// Handles for one server method.
    #[cfg(feature = "server")]
    pub(crate) fn server_method(&self, service: &str, method: &str) -> ServerMethodMetrics {
        let labels = MethodLabels {
            service: service.to_owned(),
            method: method.to_owned(),
        };
        let m = &*self.families;
        ServerMethodMetrics {
            calls: codes(&m.server_calls, service, method),
            latency: m.server_latency.get_or_create(&labels).clone(),
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
    stops: Box<[Counter; RetryStop::ALL.len()]>,
    /// This client's own statistics, for [`ClientState::snapshot`](crate::ClientState::snapshot).
    pub(crate) stats: Arc<crate::client::stats::MethodRecorder>,
}

impl MethodMetrics {
    pub(crate) fn record(&self, code: Code, elapsed: Duration) {
        self.calls[(code as usize).min(16)].inc();
        self.latency.observe(elapsed.as_secs_f64());
        self.stats.record(code == Code::Ok, elapsed);
    }

    /// Counts one retry attempt sent.
    pub(crate) fn retried(&self) {
        self.retries.inc();
        self.stats.retried();
    }

    /// Counts a failed call that was not retried further, and why.
    pub(crate) fn retry_stopped(&self, why: RetryStop) {
        self.stops[why as usize].inc();
    }
}

/// Why a call under a retry policy made no further attempt after a failure: the
/// `reason` label of `tai_client_retry_stops_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryStop {
    /// The policy's attempts (at most 5, gRFC A6) are used up.
    Exhausted,
    /// The retry throttle has too few tokens left.
    Throttled,
    /// The response had begun to reach the caller (headers or a message), so a
    /// retry could no longer be hidden.
    Committed,
    /// The server said not to retry (`grpc-retry-pushback-ms` negative or invalid).
    Pushback,
    /// The backoff would end past the call's deadline.
    Deadline,
    /// The status code is not one the policy retries.
    NotRetryable,
    /// The circuit breaker refused the attempt.
    Breaker,
}

impl RetryStop {
    const ALL: [RetryStop; 7] = [
        RetryStop::Exhausted,
        RetryStop::Throttled,
        RetryStop::Committed,
        RetryStop::Pushback,
        RetryStop::Deadline,
        RetryStop::NotRetryable,
        RetryStop::Breaker,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RetryStop::Exhausted => "exhausted",
            RetryStop::Throttled => "throttled",
            RetryStop::Committed => "committed",
            RetryStop::Pushback => "pushback",
            RetryStop::Deadline => "deadline",
            RetryStop::NotRetryable => "not_retryable",
            RetryStop::Breaker => "breaker",
        }
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
