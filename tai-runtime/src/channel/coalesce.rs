//! Write coalescing for a connection's tasks, without a task hop: a woken task
//! lets the calls starting beside it queue their frames first, so that one
//! `writev` carries several calls (tonic gets the same from its `Buffer` worker,
//! at the price of a cross-thread hop per call). The wait is bounded in rounds and
//! in calls, so a steady stream of calls cannot hold back the ones queued.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use super::connection::Connection;

/// Polls `future` (hyper's request dispatch, or a task hyper spawns: the HTTP/2
/// connection's I/O, a request body's pipe) so that the writes of calls that
/// start together are coalesced. A caller's request wakes these tasks, and
/// tokio runs a task woken by the running one next: polled at once, the
/// connection would flush each call on its own (about one `writev` per call at
/// concurrency 64, where tonic's `Buffer` worker collects several). So when
/// other calls are in flight, a woken task first lets the tasks already ready
/// run (and queue their requests and bodies), then does their work in one go;
/// no task hop is added. A lone call is written at once.
pub(super) async fn coalesced<F: Future>(future: F, conn: &Connection) -> F::Output {
    let mut future = std::pin::pin!(future);
    loop {
        let polled = std::future::poll_fn(|task| Poll::Ready(future.as_mut().poll(task)));
        if let Poll::Ready(out) = polled.await {
            return out;
        }
        woken().await;
        let mut batch = Batch::new(conn.in_flight.load(Ordering::Relaxed));
        while batch.wait() {
            tokio::task::yield_now().await;
            batch.seen(conn.in_flight.load(Ordering::Relaxed));
        }
    }
}

/// Scheduler rounds a woken connection task waits at most for more calls.
///
/// Each round costs the calls already queued the time the worker takes to run
/// every other task ready then (tokio wakes a yielded task when its run queue
/// is empty, or after 61 polls of other tasks): a round can be long on a busy
/// runtime, so the wait is a few rounds, not tens. Batching gains little past
/// this: while calls keep starting in every round, a batch of 8 rounds already
/// holds 8 or more calls per write.
const MAX_COALESCE_ROUNDS: u32 = 8;

/// Calls started or ended since the wake-up after which a batch is full: its
/// write is then shared by enough calls, and waiting longer only delays them.
const MAX_COALESCE_CALLS: usize = 64;

/// Whether a woken connection task keeps yielding for more calls: until a
/// scheduler round passes in which no call started or ended (each starting call
/// wakes the task again, ending a single yield early, so one yield alone would
/// batch two calls at most), but at most [`MAX_COALESCE_ROUNDS`] rounds and
/// [`MAX_COALESCE_CALLS`] calls, so that a steady stream of calls cannot hold
/// back the ones already queued.
#[derive(Debug)]
struct Batch {
    /// Calls in flight on the connection when last looked at.
    in_flight: usize,
    /// Rounds yielded so far.
    rounds: u32,
    /// Calls that started or ended since the wake-up (at least).
    changes: usize,
    /// The last round changed nothing.
    quiet: bool,
}

impl Batch {
    fn new(in_flight: usize) -> Self {
        Self {
            in_flight,
            rounds: 0,
            changes: 0,
            quiet: false,
        }
    }

    /// Whether to yield one more round.
    fn wait(&self) -> bool {
        self.in_flight > 1
            && !self.quiet
            && self.rounds < MAX_COALESCE_ROUNDS
            && self.changes < MAX_COALESCE_CALLS
    }

    /// A round has passed; `in_flight` calls are in flight now.
    fn seen(&mut self, in_flight: usize) {
        let changed = in_flight.abs_diff(self.in_flight);
        self.quiet = changed == 0;
        self.changes += changed;
        self.in_flight = in_flight;
        self.rounds += 1;
    }
}

/// hyper's executor for a connection's tasks: tokio's, each task [`coalesced`].
#[derive(Clone)]
pub(super) struct Coalescing(pub(super) Arc<Connection>);

impl<F> hyper::rt::Executor<F> for Coalescing
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let conn = Arc::clone(&self.0);
        // Boxed: hyper hands every task of a connection over as one enum, as big
        // as its largest variant (the whole HTTP/2 connection, kilobytes), and a
        // request body's pipe is spawned per call. Unboxed, each spawn would copy
        // those kilobytes several times over (into the task, into its cell): one
        // allocation costs less.
        let future = Box::pin(future);
        tokio::spawn(async move { coalesced(future, &conn).await });
    }
}

/// Pending once, then ready: resolves when the task is next polled, that is once
/// something (here: what the connection registered) has woken it.
fn woken() -> impl Future<Output = ()> {
    let mut first = true;
    std::future::poll_fn(move |_| {
        if std::mem::take(&mut first) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::task::Waker;

    use super::*;

    /// Tasks the test runtime polls before it looks at its I/O driver and wakes
    /// the tasks that yielded: the length of a scheduler round when the run
    /// queue never empties (tokio's default is 61).
    const EVENT_INTERVAL: u32 = 8;

    /// Polls of a busy caller task between waking a [`coalesced`] task (while
    /// other calls are in flight) and the poll of the future it wraps. The
    /// caller starts `per_poll` calls on the connection each time it is polled
    /// and wakes itself again at once (as a caller whose responses keep arriving
    /// does), so the run queue never empties. Counted, not timed.
    fn polls_before_polled(per_poll: usize) -> u32 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .event_interval(EVENT_INTERVAL)
            .build()
            .unwrap();
        let conn = Arc::new(Connection::new());
        conn.in_flight.store(2, Ordering::Relaxed);
        let polls = Arc::new(AtomicU64::new(0));
        let parked: Arc<Mutex<Option<Waker>>> = Arc::default();
        let inner = {
            let (polls, parked) = (Arc::clone(&polls), Arc::clone(&parked));
            let mut first = true;
            std::future::poll_fn(move |task| {
                if std::mem::take(&mut first) {
                    *parked.lock().unwrap() = Some(task.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(polls.load(Ordering::SeqCst))
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let caller = {
            let (conn, polls, stop) = (Arc::clone(&conn), Arc::clone(&polls), Arc::clone(&stop));
            std::future::poll_fn(move |task| {
                if stop.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
                conn.in_flight.fetch_add(per_poll, Ordering::Relaxed);
                if n == 3 {
                    parked
                        .lock()
                        .unwrap()
                        .take()
                        .expect("pending by now")
                        .wake();
                }
                task.waker().wake_by_ref();
                Poll::Pending
            })
        };
        runtime.block_on(async {
            let connection = tokio::spawn(async move { coalesced(inner, &conn).await });
            let caller = tokio::spawn(caller);
            let polled_at = connection.await.unwrap();
            stop.store(true, Ordering::SeqCst);
            caller.await.unwrap();
            u32::try_from(polled_at - 3).unwrap()
        })
    }

    #[test]
    fn a_woken_connection_task_waits_a_bounded_number_of_rounds() {
        let quiet = polls_before_polled(0);
        let steady = polls_before_polled(1);
        let burst = polls_before_polled(MAX_COALESCE_CALLS);
        // No call starting: one round to see that, then the work is done.
        assert!(quiet <= EVENT_INTERVAL, "quiet: {quiet} polls of others");
        // A call starting at every poll: it waits for them, but not past the bound.
        let bound = (MAX_COALESCE_ROUNDS + 1) * EVENT_INTERVAL;
        assert!(
            steady > (MAX_COALESCE_ROUNDS - 1) * (EVENT_INTERVAL - 1) && steady <= bound,
            "a call per poll: {steady} polls of others (bound {bound})"
        );
        // A full batch at once: written in the next round.
        assert!(
            burst <= 2 * EVENT_INTERVAL,
            "a full batch: {burst} polls of others"
        );
    }
}
