//! Creates that arrive together share one `INSERT`. A create queues its row and, when fewer than
//! [`MAX_INSERTERS`] inserters are running, starts one; an inserter takes a connection, then every
//! row queued by then (up to [`MAX_ROWS`]), sends them in one statement and answers each row's
//! request, until the queue is empty. Alone, a create is one statement of one row, as before;
//! under load, PostgreSQL parses, executes, commits and answers once for many rows.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use userstack_core::{Error as CoreError, NewUser, Result, User};

/// Most rows in one statement: a batch is answered only when all of it is, so an unbounded one
/// would hold its first rows' requests for the last ones' sake.
pub(crate) const MAX_ROWS: usize = 64;

/// Most inserters (statements of creates in flight) at once. With more, each takes fewer rows and
/// PostgreSQL's per-statement cost comes back: on two cores, 32 connections posting, 1 inserter
/// took 14 267–16 129 creates/s, 2 took 12 891–15 770, 4 took 11 326–12 154 and 8 took 9 057–9 464
/// (`bench/cpu-per-request.sh BIN post 4`, in turns). Two keep a batch filling while one is sent.
pub(crate) const MAX_INSERTERS: usize = 2;

/// One create waiting for its row to be inserted.
pub(crate) struct Pending {
    pub(crate) user: NewUser,
    pub(crate) reply: oneshot::Sender<Result<User>>,
}

impl Pending {
    /// Answers the request; one that has gone (its deadline passed) is not waiting any more.
    pub(crate) fn answer(self, result: Result<User>) {
        let _ = self.reply.send(result);
    }
}

/// The rows waiting for an inserter, and how many inserters run.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rows: Vec<Pending>,
    inserters: usize,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Queue")
            .field("rows", &state.rows.len())
            .field("inserters", &state.inserters)
            .finish()
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a Vec and a count, consistent after every statement that holds the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `user`'s row and returns the receiver of its answer, and an [`Inserter`] for the
    /// caller to run unless enough are running (one of them will take the row).
    pub(crate) fn push(
        self: &Arc<Self>,
        user: NewUser,
    ) -> (oneshot::Receiver<Result<User>>, Option<Inserter>) {
        let (reply, answer) = oneshot::channel();
        let mut state = self.lock();
        state.rows.push(Pending { user, reply });
        let start = state.inserters < MAX_INSERTERS;
        state.inserters += usize::from(start);
        let inserter = start.then(|| Inserter {
            queue: self.clone(),
            stopped: false,
        });
        (answer, inserter)
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().rows.len()
    }
}

/// The right to take rows off the queue, held by one running inserter.
pub(crate) struct Inserter {
    queue: Arc<Queue>,
    stopped: bool,
}

impl Inserter {
    /// The next rows to insert, without those whose request has gone; `None` when there are none,
    /// and then this inserter is counted off under the same lock (so a row queued after it starts
    /// a new one).
    pub(crate) fn next_batch(&mut self) -> Option<Vec<Pending>> {
        let mut state = self.queue.lock();
        state.rows.retain(|row| !row.reply.is_closed());
        if state.rows.is_empty() {
            state.inserters -= 1;
            self.stopped = true;
            return None;
        }
        let n = state.rows.len().min(MAX_ROWS);
        Some(state.rows.drain(..n).collect())
    }
}

impl Drop for Inserter {
    /// Counts off an inserter that stopped other than by running out of rows (a panic, the
    /// runtime shutting down): otherwise creates would queue with no inserter to take them.
    fn drop(&mut self) {
        if !self.stopped {
            self.queue.lock().inserters -= 1;
        }
    }
}

/// The error every row of a batch gets when the batch as a whole failed (its driver error cannot
/// be cloned; its message can).
pub(crate) fn shared_error(error: &CoreError) -> CoreError {
    match error {
        CoreError::StoreUnavailable(source) => CoreError::store_unavailable(source.to_string()),
        CoreError::Internal(source) => CoreError::internal(source.to_string()),
        other => CoreError::internal(other.to_string()),
    }
}
