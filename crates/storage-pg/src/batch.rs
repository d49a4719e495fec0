//! Requests that arrive together share one statement. A request queues its job (a row to insert,
//! a user or a page to read) and, when fewer than [`Job::MAX_RUNNERS`] runners of its kind are
//! running, starts one; a runner takes a connection, yields once, then takes every job queued by
//! then (up to [`Job::MAX_BATCH`]), runs them as one statement and answers each job's request,
//! until the queue is empty. Alone, a job is the one-row or one-page statement it always was;
//! under load, PostgreSQL parses, executes and answers once for many, and the server writes and
//! reads its socket once.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bb8::Pool;
use tokio::sync::oneshot;
use tokio_postgres::Client;
use userstack_core::{Error as CoreError, Result};

use crate::error::classify;
use crate::pool::{Manager, Statements};
use crate::repository::{checkout, within};

/// What a batch of queued jobs of one kind runs as.
pub(crate) trait Job: Sized + Send + Sync + 'static {
    type Answer: Send + 'static;
    /// Most jobs in one statement: a batch is answered only when all of it is, so an unbounded
    /// one would hold its first jobs' requests for the last ones' sake.
    const MAX_BATCH: usize;
    /// Most runners (statements of this kind in flight) at once. With more, each takes fewer jobs
    /// and PostgreSQL's per-statement cost comes back; with at least two, a batch fills while
    /// another is sent.
    const MAX_RUNNERS: usize;

    /// Runs `jobs` (never empty), one answer per job in their order; `Err` when the store failed
    /// for all of them.
    fn run<'a>(
        client: &'a Client,
        statements: &'a Statements,
        jobs: &'a [Pending<Self>],
    ) -> impl Future<Output = Result<Vec<Result<Self::Answer>>>> + Send + 'a;
}

/// One job waiting for its statement.
pub(crate) struct Pending<J: Job> {
    pub(crate) job: J,
    reply: oneshot::Sender<Result<J::Answer>>,
}

impl<J: Job> Pending<J> {
    /// Answers the request; one that has gone (its deadline passed) is not waiting any more.
    fn answer(self, result: Result<J::Answer>) {
        let _ = self.reply.send(result);
    }
}

/// The jobs of one kind waiting for a runner, and how many runners run.
pub(crate) struct Queue<J: Job> {
    state: Mutex<State<J>>,
}

struct State<J: Job> {
    jobs: Vec<Pending<J>>,
    runners: usize,
    taken: BatchCounts,
}

/// How many batches a queue's runners took, and how many jobs those batches held: the mean
/// batch size is `jobs / batches`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub batches: u64,
    pub jobs: u64,
}

impl<J: Job> Default for Queue<J> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                jobs: Vec::new(),
                runners: 0,
                taken: BatchCounts::default(),
            }),
        }
    }
}

impl<J: Job> std::fmt::Debug for Queue<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Queue")
            .field("jobs", &state.jobs.len())
            .field("runners", &state.runners)
            .finish()
    }
}

impl<J: Job> Queue<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        // The state is a Vec and a count, consistent after every statement that holds the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` and returns the receiver of its answer, and a [`Runner`] for the caller to
    /// start unless enough are running (one of them will take the job).
    pub(crate) fn push(
        self: &Arc<Self>,
        job: J,
    ) -> (oneshot::Receiver<Result<J::Answer>>, Option<Runner<J>>) {
        let (reply, answer) = oneshot::channel();
        let mut state = self.lock();
        state.jobs.push(Pending { job, reply });
        let start = state.runners < J::MAX_RUNNERS;
        state.runners += usize::from(start);
        let runner = start.then(|| Runner {
            queue: self.clone(),
            stopped: false,
        });
        (answer, runner)
    }

    /// The batches taken so far (see [`BatchCounts`]).
    pub(crate) fn taken(&self) -> BatchCounts {
        self.lock().taken
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().jobs.len()
    }
}

/// The right to take jobs off the queue, held by one runner while it runs.
pub(crate) struct Runner<J: Job> {
    queue: Arc<Queue<J>>,
    stopped: bool,
}

impl<J: Job> Runner<J> {
    /// The next jobs to run, without those whose request has gone; `None` when there are none,
    /// and then this runner is counted off under the same lock (so a job queued after it starts
    /// a new one).
    fn next_batch(&mut self) -> Option<Vec<Pending<J>>> {
        let mut state = self.queue.lock();
        state.jobs.retain(|job| !job.reply.is_closed());
        if state.jobs.is_empty() {
            state.runners -= 1;
            self.stopped = true;
            return None;
        }
        let n = state.jobs.len().min(J::MAX_BATCH);
        state.taken.batches += 1;
        state.taken.jobs += n as u64;
        Some(state.jobs.drain(..n).collect())
    }

    /// Takes queued jobs off the queue and runs them, batch after batch, until none is left, each
    /// batch under the deadline `limit`. The connection is taken before the jobs: jobs queued
    /// while it waits for one go in its batch.
    pub(crate) async fn run(mut self, pool: Pool<Manager>, limit: Duration) {
        loop {
            let conn = within(limit, checkout(&pool)).await;
            // One turn of the scheduler before taking the jobs: tokio resumes a yielded task only
            // after the worker has run the other runnable tasks and looked for I/O, so requests
            // already on their sockets queue their jobs into this batch, not the next one. At 64
            // connections, 10 creates per batch instead of 6 and 12 pages instead of 7, for
            // about a tenth less CPU per request, server and PostgreSQL together (figures in
            // docs/performance.md).
            tokio::task::yield_now().await;
            let Some(jobs) = self.next_batch() else {
                return;
            };
            // The connection goes back to the pool at the end of its arm, before the answers.
            let results = match conn {
                Ok(mut conn) => {
                    within(limit, async {
                        let (client, s) = conn.prepared().await.map_err(classify)?;
                        let results = J::run(client, s, &jobs).await;
                        conn.settled();
                        results
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match results {
                Ok(results) => jobs.into_iter().zip(results).for_each(|(j, r)| j.answer(r)),
                // Alone, a job gets the driver's error itself, its source chain included.
                Err(e) if jobs.len() == 1 => {
                    if let Some(job) = jobs.into_iter().next() {
                        job.answer(Err(e));
                    }
                }
                Err(e) => jobs
                    .into_iter()
                    .for_each(|j| j.answer(Err(shared_error(&e)))),
            }
        }
    }
}

impl<J: Job> Drop for Runner<J> {
    /// Counts off a runner that stopped other than by running out of jobs (a panic, the runtime
    /// shutting down): otherwise jobs would queue with no runner to take them.
    fn drop(&mut self) {
        if !self.stopped {
            self.queue.lock().runners -= 1;
        }
    }
}

/// The error every job of a batch gets when the batch as a whole failed (its driver error cannot
/// be cloned; its message can).
fn shared_error(error: &CoreError) -> CoreError {
    match error {
        CoreError::StoreUnavailable(source) => CoreError::store_unavailable(source.to_string()),
        CoreError::Internal(source) => CoreError::internal(source.to_string()),
        other => CoreError::internal(other.to_string()),
    }
}
