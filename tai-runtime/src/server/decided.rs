//! The future of a layer that decides a call before the service sees it (rate
//! limit, authentication): the service's own future, or a refusal that is
//! ready at once.
//!
//! Why it is shaped so: a refused call never reaches the service, and an
//! admitted one should cost nothing here. A two-state enum, not a box, so an
//! admitted call pays no allocation; the refusal is an ordinary trailers-only
//! gRPC answer (HTTP 200, `grpc-status` and its metadata in the headers).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tonic::Status;

pin_project! {
    /// The future of a call through a layer that admits or refuses it up front:
    /// the service's own, or a refusal that is ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Admitted { #[pin] future: F },
        Refused { status: Option<Status> },
    }
}

impl<F> ResponseFuture<F> {
    /// The call goes on: the service's `future`.
    pub(crate) fn admitted(future: F) -> Self {
        Self {
            state: State::Admitted { future },
        }
    }

    /// The call is answered with `status`, without the service.
    pub(crate) fn refused(status: Status) -> Self {
        Self {
            state: State::Refused {
                status: Some(status),
            },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Admitted { .. } => "Admitted",
            State::Refused { .. } => "Refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { future } => future.poll(cx),
            StateProj::Refused { status } => {
                let status = status
                    .take()
                    .unwrap_or_else(|| Status::internal("response polled after completion"));
                Poll::Ready(Ok(status.into_http()))
            }
        }
    }
}
