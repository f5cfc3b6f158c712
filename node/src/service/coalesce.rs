//! One call shared by the callers that wait for it, each served by a call that began after it
//! asked.
//!
//! A follower answers a linearizable read once it has applied the leader's read index, which it
//! asks the leader for. The index must be fetched *after* the read arrived (an index fetched
//! earlier may miss a write acknowledged in between), but one fetch serves every read that
//! arrived before it left. So a few calls at most run at a time: callers that come while all of
//! them run wait for the next one, which starts as soon as a running one ends and carries all
//! of them. Under load a follower then makes a few calls per round trip to the leader, however
//! many reads it serves; with more than one call in flight a read waits less for the next call
//! to leave.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;

use tokio::sync::oneshot;

/// Shares calls between concurrent callers; see the module docs.
pub struct Coalescer<T> {
    state: Mutex<Batch<T>>,
    /// At most this many calls run at once (at least 1).
    max_in_flight: usize,
}

struct Batch<T> {
    /// Tasks running calls.
    running: usize,
    /// Callers waiting for the next call to start.
    waiting: Vec<oneshot::Sender<T>>,
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
    /// The result of a call of `call` that started after this method was entered. The calls
    /// run on tasks of their own (so a caller that gives up does not cancel the others' call);
    /// a caller that finds fewer than `max_in_flight` tasks running starts one with its `call`.
    /// `None` if the task ended without an answer (it panicked, or the runtime is shutting
    /// down).
    pub async fn get<F, Fut>(self: &Arc<Self>, call: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut batch = self.lock();
            batch.waiting.push(tx);
            let start = batch.running < self.max_in_flight;
            if start {
                batch.running += 1;
            }
            start
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drive(call).await });
        }
        rx.await.ok()
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
                    batch.running -= 1;
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

/// If a call panics, its task no longer counts as running, and the callers it had taken learn
/// (their senders are dropped) that no answer will come. So do those waiting for a next call
/// if no other task is left to make it: they ask again and start one.
struct ResetOnPanic<'a, T>(&'a Coalescer<T>);

impl<T> Drop for ResetOnPanic<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut batch = self.0.lock();
            batch.running -= 1;
            if batch.running == 0 {
                batch.waiting.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// A call that counts how often it ran, returns its own number, and waits for `release`
    /// before it finishes.
    fn counted(
        calls: Arc<AtomicU64>,
        release: Arc<Notify>,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> + Send + Sync + 'static {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let release = release.clone();
            Box::pin(async move {
                release.notified().await;
                n
            })
        }
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn callers_that_come_while_a_call_runs_share_the_next_one() {
        let coalescer = Arc::new(Coalescer::new(1));
        let calls = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());

        let first = tokio::spawn({
            let (c, calls, release) = (coalescer.clone(), calls.clone(), release.clone());
            async move { c.get(counted(calls, release)).await }
        });
        eventually("the first call to start", || calls.load(Ordering::SeqCst) == 1).await;

        // Three callers arrive while call 1 runs: none may be served by it.
        let later: Vec<_> = (0..3)
            .map(|_| {
                let (c, calls, release) = (coalescer.clone(), calls.clone(), release.clone());
                tokio::spawn(async move { c.get(counted(calls, release)).await })
            })
            .collect();
        eventually("the later callers to queue", || coalescer.lock().waiting.len() == 3).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no second call while the first runs");

        release.notify_one();
        assert_eq!(first.await.expect("first caller"), Some(1));
        eventually("the second call to start", || calls.load(Ordering::SeqCst) == 2).await;
        release.notify_one();
        for caller in later {
            assert_eq!(caller.await.expect("later caller"), Some(2), "one shared call, begun after they asked");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        eventually("the driver to stop", || coalescer.lock().running == 0).await;
    }

    #[tokio::test]
    async fn with_two_in_flight_a_caller_starts_a_second_call_at_once_and_a_third_waits() {
        let coalescer = Arc::new(Coalescer::new(2));
        let calls = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let spawn_caller = || {
            let (c, calls, release) = (coalescer.clone(), calls.clone(), release.clone());
            tokio::spawn(async move { c.get(counted(calls, release)).await })
        };
        let first = spawn_caller();
        eventually("the first call to start", || calls.load(Ordering::SeqCst) == 1).await;
        let second = spawn_caller();
        eventually("the second call to start", || calls.load(Ordering::SeqCst) == 2).await;
        let third = spawn_caller();
        eventually("the third caller to queue", || coalescer.lock().waiting.len() == 1).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no third call while two run");

        // Calls end in the order they started (Notify wakes the longest waiter first).
        release.notify_one();
        assert_eq!(first.await.expect("first caller"), Some(1));
        eventually("the third call to start", || calls.load(Ordering::SeqCst) == 3).await;
        release.notify_one();
        assert_eq!(second.await.expect("second caller"), Some(2));
        release.notify_one();
        assert_eq!(third.await.expect("third caller"), Some(3), "served by a call begun after it asked");
        eventually("both tasks to stop", || coalescer.lock().running == 0).await;
    }

    #[tokio::test]
    async fn a_new_caller_after_an_idle_period_starts_a_new_call() {
        let coalescer = Arc::new(Coalescer::new(1));
        for expected in 1..=3u64 {
            let n = Arc::new(AtomicU64::new(expected));
            let value = coalescer.get(move || std::future::ready(n.load(Ordering::SeqCst))).await;
            assert_eq!(value, Some(expected));
            eventually("the driver to stop", || coalescer.lock().running == 0).await;
        }
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cancel_the_call_of_the_others() {
        let coalescer = Arc::new(Coalescer::new(1));
        let calls = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let quitter = tokio::spawn({
            let (c, calls, release) = (coalescer.clone(), calls.clone(), release.clone());
            async move { c.get(counted(calls, release)).await }
        });
        eventually("the call to start", || calls.load(Ordering::SeqCst) == 1).await;
        let stayer = tokio::spawn({
            let (c, calls, release) = (coalescer.clone(), calls.clone(), release.clone());
            async move { c.get(counted(calls, release)).await }
        });
        eventually("the second caller to queue", || coalescer.lock().waiting.len() == 1).await;
        quitter.abort();
        release.notify_one();
        eventually("the second call to start", || calls.load(Ordering::SeqCst) == 2).await;
        release.notify_one();
        assert_eq!(stayer.await.expect("stayer"), Some(2));
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
