//! One timer for all the deadlines of a client's calls.
//!
//! A tokio `Sleep` per call costs a timer-wheel insert and removal on every call
//! and, measured with `perf stat` at concurrency 64, an IO-driver unpark (an
//! eventfd `write`) for about one call in five — tonic's `set_timeout` pays the
//! same. Yet a client's deadlines arrive almost in order: same timeout, later
//! start, so each new deadline is later than every one already waiting. One timer
//! armed for the earliest deadline serves them all.
//!
//! So a call registers its deadline and waker in the client's table (a slab under
//! a mutex: no allocation once the table has grown to the concurrency), and one
//! task per client, the sweeper, sleeps until the earliest deadline, marks the
//! calls whose deadline has passed and wakes them. The sweeper re-arms only when a
//! call registers a deadline earlier than the one it waits for (after an idle
//! period, or a caller's shorter `Request::set_timeout`), and
//! otherwise wakes about once per timeout period. Deadlines stay exact: the
//! sweeper's timer is a tokio timer at the earliest deadline, not a tick.
//!
//! A sweeper is per runtime: a call is swept by the sweeper of the runtime it
//! registered on, so a client shared by several runtimes (say, a current-thread
//! runtime that is no longer driven, and another one) never leaves a call waiting
//! on a timer nobody drives. A sweeper with nothing to wait for ends after
//! [`IDLE_EXIT`]; one dropped with its runtime wakes its calls, which register
//! again wherever they are polled next. All sweepers end when the client (its
//! [`DeadlineTimer`]) is dropped.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

/// How long a sweeper with no call to wait for stays before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(1);

/// The deadline table of one client, and the handle that keeps its sweepers alive.
#[derive(Debug, Default)]
pub(crate) struct DeadlineTimer {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// One per runtime with a sweeper.
    sweepers: Vec<SweeperEntry>,
    /// The client is gone: sweepers end once they have nothing to wait for.
    closed: bool,
}

#[derive(Debug)]
struct SweeperEntry {
    runtime: Id,
    /// The deadline it is armed for; `None` while it waits for none.
    armed: Option<Instant>,
    /// Its waker, once it has been polled.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Slot {
    /// Held by a registration (else on the free list). A registration frees its
    /// slot only when it is dropped, so a slot is never reused under it.
    used: bool,
    deadline: Instant,
    /// The runtime whose sweeper watches it.
    runtime: Id,
    waker: Option<Waker>,
    expired: bool,
}

/// A call's place in the table; leaving it (drop) frees the slot. `T` is how the
/// call holds the timer: a borrow (client calls borrow their client) or an `Arc`
/// (a server layer's `'static` futures).
#[derive(Debug)]
pub(crate) struct Registration<T: Deref<Target = DeadlineTimer>> {
    timer: T,
    index: usize,
}

impl DeadlineTimer {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.shared.lock()
    }

    /// Whether `deadline` has passed, for a call that registers (the first time,
    /// into `registration`, with the timer `timer` gives) to be woken when it
    /// does. Reads no clock: the sweeper decides. Must be called inside a tokio
    /// runtime.
    pub(crate) fn poll_expired<T: Deref<Target = DeadlineTimer>>(
        registration: &mut Option<Registration<T>>,
        timer: impl FnOnce() -> T,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let Some(r) = registration else {
            let timer = timer();
            let runtime = Handle::current();
            let slot = Slot {
                used: true,
                deadline,
                runtime: runtime.id(),
                waker: Some(cx.waker().clone()),
                expired: false,
            };
            let mut table = timer.lock();
            let index = match table.free.pop() {
                Some(index) => {
                    table.slots[index] = slot;
                    index
                }
                None => {
                    table.slots.push(slot);
                    table.slots.len() - 1
                }
            };
            timer.ensure_sweeper(&mut table, &runtime, deadline);
            drop(table);
            *registration = Some(Registration { timer, index });
            return Poll::Pending;
        };
        let mut table = r.timer.lock();
        let slot = &mut table.slots[r.index];
        if slot.expired {
            return Poll::Ready(());
        }
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        let watched = slot.runtime;
        if !table.sweepers.iter().any(|s| s.runtime == watched) {
            // Its sweeper went away with its runtime: move to this one.
            let runtime = Handle::current();
            table.slots[r.index].runtime = runtime.id();
            r.timer.ensure_sweeper(&mut table, &runtime, deadline);
        }
        Poll::Pending
    }

    /// Starts a sweeper on `runtime` if it has none, or has it re-arm if
    /// `deadline` is earlier than the one it waits for.
    fn ensure_sweeper(&self, table: &mut Table, runtime: &Handle, deadline: Instant) {
        let id = runtime.id();
        match table.sweepers.iter_mut().find(|s| s.runtime == id) {
            Some(sweeper) => {
                if sweeper.armed.is_none_or(|armed| deadline < armed) {
                    sweeper.armed = Some(deadline);
                    if let Some(w) = &sweeper.waker {
                        w.wake_by_ref();
                    }
                }
            }
            None => {
                table.sweepers.push(SweeperEntry {
                    runtime: id,
                    armed: Some(deadline),
                    waker: None,
                });
                let _guard = runtime.enter();
                runtime.spawn(Sweeper {
                    shared: Arc::clone(&self.shared),
                    runtime: id,
                    sleep: Box::pin(tokio::time::sleep_until(deadline)),
                    idle: false,
                });
            }
        }
    }

    /// Calls waiting now (tests).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().slots.iter().filter(|s| s.used).count()
    }

    /// Sweepers running now (tests).
    #[cfg(test)]
    fn sweepers(&self) -> usize {
        self.lock().sweepers.len()
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        let mut table = self.lock();
        table.closed = true;
        for sweeper in &table.sweepers {
            if let Some(w) = &sweeper.waker {
                w.wake_by_ref();
            }
        }
    }
}

impl<T: Deref<Target = DeadlineTimer>> Drop for Registration<T> {
    fn drop(&mut self) {
        let mut table = self.timer.lock();
        let slot = &mut table.slots[self.index];
        slot.used = false;
        slot.waker = None;
        table.free.push(self.index);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table holds no invariant a panic elsewhere could break halfway.
        crate::sync::lock(&self.table)
    }
}

/// The task that wakes the calls of one runtime whose deadline has passed.
struct Sweeper {
    shared: Arc<Shared>,
    runtime: Id,
    sleep: Pin<Box<Sleep>>,
    /// It had nothing to wait for when it last armed: `sleep` is its idle exit.
    idle: bool,
}

impl Future for Sweeper {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let fired = self.sleep.as_mut().poll(cx).is_ready();
        let now = Instant::now();
        let mut due = Vec::new();
        let at = {
            let shared = Arc::clone(&self.shared);
            let mut table = shared.lock();
            let runtime = self.runtime;
            let mut next: Option<Instant> = None;
            for slot in table
                .slots
                .iter_mut()
                .filter(|s| s.used && !s.expired && s.runtime == runtime)
            {
                if slot.deadline <= now {
                    slot.expired = true;
                    due.extend(slot.waker.take());
                } else {
                    next = Some(next.map_or(slot.deadline, |n| n.min(slot.deadline)));
                }
            }
            let Some(position) = table.sweepers.iter().position(|s| s.runtime == runtime) else {
                return Poll::Ready(());
            };
            if next.is_none() && (table.closed || (self.idle && fired)) {
                table.sweepers.swap_remove(position);
                drop(table);
                due.into_iter().for_each(Waker::wake);
                return Poll::Ready(());
            }
            let sweeper = &mut table.sweepers[position];
            sweeper.armed = next;
            match &mut sweeper.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            if next.is_none() && !self.idle {
                // Nothing to wait for: wait a while for new calls, then end.
                self.idle = true;
                Some(now + IDLE_EXIT)
            } else if next.is_some() {
                self.idle = false;
                next
            } else {
                None // idle, exit timer still running
            }
        };
        due.into_iter().for_each(Waker::wake);
        if let Some(at) = at
            && self.sleep.deadline() != at
        {
            self.sleep.as_mut().reset(at);
            if self.sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        // Dropped with its runtime (or ended): its calls are woken, so that those
        // still polled elsewhere register with a sweeper there.
        let mut table = self.shared.lock();
        let runtime = self.runtime;
        table.sweepers.retain(|s| s.runtime != runtime);
        let wakers: Vec<Waker> = table
            .slots
            .iter_mut()
            .filter(|s| s.used && s.runtime == runtime)
            .filter_map(|s| s.waker.take())
            .collect();
        drop(table);
        wakers.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Waits on `timer` until `deadline`, like an attempt whose response never comes.
    async fn wait(timer: &DeadlineTimer, deadline: Instant) {
        let mut registration = None;
        std::future::poll_fn(|cx| {
            DeadlineTimer::poll_expired(&mut registration, || timer, deadline, cx)
        })
        .await;
    }

    async fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let mut f = Some(f);
        std::future::poll_fn(|cx| Poll::Ready(f.take().expect("once").poll(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn each_call_ends_at_its_own_deadline() {
        let timer = DeadlineTimer::default();
        let start = Instant::now();
        let ends = futures_util::future::join_all([300, 100, 200, 100].map(|ms| {
            let timer = &timer;
            async move {
                wait(timer, start + Duration::from_millis(ms)).await;
                start.elapsed()
            }
        }))
        .await;
        assert_eq!(ends, [300, 100, 200, 100].map(Duration::from_millis));
        assert_eq!(timer.waiting(), 0, "every slot freed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_rearms_the_sweeper() {
        let timer = DeadlineTimer::default();
        let start = Instant::now();
        let late = wait(&timer, start + Duration::from_secs(5));
        tokio::pin!(late);
        // Registered and pending: the sweeper is armed for 5 s.
        assert!(poll_once(late.as_mut()).await.is_pending());
        wait(&timer, start + Duration::from_millis(50)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        late.await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_frees_its_slot_for_the_next() {
        let timer = DeadlineTimer::default();
        let start = Instant::now();
        {
            let gone = wait(&timer, start + Duration::from_millis(10));
            tokio::pin!(gone);
            assert!(poll_once(gone.as_mut()).await.is_pending());
        }
        assert_eq!(timer.waiting(), 0);
        // Reuses the slot with a later deadline: the old deadline must not end it.
        wait(&timer, start + Duration::from_millis(40)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(40));
    }

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn each_runtime_sweeps_its_own_calls() {
        let timer = DeadlineTimer::default();
        let first = paused_runtime();
        first.block_on(async { wait(&timer, Instant::now() + Duration::from_millis(20)).await });
        // `first` is not driven any more, but its sweeper still exists: a call on
        // another runtime must not wait on it.
        assert_eq!(timer.sweepers(), 1);
        paused_runtime().block_on(async {
            let start = Instant::now();
            wait(&timer, start + Duration::from_millis(30)).await;
            assert_eq!(start.elapsed(), Duration::from_millis(30));
        });
        drop(first);
        assert_eq!(timer.sweepers(), 0, "both went with their runtimes");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_sweeper_ends_and_a_new_call_starts_another() {
        let timer = DeadlineTimer::default();
        let start = Instant::now();
        wait(&timer, start + Duration::from_millis(10)).await;
        tokio::time::sleep(IDLE_EXIT + Duration::from_millis(20)).await;
        assert_eq!(timer.sweepers(), 0);
        let start = Instant::now();
        wait(&timer, start + Duration::from_millis(10)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn sweepers_end_with_their_client() {
        let timer = Arc::new(DeadlineTimer::default());
        wait(&timer, Instant::now() + Duration::from_millis(10)).await;
        let shared = Arc::clone(&timer.shared);
        drop(timer);
        tokio::task::yield_now().await;
        assert!(shared.lock().sweepers.is_empty());
        assert_eq!(Arc::strong_count(&shared), 1, "the sweeper task let go");
    }
}
