//! Server metrics: every call counted by method and status code, and timed to
//! the end of its response (`tai_server_calls`, `tai_server_call_duration_seconds`
//! in [`Metrics::global`], or in the [`Metrics`] given to
//! [`MetricsLayer::with_metrics`]).
//!
//! A call is recorded when its response ends, under the status it ends with
//! (see [`outcome`](super::outcome)): a stream failing after some messages
//! counts under its error, and a stream's duration is its whole length.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let (_, health) = tonic_health::server::health_reporter();
//! use tai_runtime::server::metrics::MetricsLayer;
//!
//! tonic::transport::Server::builder()
//!     .layer(MetricsLayer::new())
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Why it is shaped so: the method comes from the request path, which a peer
//! chooses, and labels must stay bounded. So a path gets its own handles only
//! once a service has answered it with anything but UNIMPLEMENTED, and at most
//! 1024 of them per layer; every other call is counted as
//! `unknown/unknown`. Looking the handles up is on every call, so the table is
//! read without a lock (an `ArcSwap` snapshot and a fast hash) and written
//! copy-on-write, once per method; recording is then a few atomic additions,
//! from a concrete future and body (no `Box` per call).
//!
//! Put it outside the [deadline](super::deadline) and
//! [rate limit](super::rate_limit) layers (add it first), so that the answers
//! they give (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) are counted too.
//! [`ServerLayer`](super::ServerLayer) does so for deadlines, with one clock read
//! per call for both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tonic::Code;
use tower::{Layer, Service};

use super::outcome::{Outcome, OutcomeBody, OutcomeFuture};
use crate::metrics::{Metrics, ServerMethodMetrics};
use crate::sync::lock;

/// Distinct methods tracked per layer; calls to further paths are counted
/// together as `unknown/unknown`. Only paths a service answered (anything but
/// UNIMPLEMENTED) are tracked, so a peer cannot fill the table with made-up ones.
const MAX_TRACKED_METHODS: usize = 1024;

/// Records every call's status code and latency; see the [module docs](self).
///
/// Clones, and every service the layer wraps, share one table of methods.
#[derive(Clone, Debug, Default)]
pub struct MetricsLayer {
    methods: Arc<MethodTable>,
}

impl MetricsLayer {
    /// A layer with its own table of methods, recording into
    /// [`Metrics::global`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer with its own table of methods, recording into `metrics` (made with
    /// [`Metrics::new`] over a registry of yours) instead of the global ones.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use tai_runtime::metrics::Metrics;
    /// use tai_runtime::server::metrics::MetricsLayer;
    ///
    /// let mut registry = Registry::default();
    /// let layer = MetricsLayer::with_metrics(&Metrics::new(&mut registry));
    /// ```
    pub fn with_metrics(metrics: &Metrics) -> Self {
        Self {
            methods: Arc::new(MethodTable::recording_into(metrics.clone())),
        }
    }

    /// What a call to `request`'s path records into.
    pub(super) fn recorder<B>(&self, request: &http::Request<B>) -> Recorder {
        match self.methods.get(request.uri().path()) {
            Some(m) => Recorder::Known(m),
            // A `Uri` clone shares its bytes.
            None => {
                Recorder::FirstSeen(Box::new((Arc::clone(&self.methods), request.uri().clone())))
            }
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            layer: self.clone(),
        }
    }
}

type MethodMap = HashMap<Box<str>, Arc<ServerMethodMetrics>, foldhash::fast::RandomState>;

/// Metric handles by request path. Read on every call without a lock (an
/// `ArcSwap` snapshot and a fast hash); written copy-on-write, once per method.
#[derive(Debug)]
pub(super) struct MethodTable {
    /// Where the handles are resolved.
    metrics: Metrics,
    known: ArcSwap<MethodMap>,
    insert: Mutex<()>,
    overflow: OnceLock<Arc<ServerMethodMetrics>>,
}

impl Default for MethodTable {
    fn default() -> Self {
        Self::recording_into(Metrics::global().clone())
    }
}

impl MethodTable {
    fn recording_into(metrics: Metrics) -> Self {
        Self {
            metrics,
            known: ArcSwap::default(),
            insert: Mutex::new(()),
            overflow: OnceLock::new(),
        }
    }

    fn get(&self, path: &str) -> Option<Arc<ServerMethodMetrics>> {
        self.known.load().get(path).cloned()
    }

    /// The handles of `unknown/unknown`: the calls to paths not tracked.
    fn overflow(&self) -> &Arc<ServerMethodMetrics> {
        self.overflow
            .get_or_init(|| Arc::new(self.metrics.server_method("unknown", "unknown")))
    }

    /// The handles for a path first seen now, answered with `code`.
    fn resolve(&self, path: &str, code: Code) -> Arc<ServerMethodMetrics> {
        let overflow = || Arc::clone(self.overflow());
        if code == Code::Unimplemented {
            return overflow();
        }
        let _writer = lock(&self.insert);
        let known = self.known.load_full();
        if let Some(m) = known.get(path) {
            return Arc::clone(m);
        }
        if known.len() >= MAX_TRACKED_METHODS {
            return overflow();
        }
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("unknown", path));
        let metrics = Arc::new(self.metrics.server_method(service, method));
        let mut next = MethodMap::clone(&known);
        next.insert(path.into(), Arc::clone(&metrics));
        self.known.store(Arc::new(next));
        metrics
    }
}

/// The service [`MetricsLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Metered<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<OutcomeBody<ResBody>>;
    type Error = S::Error;
    type Future = OutcomeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let outcome = Outcome::default().metrics(self.layer.recorder(&request), Instant::now());
        OutcomeFuture::new(self.inner.call(request), outcome)
    }
}

/// Where a call's outcome is recorded.
#[derive(Debug)]
pub(super) enum Recorder {
    /// Nowhere: [`ServerLayer::without_metrics`](super::ServerLayer::without_metrics).
    Off,
    Known(Arc<ServerMethodMetrics>),
    /// Not in the table yet: resolved when the answer shows the path is served.
    /// Boxed (rare: once per method, and calls to unknown paths), so that every
    /// response, which carries its recorder to its end, stays small.
    FirstSeen(Box<(Arc<MethodTable>, http::Uri)>),
}

impl Recorder {
    pub(super) fn record(&self, code: Code, start: Instant) {
        match self {
            Recorder::Off => {}
            Recorder::Known(m) => m.record(code, start.elapsed()),
            Recorder::FirstSeen(first) => {
                let (table, uri) = &**first;
                table
                    .resolve(uri.path(), code)
                    .record(code, start.elapsed());
            }
        }
    }

    /// Records a call that ended before its method answered (a peer gone): under
    /// the method if it is known, else as `unknown/unknown`, since nothing shows
    /// the path is served.
    pub(super) fn record_unanswered(&self, code: Code, start: Instant) {
        match self {
            Recorder::FirstSeen(first) => first.0.overflow().record(code, start.elapsed()),
            known => known.record(code, start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_paths_are_tracked() {
        let table = MethodTable::default();
        for i in 0..10 {
            table.resolve(&format!("/made.Up/M{i}"), Code::Unimplemented);
        }
        assert_eq!(
            table.known.load().len(),
            0,
            "UNIMPLEMENTED paths share one entry"
        );
        let served = table.resolve("/test.Echo/Unary", Code::NotFound);
        assert!(Arc::ptr_eq(
            &served,
            &table.get("/test.Echo/Unary").unwrap()
        ));
        assert_eq!(table.known.load().len(), 1);
    }

    /// A service that fails instead of answering is counted as UNKNOWN when it
    /// fails (under its method once the method has answered, as
    /// `unknown/unknown` before), not as CANCELLED when its future is dropped.
    #[tokio::test]
    async fn a_failing_service_counts_as_unknown_not_cancelled() {
        use tower::ServiceExt;

        let mut registry = prometheus_client::registry::Registry::default();
        let layer = MetricsLayer::with_metrics(&Metrics::new(&mut registry));
        let service = tower::service_fn(|request: http::Request<()>| async move {
            if request.uri().path().ends_with("/Answers") {
                Ok(tonic::Status::new(Code::Ok, "").into_http::<()>())
            } else {
                Err(std::io::Error::other("no answer"))
            }
        });
        let call = |path: &'static str| {
            layer
                .layer(service)
                .oneshot(http::Request::builder().uri(path).body(()).unwrap())
        };
        assert!(call("/test.Echo/Answers").await.is_ok());
        assert!(call("/test.Echo/Fails").await.is_err());

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let count = |labels: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("tai_server_calls_total{{{labels}}} ")))
                .map(str::to_owned)
        };
        let answers = r#"service="test.Echo",method="Answers""#;
        assert_eq!(
            count(&format!(r#"{answers},code="Ok""#)).as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            count(r#"service="unknown",method="unknown",code="Unknown""#).as_deref(),
            Some("1"),
            "{text}"
        );
        assert!(!text.contains(r#"method="Fails""#), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.contains("Cancelled") && l.ends_with(" 1")),
            "{text}"
        );
    }
}
