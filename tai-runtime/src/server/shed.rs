//! Load shedding: a limit on the calls a server runs at once, over which a call
//! is refused at once with RESOURCE_EXHAUSTED, never queued.
//!
//! A queue in front of a saturated server only adds waiting to every call (and
//! memory the clients control); refusing lets a client's retry policy, or its
//! balancer, take the call elsewhere. One atomic counter both counts the calls
//! in flight (for the drain report) and enforces the limit: a call is in flight
//! from the moment it is admitted until hyper drops its response body (once
//! sent, or the peer gone), so a streaming call counts for as long as it
//! streams.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

/// The number of calls a server has in flight, readable while it runs.
///
/// ```
/// let server = tai_runtime::server::Server::builder();
/// let in_flight = server.in_flight();
/// assert_eq!(in_flight.get(), 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Calls in flight now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Admits calls up to a limit.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    in_flight: InFlight,
    /// `usize::MAX`: no limit.
    limit: usize,
}

impl Admission {
    pub(crate) fn new(in_flight: InFlight, limit: Option<usize>) -> Self {
        Self {
            in_flight,
            limit: limit.unwrap_or(usize::MAX),
        }
    }

    /// Admits a call on a connection whose calls `connection` counts; the
    /// ticket counts it until dropped.
    pub(crate) fn admit(&self, connection: &Arc<AtomicUsize>) -> Result<Ticket, Status> {
        let counter = &self.in_flight.0;
        let admitted = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(Status::resource_exhausted(format!(
                "the server is running its limit of {} calls at once; try again later",
                self.limit
            )));
        }
        connection.fetch_add(1, Ordering::SeqCst);
        Ok(Ticket {
            server: Arc::clone(counter),
            connection: Arc::clone(connection),
        })
    }
}

/// One admitted call: counted on its server and its connection until dropped.
pub(crate) struct Ticket {
    server: Arc<AtomicUsize>,
    connection: Arc<AtomicUsize>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket")
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.server.fetch_sub(1, Ordering::SeqCst);
        self.connection.fetch_sub(1, Ordering::SeqCst);
    }
}

pin_project! {
    /// An admitted call's response body: the call counts as in flight until
    /// the body is dropped, which hyper does as soon as it has sent the body's
    /// end (or the peer is gone). It only passes the frames on.
    pub(crate) struct Counted<B> {
        #[pin]
        body: B,
        ticket: Option<Ticket>,
    }
}

impl<B> Counted<B> {
    /// `body`, counted by `ticket` (`None`: a call never admitted).
    pub(crate) fn new(body: B, ticket: Option<Ticket>) -> Self {
        Self { body, ticket }
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_over_the_limit_are_refused_and_a_finished_call_frees_its_place() {
        let admission = Admission::new(InFlight::default(), Some(2));
        let connection = Arc::new(AtomicUsize::new(0));
        let first = admission.admit(&connection).unwrap();
        let _second = admission.admit(&connection).unwrap();
        let refused = admission.admit(&connection).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("limit of 2 calls"), "{refused}");
        assert_eq!(connection.load(Ordering::SeqCst), 2);
        drop(first);
        assert_eq!(admission.in_flight.get(), 1);
        assert!(admission.admit(&connection).is_ok());
    }
}
