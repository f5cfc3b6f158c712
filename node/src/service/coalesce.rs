//! One call shared by the callers that wait for it, each served by a call that began after it
//! asked.
//!
//! A linearizable read needs a read index obtained *after* it arrived: on the leader, a
//! confirmation of its leadership by a heartbeat round; on a follower, a read-index call to the
//! leader. An index obtained earlier may miss a write acknowledged in between, but one obtained
//! later serves every read that arrived before it was asked for. So a few calls at most run at
//! a time: callers that come while all of them run wait for the next one, which starts as soon
//! as a running one ends and carries all of them. Under load a node then makes a few calls per
//! round trip, however many reads it serves. A caller that finds a free slot makes its own call
//! on its own task, so a lone read pays no hand-off to another task.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;

use futures::FutureExt as _;
use tokio::sync::oneshot;

/// Shares calls between concurrent callers; see the module docs.
pub struct Coalescer<T> {
    state: Mutex<Batch<T>>,
    /// At most this many calls run at once (at least 1).
    max_in_flight: usize,
}

struct Batch<T> {
    /// Calls running: callers making their own, and tasks making them for those who wait.
    running: usize,
    /// Callers waiting for the next call to start.
    waiting: Vec<oneshot::Sender<T>>,
}

impl<T> Batch<T> {
    /// A call ends without handing its slot on. If it was the last one running, nobody is left
    /// to make a call for those waiting: they learn (their senders are dropped) that no answer
    /// will come, and ask again.
    fn release_slot(&mut self) {
        self.running -= 1;
        if self.running == 0 {
            self.waiting.clear();
        }
    }
}

impl<T> Coalescer<T> {
    /// A coalescer running at most `max_in_flight` calls at once (at least 1).
    pub fn new(max_in_flight: usize) -> Self {
        Coalescer { state: Mutex::new(Batch { running: 0, waiting: Vec::new() }), max_in_flight: max_in_flight.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, Batch<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone + Send + 'static> Coalescer<T> {
    /// The result of a call of `call` that started after this method was entered. A caller
    /// that finds fewer than `max_in_flight` calls running makes its own call, on its own task:
    /// nobody else can share it (a caller that comes while it runs needs a call that begins
    /// later), so a lone caller pays no hand-off. Callers that come while all slots are taken
    /// wait for the next call, which runs on a task of its own (so a caller that gives up does
    /// not cancel the others' call) as soon as a slot is free. `None` if the call panicked or
    /// its task ended without an answer (the runtime is shutting down).
    pub async fn get<F, Fut>(self: &Arc<Self>, call: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let own_call = {
            let mut batch = self.lock();
            let own_call = batch.running < self.max_in_flight;
            if own_call {
                batch.running += 1;
            } else {
                batch.waiting.push(tx);
            }
            own_call
        };
        if !own_call {
            return rx.await.ok();
        }
        // Dropped when the call ends, when this caller gives up mid-call, and also if `call`
        // itself panics (before the slot holds it).
        let mut slot = Slot { coalescer: self.clone(), call: None };
        let own = call();
        slot.call = Some(call);
        AssertUnwindSafe(own).catch_unwind().await.ok()
    }

    /// Run calls while anyone waits, each for everyone who was waiting when it started.
    async fn drive<F, Fut>(&self, call: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T>,
    {
        let _reset = ResetOnPanic(self);
        loop {
            let waiting = {
                let mut batch = self.lock();
                if batch.waiting.is_empty() {
                    batch.release_slot();
                    return;
                }
                std::mem::take(&mut batch.waiting)
            };
            let result = call().await;
            for tx in waiting {
                // A caller that gave up has dropped its receiver: nothing to tell it.
                let _ = tx.send(result.clone());
            }
        }
    }
}

/// The slot of a caller's own call, handed on when the call ends or is dropped: to a task that
/// serves the callers who came meanwhile, or freed if none did.
struct Slot<T, F, Fut>
where
    T: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    coalescer: Arc<Coalescer<T>>,
    call: Option<F>,
}

impl<T, F, Fut> Drop for Slot<T, F, Fut>
where
    T: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    fn drop(&mut self) {
        let mut batch = self.coalescer.lock();
        if !batch.waiting.is_empty()
            && let (Some(call), Ok(runtime)) = (self.call.take(), tokio::runtime::Handle::try_current())
        {
            // The task takes over this slot (`running` stays as it is).
            drop(batch);
            let coalescer = self.coalescer.clone();
            runtime.spawn(async move { coalescer.drive(call).await });
            return;
        }
        // No runtime to run a call on, or the call panicked before the slot held it.
        batch.release_slot();
    }
}

/// If a call panics, its task no longer counts as running, and the callers it had taken learn
/// (their senders are dropped) that no answer will come. So do those waiting for a next call
/// if no other task is left to make it: they ask again and start one.
struct ResetOnPanic<'a, T>(&'a Coalescer<T>);

impl<T> Drop for ResetOnPanic<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().release_slot();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;

    use tokio::sync::Notify;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::test_support::wait_until;

    /// A coalescer whose calls count how often they ran, return their own number and wait for
    /// `release` before they finish.
    struct Harness {
        coalescer: Arc<Coalescer<u64>>,
        calls: Arc<AtomicU64>,
        release: Arc<Notify>,
    }

    impl Harness {
        fn new(max_in_flight: usize) -> Self {
            Harness {
                coalescer: Arc::new(Coalescer::new(max_in_flight)),
                calls: Arc::new(AtomicU64::new(0)),
                release: Arc::new(Notify::new()),
            }
        }

        /// A caller on a task of its own.
        fn caller(&self) -> JoinHandle<Option<u64>> {
            let (coalescer, calls, release) = (self.coalescer.clone(), self.calls.clone(), self.release.clone());
            tokio::spawn(async move {
                coalescer
                    .get(move || {
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        let release = release.clone();
                        async move {
                            release.notified().await;
                            n
                        }
                    })
                    .await
            })
        }

        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }

        fn queued(&self) -> usize {
            self.coalescer.lock().waiting.len()
        }

        fn running(&self) -> usize {
            self.coalescer.lock().running
        }

        /// Let the longest-waiting call finish.
        fn finish_one(&self) {
            self.release.notify_one();
        }
    }

    #[tokio::test]
    async fn a_caller_that_finds_a_free_slot_makes_the_call_on_its_own_task() {
        let coalescer: Arc<Coalescer<Option<tokio::task::Id>>> = Arc::new(Coalescer::new(1));
        let caller = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { (tokio::task::id(), coalescer.get(|| async { tokio::task::try_id() }).await) }
        });
        let (caller_task, call_task) = caller.await.expect("caller");
        assert_eq!(call_task, Some(Some(caller_task)), "no hand-off to another task");
        assert_eq!(coalescer.lock().running, 0, "the slot is free again");
    }

    #[tokio::test]
    async fn callers_that_come_while_a_call_runs_share_the_next_one() {
        let h = Harness::new(1);
        let first = h.caller();
        wait_until("the first call to start", || h.calls() == 1).await;

        // Three callers arrive while call 1 runs: none may be served by it.
        let later: Vec<_> = (0..3).map(|_| h.caller()).collect();
        wait_until("the later callers to queue", || h.queued() == 3).await;
        assert_eq!(h.calls(), 1, "no second call while the first runs");

        h.finish_one();
        assert_eq!(first.await.expect("first caller"), Some(1));
        wait_until("the second call to start", || h.calls() == 2).await;
        h.finish_one();
        for caller in later {
            assert_eq!(caller.await.expect("later caller"), Some(2), "one shared call, begun after they asked");
        }
        assert_eq!(h.calls(), 2);
        wait_until("the driver to stop", || h.running() == 0).await;
    }

    #[tokio::test]
    async fn with_two_in_flight_a_caller_starts_a_second_call_at_once_and_a_third_waits() {
        let h = Harness::new(2);
        let first = h.caller();
        wait_until("the first call to start", || h.calls() == 1).await;
        let second = h.caller();
        wait_until("the second call to start", || h.calls() == 2).await;
        let third = h.caller();
        wait_until("the third caller to queue", || h.queued() == 1).await;
        assert_eq!(h.calls(), 2, "no third call while two run");

        // Calls end in the order they started (Notify wakes the longest waiter first).
        h.finish_one();
        assert_eq!(first.await.expect("first caller"), Some(1));
        wait_until("the third call to start", || h.calls() == 3).await;
        h.finish_one();
        assert_eq!(second.await.expect("second caller"), Some(2));
        h.finish_one();
        assert_eq!(third.await.expect("third caller"), Some(3), "served by a call begun after it asked");
        wait_until("both tasks to stop", || h.running() == 0).await;
    }

    #[tokio::test]
    async fn a_new_caller_after_an_idle_period_starts_a_new_call() {
        let h = Harness::new(1);
        for expected in 1..=3u64 {
            let caller = h.caller();
            wait_until("the call to start", || h.calls() == expected).await;
            h.finish_one();
            assert_eq!(caller.await.expect("caller"), Some(expected));
            wait_until("the driver to stop", || h.running() == 0).await;
        }
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cancel_the_call_of_the_others() {
        let h = Harness::new(1);
        let quitter = h.caller();
        wait_until("the call to start", || h.calls() == 1).await;
        let stayer = h.caller();
        wait_until("the second caller to queue", || h.queued() == 1).await;
        quitter.abort();
        h.finish_one();
        wait_until("the second call to start", || h.calls() == 2).await;
        h.finish_one();
        assert_eq!(stayer.await.expect("stayer"), Some(2));
    }

    #[tokio::test]
    async fn a_call_that_panics_before_its_future_exists_frees_its_slot() {
        let coalescer: Arc<Coalescer<u64>> = Arc::new(Coalescer::new(1));
        let caller = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.get(|| -> std::future::Ready<u64> { panic!("injected failure of a call") }).await }
        });
        assert!(caller.await.is_err(), "the panic reaches the caller that made the call");
        assert_eq!(coalescer.lock().running, 0, "the slot is free again");
        assert_eq!(coalescer.get(|| std::future::ready(7)).await, Some(7));
    }

    #[tokio::test]
    async fn a_panicking_call_fails_its_callers_and_the_next_caller_starts_afresh() {
        let coalescer: Arc<Coalescer<u64>> = Arc::new(Coalescer::new(1));
        let failed = coalescer.get(|| async { panic!("injected failure of a call") }).await;
        assert_eq!(failed, None);
        let value = coalescer.get(|| std::future::ready(7)).await;
        assert_eq!(value, Some(7));
    }
}
