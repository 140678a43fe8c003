//! One call's way into the server: the per-connection service hyper calls.
//!
//! It puts the connection's [`ConnectInfo`] (and tonic's `TcpConnectInfo`) into
//! the request, admits the call or sheds it ([`Admission`]), holds the request
//! messages to their size limit (the response's is held around the routes, see
//! [`limits`](super::limits)), and counts the call — on the server, for the
//! drain and the shedding, and on its connection, for the keepalive police —
//! until hyper drops its response body, once sent ([`Counted`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::Service;
use tower::util::Oneshot;

use super::accept::ConnectInfo;
use super::deadline;
use super::limits::{self, Limit, RequestBody};
use super::outcome::OutcomeBody;
use super::shed::{Admission, Counted, Ticket};

/// A response body as the routes answer it: its messages held to the size
/// limit, under the caller's deadline and reporting the call's outcome (the
/// last two only with tai's layer).
pub(crate) type Answer = OutcomeBody<deadline::ResponseBody<limits::ResponseBody<Body>>>;

/// `body` as the answer of a server without tai's layer, or of a call it
/// refuses itself: neither limited nor reported.
pub(crate) fn unreported(body: limits::ResponseBody<Body>) -> Answer {
    OutcomeBody::unreported(deadline::ResponseBody::unlimited(body))
}

/// What every connection of a server shares.
#[derive(Debug)]
pub(crate) struct Calls {
    pub(crate) admission: Admission,
    pub(crate) request: Limit,
}

/// The service of one connection, in front of the server's routes `S`.
#[derive(Debug)]
pub(crate) struct CallService<S> {
    inner: S,
    calls: Arc<Calls>,
    info: ConnectInfo,
    /// Calls in flight on this connection.
    connection: Arc<AtomicUsize>,
}

impl<S> CallService<S> {
    pub(crate) fn new(
        inner: S,
        calls: Arc<Calls>,
        info: ConnectInfo,
        connection: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            inner,
            calls,
            info,
            connection,
        }
    }
}

/// A response as this service sends it.
pub(crate) type CallResponse = http::Response<Counted<Answer>>;

impl<S> hyper::service::Service<http::Request<Incoming>> for CallService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Answer>, Error = Infallible> + Clone,
{
    type Response = CallResponse;
    type Error = Infallible;
    type Future = CallFuture<S>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let ticket = match self.calls.admission.admit(&self.connection) {
            Ok(ticket) => ticket,
            Err(status) => {
                tracing::debug!("shed a call: {}", status.message());
                return CallFuture::Refused {
                    response: Some(status.into_http()),
                };
            }
        };
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(self.info.tcp());
        parts.extensions.insert(self.info.clone());
        let body = Body::new(RequestBody::new(body, self.calls.request));
        let call =
            tower::ServiceExt::oneshot(self.inner.clone(), http::Request::from_parts(parts, body));
        CallFuture::Admitted {
            call,
            ticket: Some(ticket),
        }
    }
}

pin_project! {
    /// The future of one call through [`CallService`].
    #[project = CallProjection]
    pub(crate) enum CallFuture<S>
    where
        S: Service<http::Request<Body>>,
    {
        Refused { response: Option<http::Response<Body>> },
        Admitted {
            #[pin]
            call: Oneshot<S, http::Request<Body>>,
            ticket: Option<Ticket>,
        },
    }
}

impl<S> Future for CallFuture<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Answer>, Error = Infallible>,
{
    type Output = Result<CallResponse, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallProjection::Refused { response } => {
                let response = response.take().expect("polled after completion");
                // Refused before a ticket: nothing held, nothing limited.
                Poll::Ready(Ok(response.map(|body| {
                    Counted::new(unreported(limits::ResponseBody::unlimited(body)), None)
                })))
            }
            CallProjection::Admitted { call, ticket } => {
                let Ok(answer) = std::task::ready!(call.poll(cx));
                Poll::Ready(Ok(answer.map(|body| Counted::new(body, ticket.take()))))
            }
        }
    }
}
