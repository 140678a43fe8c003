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
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::metrics::{Metrics, ServerMethodMetrics};

/// Distinct methods tracked per layer; calls to further (unknown, peer-chosen)
/// paths are counted together as `unknown/unknown`.
const MAX_TRACKED_METHODS: usize = 1024;

/// How much earlier than the caller's deadline the server gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// Adds deadline enforcement and metrics to a tonic server.
#[derive(Clone, Debug, Default)]
pub struct ServerLayer {
    methods: Arc<MethodTable>,
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
            metrics_off: self.metrics_off,
        }
    }
}

#[derive(Debug, Default)]
struct MethodTable {
    known: RwLock<HashMap<String, Arc<ServerMethodMetrics>>>,
    overflow: std::sync::OnceLock<Arc<ServerMethodMetrics>>,
}

impl MethodTable {
    fn get(&self, path: &str) -> Arc<ServerMethodMetrics> {
        if let Some(m) = self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Arc::clone(m);
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_TRACKED_METHODS {
            return Arc::clone(
                self.overflow.get_or_init(|| {
                    Arc::new(Metrics::global().server_method("unknown", "unknown"))
                }),
            );
        }
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("unknown", path));
        let metrics = Arc::new(Metrics::global().server_method(service, method));
        known.insert(path.to_owned(), Arc::clone(&metrics));
        metrics
    }
}

/// The service [`ServerLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    methods: Arc<MethodTable>,
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
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let metrics = (!self.metrics_off).then(|| self.methods.get(request.uri().path()));
        // A `Uri` clone shares its bytes: no allocation unless the deadline passes.
        let uri = request.uri().clone();
        let start = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = match timeout {
                Some(t) => {
                    match tokio::time::timeout(t.saturating_sub(DEADLINE_MARGIN), call).await {
                        Ok(r) => r,
                        Err(_) => Ok(Status::deadline_exceeded(format!(
                            "{}: the caller's deadline of {t:?} passed before the server answered",
                            uri.path()
                        ))
                        .into_http()),
                    }
                }
                None => call.await,
            };
            if let (Some(m), Ok(response)) = (&metrics, &result) {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes()));
                m.record(code, start.elapsed());
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
