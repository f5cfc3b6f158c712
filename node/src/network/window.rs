//! A bound on the AppendEntries requests in flight to one follower.
//!
//! openraft builds each request of a replication stream when the transport asks for the next
//! one, from whatever the leader's log holds at that moment. Asked at once, every small batch
//! of proposals goes out as its own request, and each costs the follower a gRPC message, a
//! Raft core round, a WAL write with its fdatasync and an answer. Holding the next request
//! back until an earlier one is answered lets entries pile up meanwhile, so the same writes
//! travel in fewer, larger requests. A request is never delayed once the window has room, so
//! a lone write (nothing in flight) leaves at once.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use tokio::sync::Notify;

/// Counts requests in flight on one stream and lets a sender wait for room.
#[derive(Debug)]
pub struct Window {
    limit: usize,
    in_flight: AtomicUsize,
    room: Notify,
}

impl Window {
    /// A window of `limit` requests (at least 1).
    pub fn new(limit: usize) -> Self {
        Window { limit: limit.max(1), in_flight: AtomicUsize::new(0), room: Notify::new() }
    }

    /// Wait until fewer than `limit` requests are in flight. Only one task sends on a stream,
    /// so the room seen here is still there when the caller then calls [`Window::sent`].
    pub async fn ready(&self) {
        while self.in_flight.load(Ordering::Acquire) >= self.limit {
            // `notify_one` keeps a permit when nobody waits: an answer that lands between the
            // check and this await is not missed.
            self.room.notified().await;
        }
    }

    /// A request was sent.
    pub fn sent(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// An answer (or the stream's final error) arrived: one request less in flight.
    pub fn answered(&self) {
        // Saturating: a stream's closing error is not the answer to a request.
        let _ = self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(1)));
        self.room.notify_one();
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waits_for_an_answer_when_full() {
        let w = Arc::new(Window::new(1));
        w.ready().await;
        w.sent();
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move {
                w.ready().await;
                w.sent();
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a full window must hold the next request back");
        w.answered();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the answer opens the window")
            .expect("waiter task");
        assert_eq!(w.in_flight(), 1);
    }

    #[tokio::test]
    async fn an_answer_before_the_wait_is_not_lost() {
        let w = Window::new(2);
        w.sent();
        w.sent();
        w.answered();
        tokio::time::timeout(Duration::from_secs(5), w.ready()).await.expect("room for one more");
        assert_eq!(w.in_flight(), 1);
    }

    #[test]
    fn more_answers_than_requests_do_not_wrap() {
        let w = Window::new(0);
        w.answered();
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.limit, 1, "a zero limit would block every request");
    }
}
