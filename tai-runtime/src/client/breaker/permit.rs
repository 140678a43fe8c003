//! A breaker's permission for one call, and what of it survives the call's
//! borrow of its client: [`Permit`] must be recorded (or dropped, which gives a
//! half-open probe slot back), [`Ticket`] is the one-word admission a response
//! stream keeps, [`Detached`] either of the two for a call that outlives its
//! client's borrow.

use std::sync::Arc;

use tokio::time::Instant;
use tonic::Code;

use super::CircuitBreaker;

/// Permission to make one call; hand it back to [`CircuitBreaker::record`].
///
/// A permit dropped without being recorded (the call was cancelled, a losing
/// hedge, a deadline that passed before anything was sent) counts as neither a
/// success nor a failure: nothing was learnt about the backend. If it was a
/// half-open probe, its slot is released, so the next call may probe instead —
/// otherwise a probe lost this way would leave the breaker half-open, refusing
/// every call, for good.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::breaker::{CircuitBreaker, Outcome};
/// use tai_runtime::policy::{BreakerPolicy, CodeSet};
///
/// let breaker = CircuitBreaker::new(BreakerPolicy::new(
///     5,
///     Duration::from_secs(1),
///     Duration::from_secs(30),
///     1,
///     CodeSet::default(),
/// ));
/// let permit = breaker.admit().expect("a new breaker is closed");
/// breaker.record(permit, Outcome::Success);
/// drop(breaker.admit()); // cancelled: neither a success nor a failure
/// ```
#[derive(Debug)]
#[must_use = "record the outcome of an admitted call"]
pub struct Permit<'a> {
    pub(super) breaker: Held<'a>,
    pub(super) ticket: Ticket,
}

/// The breaker a [`Permit`] answers to: borrowed, or held through its `Arc` —
/// a breaker a run-time service config built, which the next config may
/// replace while the call it admitted runs.
#[derive(Debug)]
pub(super) enum Held<'a> {
    Borrowed(&'a CircuitBreaker),
    Shared(Arc<CircuitBreaker>),
}

/// A permit without the borrow of its breaker, for a response stream that
/// outlives its client's borrow: the ticket of a client's compiled breaker
/// (which lives as long as the client's state), or a permit that holds its
/// breaker itself.
#[derive(Debug)]
pub(crate) enum Detached {
    Ticket(Ticket),
    Owned(Permit<'static>),
}

/// What a [`Permit`] remembers of its admission, without the borrow of its
/// breaker: a response stream that outlives its client's borrow keeps this and
/// its client's state, and turns it back into a permit at the end.
///
/// One word, `generation << 1 | probe` (generations fit in 63 bits, as in
/// [`CircuitBreaker::tag`]): a permit that holds its breaker through an `Arc`
/// is then no bigger than a borrowing one with a two-field ticket was, and
/// every attempt in flight carries one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

impl Ticket {
    pub(super) fn new(generation: u64, probe: bool) -> Self {
        Ticket(generation << 1 | u64::from(probe))
    }

    pub(super) fn generation(self) -> u64 {
        self.0 >> 1
    }

    /// Admitted as a half-open probe, whose slot must be given back.
    pub(super) fn probe(self) -> bool {
        self.0 & 1 == 1
    }

    /// The same admission, no longer holding a probe slot: dropping a permit
    /// with it releases nothing.
    pub(super) fn disarmed(self) -> Self {
        Ticket(self.0 & !1)
    }
}

impl Permit<'_> {
    /// The admission without the borrow; [`CircuitBreaker::resume`] turns it back
    /// into a permit (and dropping that releases a probe slot as usual).
    pub(crate) fn into_ticket(mut self) -> Ticket {
        let ticket = self.ticket;
        // Disarmed: dropping it now releases nothing.
        self.ticket = self.ticket.disarmed();
        ticket
    }

    pub(super) fn breaker(&self) -> &CircuitBreaker {
        match &self.breaker {
            Held::Borrowed(b) => b,
            Held::Shared(b) => b,
        }
    }

    /// Records the outcome of the admitted call, which ended with `code`, in
    /// the breaker that admitted it; `clock` is read only if the outcome must
    /// be placed in time.
    pub(crate) fn finish(mut self, code: Code, clock: impl FnOnce() -> Instant) {
        let ticket = self.ticket;
        self.ticket = self.ticket.disarmed();
        let breaker = self.breaker();
        breaker.record_with(ticket, breaker.classify(code), clock);
    }

    /// The permit without the borrow of its breaker (see [`Detached`]).
    pub(crate) fn detach(mut self) -> Detached {
        if let Held::Shared(b) = &self.breaker {
            let breaker = Held::Shared(Arc::clone(b));
            let ticket = self.ticket;
            self.ticket = self.ticket.disarmed();
            return Detached::Owned(Permit { breaker, ticket });
        }
        Detached::Ticket(self.into_ticket())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.ticket.probe() {
            self.breaker().release_probe(self.ticket.generation());
        }
    }
}
