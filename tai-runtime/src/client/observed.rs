//! A whole call inside its tracing span, with its metrics recorded at its end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::{Code, Status};

pin_project! {
    #[project = CallProj]
    enum Call<F, Fut> {
        /// Not polled yet: what starts the call.
        Waiting { start: Option<F> },
        Running { #[pin] future: Fut },
    }
}

pin_project! {
    /// A whole call inside its tracing span, with its metrics recorded at the end.
    ///
    /// A combinator rather than an `async fn`: an `async fn` would keep the call's
    /// future twice (as its argument and as the value it awaits), and that future
    /// is most of a call's memory.
    pub(super) struct Observed<'a, F, Fut> {
        #[pin]
        call: Call<F, Fut>,
        span: tracing::Span,
        start: Option<Instant>,
        metrics: &'a crate::metrics::MethodMetrics,
    }
}

impl<'a, F, Fut> Observed<'a, F, Fut> {
    /// A call that `start` begins when first polled, in `span`, recorded in
    /// `metrics`.
    pub(super) fn new(
        start: F,
        span: tracing::Span,
        metrics: &'a crate::metrics::MethodMetrics,
    ) -> Self {
        Self {
            call: Call::Waiting { start: Some(start) },
            span,
            start: None,
            metrics,
        }
    }
}

impl<Out, F, Fut> Future for Observed<'_, F, Fut>
where
    F: FnOnce(Instant) -> Fut,
    Fut: Future<Output = (Result<Out, Status>, Instant)>,
{
    type Output = Result<Out, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let future = loop {
            match this.call.as_mut().project() {
                CallProj::Waiting { start } => {
                    let begin = Instant::now();
                    *this.start = Some(begin);
                    let start = start.take().expect("started once");
                    this.call.set(Call::Running {
                        future: start(begin),
                    });
                }
                CallProj::Running { future } => break future,
            }
        };
        let (result, end) = std::task::ready!(future.poll(cx));
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        #[cfg(feature = "otel")]
        crate::otel::ended(
            this.span,
            crate::otel::Side::Client,
            code,
            result.as_ref().err().map_or("", Status::message),
        );
        let start = this.start.unwrap_or(end);
        this.metrics
            .record(code, end.saturating_duration_since(start));
        Poll::Ready(result)
    }
}
