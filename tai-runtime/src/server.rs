//! Server-side layers: deadlines that end in DEADLINE_EXCEEDED, and metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let (_, health) = tonic_health::server::health_reporter();
//! use tai_runtime::server::ServerLayer;
//!
//! tonic::transport::Server::builder()
//!     .layer(ServerLayer::new())
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Why a deadline layer when tonic reads `grpc-timeout` itself: tonic ends such a
//! call with CANCELLED ("Timeout expired"); gRPC says DEADLINE_EXCEEDED, and
//! clients retry or alert on the difference. This layer answers DEADLINE_EXCEEDED
//! a millisecond before the caller's deadline (so the answer arrives in time, and
//! before tonic's own timer fires) and drops the handler's future, which stops work
//! nobody waits for.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::metrics::{Metrics, ServerMethodMetrics};
use crate::timer::{DeadlineTimer, Registration};

/// Distinct methods tracked per layer; calls to further paths are counted
/// together as `unknown/unknown`. Only paths a service answered (anything but
/// UNIMPLEMENTED) are tracked, so a peer cannot fill the table with made-up ones.
const MAX_TRACKED_METHODS: usize = 1024;

/// How much earlier than the caller's deadline the server gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// Adds deadline enforcement and metrics to a tonic server.
#[derive(Clone, Debug, Default)]
pub struct ServerLayer {
    methods: Arc<MethodTable>,
    /// Every call's deadline on one timer (see `timer.rs`): tonic's server arms a
    /// timer per call for `grpc-timeout` already; this layer adds none.
    deadlines: Arc<DeadlineTimer>,
    metrics_off: bool,
}

impl ServerLayer {
    /// Deadlines and metrics on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns metrics off (deadlines stay), e.g. to measure their cost.
    pub fn without_metrics(mut self) -> Self {
        self.metrics_off = true;
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            methods: Arc::clone(&self.methods),
            deadlines: Arc::clone(&self.deadlines),
            metrics_off: self.metrics_off,
        }
    }
}

type MethodMap = HashMap<Box<str>, Arc<ServerMethodMetrics>, foldhash::fast::RandomState>;

/// Metric handles by request path. Read on every call without a lock (an
/// `ArcSwap` snapshot and a fast hash); written copy-on-write, once per method.
#[derive(Debug, Default)]
struct MethodTable {
    known: ArcSwap<MethodMap>,
    insert: Mutex<()>,
    overflow: OnceLock<Arc<ServerMethodMetrics>>,
}

impl MethodTable {
    fn get(&self, path: &str) -> Option<Arc<ServerMethodMetrics>> {
        self.known.load().get(path).cloned()
    }

    /// The handles for a path first seen now, answered with `code`.
    fn resolve(&self, path: &str, code: Code) -> Arc<ServerMethodMetrics> {
        let overflow =
            || {
                Arc::clone(self.overflow.get_or_init(|| {
                    Arc::new(Metrics::global().server_method("unknown", "unknown"))
                }))
            };
        if code == Code::Unimplemented {
            return overflow();
        }
        let _writer = crate::sync::lock(&self.insert);
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
        let metrics = Arc::new(Metrics::global().server_method(service, method));
        let mut next = MethodMap::clone(&known);
        next.insert(path.into(), Arc::clone(&metrics));
        self.known.store(Arc::new(next));
        metrics
    }
}

/// The service [`ServerLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    methods: Arc<MethodTable>,
    deadlines: Arc<DeadlineTimer>,
    metrics_off: bool,
}

/// Parses a `grpc-timeout` header value (`"100m"`, `"2S"`, ...).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S> Service<http::Request<tonic::body::Body>> for ServerService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let metrics = if self.metrics_off {
            Metered::Off
        } else {
            match self.methods.get(request.uri().path()) {
                Some(m) => Metered::Known(m),
                None => Metered::FirstSeen(Arc::clone(&self.methods)),
            }
        };
        // Kept for the deadline's message and a first-seen path's name. A `Uri`
        // clone shares its bytes.
        let uri = (timeout.is_some() || matches!(metrics, Metered::FirstSeen(_)))
            .then(|| request.uri().clone());
        let start = Instant::now();
        ServerFuture {
            call: self.inner.call(request),
            deadline: timeout.map(|t| start + t.saturating_sub(DEADLINE_MARGIN)),
            deadlines: timeout.map(|_| Arc::clone(&self.deadlines)),
            timer: None,
            timeout: timeout.unwrap_or_default(),
            start,
            metrics,
            uri,
        }
    }
}

#[derive(Debug)]
enum Metered {
    Off,
    Known(Arc<ServerMethodMetrics>),
    /// Not in the table yet: resolved when the answer shows the path is served.
    FirstSeen(Arc<MethodTable>),
}

pin_project! {
    /// The future of a call through [`ServerService`]: the handler's future under
    /// the caller's deadline, with the call's metrics recorded when it answers.
    pub struct ServerFuture<F> {
        #[pin]
        call: F,
        // When to give up, and the layer's timer until the call registers with it
        // (the registration then holds it).
        deadline: Option<Instant>,
        deadlines: Option<Arc<DeadlineTimer>>,
        timer: Option<Registration<Arc<DeadlineTimer>>>,
        timeout: Duration,
        start: Instant,
        metrics: Metered,
        uri: Option<http::Uri>,
    }
}

impl<F, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let path = || this.uri.as_ref().map_or("", |u| u.path());
        let result = match this.call.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => match this.deadline.map(|at| {
                let deadlines = &mut *this.deadlines;
                DeadlineTimer::poll_expired(
                    this.timer,
                    || deadlines.take().expect("taken once, at registration"),
                    at,
                    cx,
                )
            }) {
                Some(Poll::Ready(())) => Ok(Status::deadline_exceeded(format!(
                    "{}: the caller's deadline of {:?} passed before the server answered",
                    path(),
                    this.timeout
                ))
                .into_http()),
                _ => return Poll::Pending,
            },
        };
        *this.timer = None;
        if let Ok(response) = &result {
            let code = || {
                response
                    .headers()
                    .get("grpc-status")
                    .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes()))
            };
            let elapsed = || this.start.elapsed();
            match &*this.metrics {
                Metered::Off => {}
                Metered::Known(m) => m.record(code(), elapsed()),
                Metered::FirstSeen(table) => {
                    let code = code();
                    table.resolve(path(), code).record(code, elapsed());
                }
            }
        }
        Poll::Ready(result)
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

    #[test]
    fn parses_grpc_timeout() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"123456789n"), None, "at most 8 digits");
        assert_eq!(parse_grpc_timeout(b"m"), None);
        assert_eq!(parse_grpc_timeout(b"10x"), None);
        assert_eq!(parse_grpc_timeout(b"-1S"), None);
    }
}
