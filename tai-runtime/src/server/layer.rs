//! [`ServerLayer`]: the [deadline](super::deadline), [metrics](super::metrics)
//! and [context](super::ContextLayer) layers as one, sharing the clock read of
//! each call.
//!
//! Stacked as two layers, metrics outside (so that they count the
//! DEADLINE_EXCEEDED answers), each call reads the clock twice when it has a
//! deadline: once to time the call, once to place the deadline. Handing the
//! instant from one layer to the other through the request's extensions would
//! cost a heap allocation per call (an extension is boxed), more than the clock
//! read it saves. So this layer holds both and calls them with one instant; its
//! future is the two layers' futures, nested, with no `Box` per call.

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service};

use super::context::{ContextLayer, Traced, serve};
use super::deadline::{self, Deadline, DeadlineLayer};
use super::metrics::{MetricsLayer, Recorder};
use super::outcome::{OutcomeBody, OutcomeFuture};
use crate::context::Scoped;
use crate::metrics::Metrics;

/// Adds deadline enforcement, metrics and the call context to a tonic server:
/// [`DeadlineLayer`] inside [`MetricsLayer`], the handler inside its
/// [`CallContext`](crate::context::CallContext) ([`ContextLayer`]), with one
/// clock read per call for all three.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let (_, health) = tonic_health::server::health_reporter();
/// use tai_runtime::server::ServerLayer;
///
/// tonic::transport::Server::builder()
///     .layer(ServerLayer::new())
///     .add_service(health)
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerLayer {
    deadline: DeadlineLayer,
    context: ContextLayer,
    /// `None`: metrics off.
    metrics: Option<MetricsLayer>,
}

impl ServerLayer {
    /// Deadlines and metrics on, metrics in [`Metrics::global`].
    pub fn new() -> Self {
        Self {
            deadline: DeadlineLayer::new(),
            context: ContextLayer::new(),
            metrics: Some(MetricsLayer::new()),
        }
    }

    /// Deadlines and metrics on, metrics in `metrics` (made with [`Metrics::new`]
    /// over a registry of yours) instead of the global ones.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use tai_runtime::metrics::Metrics;
    /// use tai_runtime::server::ServerLayer;
    ///
    /// let mut registry = Registry::default();
    /// let layer = ServerLayer::with_metrics(&Metrics::new(&mut registry));
    /// ```
    pub fn with_metrics(metrics: &Metrics) -> Self {
        Self {
            deadline: DeadlineLayer::new(),
            context: ContextLayer::new(),
            metrics: Some(MetricsLayer::with_metrics(metrics)),
        }
    }

    /// Outgoing calls made while handling a call end `margin` before its
    /// caller's deadline (default [`DEFAULT_DEADLINE_MARGIN`]); see
    /// [`ContextLayer::deadline_margin`].
    ///
    /// [`DEFAULT_DEADLINE_MARGIN`]: crate::context::DEFAULT_DEADLINE_MARGIN
    pub fn deadline_margin(mut self, margin: std::time::Duration) -> Self {
        self.context = self.context.deadline_margin(margin);
        self
    }

    /// Turns metrics off (deadlines stay), e.g. to measure their cost.
    pub fn without_metrics(mut self) -> Self {
        self.metrics = None;
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner: self.deadline.layer(inner),
            context: self.context,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`ServerLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: Deadline<S>,
    context: ContextLayer,
    metrics: Option<MetricsLayer>,
}

/// The future of a call through [`ServerService`]: the handler's future under the
/// caller's deadline, inside the call's context, its answer's body recording the
/// call's metrics when it ends.
pub type ServerFuture<F> = OutcomeFuture<Scoped<Traced<deadline::ResponseFuture<F>>>>;

/// Any response body `B` with an empty `Default` (tonic's `Body`, for one), as
/// [`Deadline`].
impl<S, B> Service<http::Request<tonic::body::Body>> for ServerService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    B: Default,
{
    type Response = http::Response<OutcomeBody<deadline::ResponseBody<B>>>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let recorder = match &self.metrics {
            Some(metrics) => metrics.recorder(&request),
            None => Recorder::Off,
        };
        let start = Instant::now();
        let (timeout, trace) = super::context::read_headers(request.headers());
        let context = self.context.at(trace, timeout, || start);
        let (call, outcome) = serve(context, request, |request| {
            self.inner.call_from(request, timeout, || start)
        });
        OutcomeFuture::new(call, outcome.metrics(recorder, start))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use tonic::body::Body;
    use tower::{ServiceExt, service_fn};

    use super::*;

    /// A handler that never answers.
    fn stuck()
    -> impl Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> {
        service_fn(|_| std::future::pending::<Result<http::Response<Body>, Infallible>>())
    }

    /// Calls `/{name}/Slow` with a 100 ms deadline and checks that the answer is
    /// DEADLINE_EXCEEDED, a millisecond early; with `counted`, that the call is in
    /// the metrics.
    async fn overdue<S, B>(service: S, name: &str, counted: bool)
    where
        S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>,
    {
        let request = http::Request::builder()
            .uri(format!("http://server/{name}/Slow"))
            .header("grpc-timeout", "100m")
            .body(Body::empty())
            .unwrap();
        let start = Instant::now();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
        assert_eq!(start.elapsed(), Duration::from_millis(99));
        let line = format!(
            r#"tai_server_calls_total{{service="{name}",method="Slow",code="DeadlineExceeded"}} 1"#
        );
        let metrics = Metrics::global().encode();
        assert_eq!(metrics.contains(&line), counted, "{line} in {metrics}");
    }

    #[tokio::test(start_paused = true)]
    async fn combined_layer_answers_at_the_deadline_and_counts_it() {
        overdue(ServerLayer::new().layer(stuck()), "combined.Test", true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn split_layers_do_the_same() {
        let service = MetricsLayer::new().layer(DeadlineLayer::new().layer(stuck()));
        overdue(service, "split.Test", true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_metrics_only_the_deadline_runs() {
        let service = ServerLayer::new().without_metrics().layer(stuck());
        overdue(service, "quiet.Test", false).await;
    }
}
