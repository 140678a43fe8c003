//! One endpoint: its pool of connections, its load and latency, and whether it is
//! ejected or reported NOT_SERVING.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use super::connection::{Connection, KeepaliveTime, Sender};
use super::connectivity::ConnectivityState;
use crate::config::OutlierConfig;
use crate::metrics::EndpointMetrics;
use crate::sync::lock;

/// The longest an ejection lasts when the configured time cannot be represented.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Peak-EWMA decay time: how long a latency spike keeps weighing on an endpoint.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// What happened to one call, for the endpoint's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallResult {
    /// The call ended with this status.
    Status(Code),
    /// The connection failed under the call.
    ConnectionLost,
}

/// Statistics of one endpoint, read at run time.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The address connected to.
    pub address: String,
    /// Connectivity of its best connection.
    pub state: ConnectivityState,
    /// Calls in flight now (response not finished).
    pub in_flight: usize,
    /// Calls sent so far.
    pub calls: u64,
    /// Calls that failed (connection lost, or a failure code of the outlier rule).
    pub failures: u64,
    /// Peak-EWMA latency to response headers; `None` before the first response,
    /// and always under balancers other than peak-EWMA (only it measures latency).
    pub ewma_latency: Option<Duration>,
    /// Time left in the current ejection, if ejected.
    pub ejected_for: Option<Duration>,
    /// Whether active health checks report it NOT_SERVING.
    pub not_serving: bool,
    /// Connections in its pool.
    pub connections: usize,
    /// The keepalive time its next connections use: the configured one, doubled
    /// each time a server closed a connection with `too_many_pings` (gRFC A8);
    /// `None` without keepalive.
    pub keepalive: Option<Duration>,
}

#[derive(Debug, Default)]
struct Ewma {
    /// Nanoseconds; 0 before the first sample.
    estimate: f64,
    updated: Option<Instant>,
}

#[derive(Debug, Default)]
struct Outlier {
    consecutive: u32,
    ejections: u32,
    until: Option<Instant>,
    healthy_streak: u32,
}

/// Counts ejected endpoints of a channel, to enforce `max_ejection_percent`.
#[derive(Debug, Default)]
pub(crate) struct EjectionBudget {
    pub(crate) ejected: AtomicUsize,
}

pub(crate) struct Endpoint {
    pub(crate) address: String,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) connections: Box<[Arc<Connection>]>,
    pub(crate) in_flight: AtomicUsize,
    calls: AtomicU64,
    failures: AtomicU64,
    ewma: Mutex<Ewma>,
    outlier: Mutex<Outlier>,
    /// Mirrors "no failure run and no past ejection" in `outlier`, so that a
    /// success, which then has nothing to update, takes no lock.
    outlier_quiet: AtomicBool,
    ejected: AtomicBool,
    not_serving: AtomicBool,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Shared with its connections' drivers.
    pub(crate) keepalive: Arc<KeepaliveTime>,
    /// Its series (`endpoint` label), shared with its connections' drivers.
    pub(crate) metrics: EndpointMetrics,
}

impl Endpoint {
    pub(crate) fn new(
        address: String,
        scheme: Scheme,
        authority: Authority,
        pool_size: usize,
        keepalive: Option<Duration>,
        metrics: EndpointMetrics,
    ) -> Self {
        let pool_size = pool_size.max(1);
        // Added, not set: two channels to one address in one metrics set share
        // the series.
        metrics.pool_size.inc_by(pool_size as i64);
        Self {
            address,
            scheme,
            authority,
            connections: (0..pool_size)
                .map(|_| Arc::new(Connection::new()))
                .collect(),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma: Mutex::default(),
            outlier: Mutex::default(),
            outlier_quiet: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            not_serving: AtomicBool::new(false),
            shutdown: watch::Sender::new(false),
            keepalive: Arc::new(KeepaliveTime::new(keepalive)),
            metrics,
        }
    }

    pub(crate) fn state(&self) -> ConnectivityState {
        ConnectivityState::aggregate(self.connections.iter().map(|c| c.state()))
    }

    /// Whether the balancer may pick it now. Reads the clock only for an endpoint
    /// that is ejected, to see whether its time is up.
    pub(crate) fn is_eligible(&self, budget: &EjectionBudget) -> bool {
        if self.not_serving.load(Ordering::Relaxed) {
            return false;
        }
        if self.ejected.load(Ordering::Acquire) && !self.try_return(budget) {
            return false;
        }
        self.connections
            .iter()
            .any(|c| c.state() == ConnectivityState::Ready)
    }

    /// Ends an ejection whose time is up; `true` if the endpoint is back.
    fn try_return(&self, budget: &EjectionBudget) -> bool {
        let mut o = lock(&self.outlier);
        match o.until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                o.until = None;
                o.consecutive = 0;
                o.healthy_streak = 0;
                self.ejected.store(false, Ordering::Release);
                budget.ejected.fetch_sub(1, Ordering::AcqRel);
                self.metrics.ejected.dec();
                tracing::info!(endpoint = %self.address, "endpoint returns to rotation");
                true
            }
            None => true,
        }
    }

    /// The ready connection with the fewest calls in flight.
    pub(crate) fn pick_connection(&self) -> Option<(&Arc<Connection>, Sender)> {
        let mut best: Option<(&Arc<Connection>, Sender, usize)> = None;
        for c in self.connections.iter() {
            if c.state() != ConnectivityState::Ready {
                continue;
            }
            let load = c.in_flight.load(Ordering::Relaxed);
            if best.as_ref().is_some_and(|(_, _, l)| *l <= load) {
                continue;
            }
            if let Some(sender) = c.sender() {
                best = Some((c, sender, load));
                if load == 0 {
                    break;
                }
            }
        }
        best.map(|(c, s, _)| (c, s))
    }

    /// Asks idle connections to connect.
    pub(crate) fn want(&self) {
        for c in self.connections.iter() {
            c.want();
        }
    }

    pub(crate) fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Peak-EWMA cost: latency estimate × (in-flight + 1). An endpoint with no
    /// sample yet costs as little as possible so that it gets traffic and a sample.
    pub(crate) fn cost(&self) -> f64 {
        let estimate = lock(&self.ewma).estimate;
        estimate * (self.load() as f64 + 1.0)
    }

    pub(crate) fn call_started(&self, connection: &Connection) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        if connection.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.metrics.pool_busy.inc();
        }
    }

    pub(crate) fn call_ended(&self, connection: &Connection) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.metrics.in_flight.dec();
        if connection.call_ended() {
            self.metrics.pool_busy.dec();
        }
    }

    /// Records the time to response headers: peak-EWMA takes a higher sample at
    /// once and decays toward lower ones, so a slow endpoint is avoided quickly and
    /// trusted again slowly.
    pub(crate) fn observe_latency(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let mut e = lock(&self.ewma);
        if sample > e.estimate || e.updated.is_none() {
            e.estimate = sample;
        } else {
            let elapsed = e.updated.map_or(0.0, |u| (now - u).as_secs_f64());
            let w = (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
            e.estimate = e.estimate * w + sample * (1.0 - w);
        }
        e.updated = Some(now);
    }

    /// Records a call's result for outlier ejection and statistics.
    pub(crate) fn record(
        &self,
        result: CallResult,
        outlier: Option<&OutlierConfig>,
        budget: &EjectionBudget,
        endpoints: usize,
    ) {
        let failed = match (result, outlier) {
            (CallResult::ConnectionLost, _) => true,
            (CallResult::Status(code), Some(o)) => crate::policy::contains(o.failure_codes, code),
            (CallResult::Status(code), None) => code == Code::Unavailable,
        };
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let Some(cfg) = outlier else {
            return;
        };
        if !failed && self.outlier_quiet.load(Ordering::Acquire) {
            return;
        }
        let mut o = lock(&self.outlier);
        self.record_outlier(&mut o, failed, cfg, budget, endpoints);
        self.outlier_quiet
            .store(o.consecutive == 0 && o.ejections == 0, Ordering::Release);
    }

    fn record_outlier(
        &self,
        o: &mut Outlier,
        failed: bool,
        cfg: &OutlierConfig,
        budget: &EjectionBudget,
        endpoints: usize,
    ) {
        if !failed {
            o.consecutive = 0;
            if o.ejections > 0 && o.until.is_none() {
                o.healthy_streak += 1;
                // Forgiveness: a run of successes after returning undoes one ejection,
                // so ejection time grows only for endpoints that keep failing.
                if o.healthy_streak >= cfg.consecutive_failures.max(1) {
                    o.ejections -= 1;
                    o.healthy_streak = 0;
                }
            }
            return;
        }
        o.healthy_streak = 0;
        o.consecutive += 1;
        if o.consecutive < cfg.consecutive_failures || o.until.is_some() {
            return;
        }
        let cap = endpoints * cfg.max_ejection_percent as usize / 100;
        let admitted = budget
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return;
        }
        o.ejections += 1;
        let time = cfg
            .base_ejection_time
            .saturating_mul(o.ejections)
            .min(cfg.max_ejection_time);
        // An ejection time past what `Instant` can hold ejects for as long as it can
        // (30 years, as tokio's far future), never panics.
        let now = Instant::now();
        o.until = Some(
            now.checked_add(time)
                .or_else(|| now.checked_add(FAR_FUTURE))
                .unwrap_or(now),
        );
        o.consecutive = 0;
        self.ejected.store(true, Ordering::Release);
        self.metrics.ejections.inc();
        self.metrics.ejected.inc();
        tracing::warn!(endpoint = %self.address, ejection = o.ejections, ?time, "endpoint ejected");
    }

    /// Releases this endpoint's share of the ejection budget when it leaves the set.
    pub(crate) fn release(&self, budget: &EjectionBudget) {
        let o = lock(&self.outlier);
        if o.until.is_some() && self.ejected.swap(false, Ordering::AcqRel) {
            budget.ejected.fetch_sub(1, Ordering::AcqRel);
            self.metrics.ejected.dec();
        }
        self.metrics.pool_size.dec_by(self.connections.len() as i64);
    }

    pub(crate) fn set_not_serving(&self, not_serving: bool) -> bool {
        self.not_serving.swap(not_serving, Ordering::AcqRel) != not_serving
    }

    pub(crate) fn stats(&self) -> EndpointStats {
        let ewma = lock(&self.ewma);
        let o = lock(&self.outlier);
        let now = Instant::now();
        EndpointStats {
            address: self.address.clone(),
            state: self.state(),
            in_flight: self.load(),
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            ewma_latency: ewma
                .updated
                .map(|_| Duration::from_nanos(ewma.estimate as u64)),
            ejected_for: o.until.filter(|u| *u > now).map(|u| u - now),
            not_serving: self.not_serving.load(Ordering::Relaxed),
            connections: self.connections.len(),
            keepalive: self.keepalive.get(),
        }
    }
}
