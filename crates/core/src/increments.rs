//! Writes that finish while a generation increment is in flight share the next one.
//!
//! Every write must see an increment *sent after it finished* succeed before it returns (see
//! [`crate::cache_aside`]). Sending one per write costs a cache round trip each and, with the
//! cache in memory, an announcement to every replica each. Instead a finished write joins the
//! open *round*; one increment is in flight at a time, and the writer that gets to send the next
//! one first closes its round (writes finishing from then on join the next round), then sends it
//! for every write of the round. Under load, a round holds the writes that finished during the
//! previous increment; alone, a write sends its own, as before.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The rounds of writes waiting for an increment, and the right to send one.
#[derive(Default)]
pub(crate) struct SharedIncrements {
    /// The round that a write finishing now joins.
    open: Mutex<Arc<Round>>,
    /// Held while an increment is in flight: one at a time.
    lane: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Round {
    /// Whether this round's increment succeeded, once it was sent and answered.
    announced: OnceLock<bool>,
}

impl SharedIncrements {
    /// Called by a write that has finished: returns once an increment sent after this call was
    /// answered, and whether it succeeded. `increment` sends one; it runs in the caller of one
    /// write of the round (if that caller is dropped mid-way, the next waiting write sends it).
    pub(crate) async fn after_write<F>(&self, increment: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = bool>,
    {
        let round = self.lock_open().clone();
        let _lane = self.lane.lock().await;
        if let Some(&announced) = round.announced.get() {
            return announced;
        }
        {
            let mut open = self.lock_open();
            if Arc::ptr_eq(&open, &round) {
                *open = Arc::default();
            }
        }
        let announced = increment().await;
        let _ = round.announced.set(announced);
        announced
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, Arc<Round>> {
        // Holds an Arc, replaced in one statement: never left half-changed.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::{Semaphore, mpsc};

    use super::*;

    /// Increments that block until the test allows one more, and count how many were sent.
    struct Gated {
        increments: SharedIncrements,
        sent: AtomicUsize,
        allowed: Semaphore,
    }

    /// `future`'s output, or a failed test when it takes more than 5 s (a broken round hangs).
    async fn soon<T>(what: &str, future: impl Future<Output = T>) -> T {
        let limit = std::time::Duration::from_secs(5);
        tokio::time::timeout(limit, future)
            .await
            .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
    }

    impl Gated {
        async fn write(&self) -> bool {
            self.increments
                .after_write(|| async {
                    self.sent.fetch_add(1, Ordering::SeqCst);
                    self.allowed.acquire().await.unwrap().forget();
                    true
                })
                .await
        }
    }

    /// Writes that finish while an increment is in flight wait for the next one (never the one in
    /// flight: it was sent before they finished), and share it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_that_finish_during_an_increment_share_the_next_one_and_wait_for_it() {
        let gated = Arc::new(Gated {
            increments: SharedIncrements::default(),
            sent: AtomicUsize::new(0),
            allowed: Semaphore::new(0),
        });
        let (done, mut finished) = mpsc::unbounded_channel();
        let write = |name: &'static str| {
            let (gated, done) = (gated.clone(), done.clone());
            tokio::spawn(async move {
                assert!(gated.write().await);
                done.send(name).unwrap();
            })
        };
        let wait_for_sent = |n: usize| {
            let gated = gated.clone();
            soon("increments sent", async move {
                while gated.sent.load(Ordering::SeqCst) < n {
                    tokio::task::yield_now().await;
                }
            })
        };

        write("first");
        wait_for_sent(1).await;
        for _ in 0..5 {
            write("later");
        }
        // Let the five reach the lane (they queue behind the first increment).
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(finished.try_recv().is_err(), "nothing answered yet");

        gated.allowed.add_permits(1);
        assert_eq!(soon("first", finished.recv()).await, Some("first"));
        wait_for_sent(2).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            finished.try_recv().is_err(),
            "the five must wait for an increment sent after they finished"
        );

        gated.allowed.add_permits(1);
        for _ in 0..5 {
            assert_eq!(soon("later", finished.recv()).await, Some("later"));
        }
        assert_eq!(
            gated.sent.load(Ordering::SeqCst),
            2,
            "one increment per round"
        );
    }

    /// When the write sending its round's increment is dropped mid-way (a request timeout),
    /// another write of the round sends it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_whose_sender_was_dropped_is_sent_by_another_of_its_writes() {
        let gated = Arc::new(Gated {
            increments: SharedIncrements::default(),
            sent: AtomicUsize::new(0),
            allowed: Semaphore::new(0),
        });
        let write = || {
            let gated = gated.clone();
            tokio::spawn(async move { gated.write().await })
        };
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(50));
        let first = write();
        settle().await;
        // Both finish while the first increment is in flight: one round, `a` ahead in the lane.
        let a = write();
        settle().await;
        let b = write();
        settle().await;
        gated.allowed.add_permits(1);
        assert!(soon("first", first).await.unwrap());
        settle().await;
        assert_eq!(gated.sent.load(Ordering::SeqCst), 2, "a sends the round's");
        a.abort();
        settle().await;
        assert_eq!(gated.sent.load(Ordering::SeqCst), 3, "b sends it again");
        gated.allowed.add_permits(1);
        assert!(soon("b", b).await.unwrap());
    }
}
