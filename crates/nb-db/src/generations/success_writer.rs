//! Group commit for succeeded generations.
//!
//! Each success must be written with its usage increment in one transaction, and a durable
//! commit costs a disk flush. Instead of one transaction per generation, one writer task takes
//! every success waiting at that moment (up to `MAX_BATCH`), writes them in one transaction,
//! and then answers each caller: the flush is shared, and a caller still returns only once its
//! own row is committed. A batch that fails on a bad row is retried one success at a time,
//! so one bad row cannot fail the others; a batch that fails because the database is
//! unavailable fails as a whole (its rows would fail one by one too).
//!
//! Bounded everywhere: at most `MAX_WAITING` successes are queued for the writer (past that,
//! callers wait for room: a burst of thousands of answers arriving at once is written, not
//! refused), and a caller waits at most the database's call timeout in all (for room, then for
//! its commit; past it the database counts as unavailable and its client is answered 503).
//!
//! What is counted is what clients were told succeeded, even when the database hangs and
//! comes back:
//! - a success whose caller stopped waiting before its batch began is not written (its image
//!   is deleted);
//! - a batch commits only if its statements are done `COMMIT_MARGIN` before the first of its
//!   callers gives up (checked in the transaction, just before `COMMIT`): a database that
//!   answers after a hang rolls the batch back instead of committing it late;
//! - a commit that ends after a caller gave up anyway (its `COMMIT` took longer than the
//!   margin, or the writer stopped waiting for it) is *undone*: the writer learns the outcome
//!   from the write's own task, which runs to its end, and takes back those rows, their
//!   webhook events and their usage in one transaction (retried every second until it
//!   succeeds).

use std::time::Duration;

use nb_domain::RepositoryError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::rows::{BatchWrite, GenerationRow, undo_successes, write_successes};
use crate::pool::{CallTimedOut, ConnectionPool};

const MAX_BATCH: usize = 512;
/// The most successes queued for the writer (more wait for room).
const MAX_WAITING: usize = 4 * MAX_BATCH;
/// The time left for `COMMIT` itself: a batch whose statements end later than this before
/// its first caller's deadline is rolled back (at most a quarter of the call timeout).
const COMMIT_MARGIN: Duration = Duration::from_millis(250);
/// How often a failed undo is tried again.
const UNDO_RETRY: Duration = Duration::from_secs(1);

struct Job {
    row: GenerationRow,
    /// When the caller stops waiting (and its client is answered 503).
    deadline: Instant,
    done: oneshot::Sender<Result<(), RepositoryError>>,
}

impl Job {
    fn abandoned(&self) -> bool {
        self.done.is_closed()
    }
}

#[derive(Clone)]
pub(crate) struct SuccessWriter {
    jobs: mpsc::Sender<Job>,
    call_timeout: Duration,
}

/// The writes' tasks. Each ends with the rows it committed after the writer had stopped
/// waiting for it (and answered its callers with an error): none, almost always.
type Writes = JoinSet<Vec<GenerationRow>>;

struct Writer {
    pool: ConnectionPool,
    call_timeout: Duration,
    commit_margin: Duration,
    /// Writes under way, and those the writer stopped waiting for, which run to their end.
    writes: Writes,
    /// Committed rows whose callers were told they failed, to take back.
    to_undo: Vec<GenerationRow>,
}

impl Writer {
    async fn run(mut self, mut waiting: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                biased;
                Some(finished) = self.writes.join_next() => {
                    if let Ok(committed_late) = finished {
                        self.to_undo.extend(committed_late);
                    }
                }
                () = tokio::time::sleep(UNDO_RETRY), if !self.to_undo.is_empty() => {}
                received = waiting.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    self.write(&mut batch).await;
                }
            }
            self.undo().await;
        }
    }

    /// Writes `batch` (emptying it) and answers each of its callers.
    async fn write(&mut self, batch: &mut Vec<Job>) {
        loop {
            // Nobody waits for these any more: their clients were answered with an error.
            batch.retain(|job| !job.abandoned());
            let Some(first_deadline) = batch.iter().map(|job| job.deadline).min() else {
                return;
            };
            let commit_by = first_deadline - self.commit_margin;
            let rows: Vec<GenerationRow> = batch.iter().map(|job| job.row.clone()).collect();
            match self.write_rows(rows, commit_by).await {
                Ok(BatchWrite::Committed) => {
                    for job in batch.drain(..) {
                        if let Err(Ok(())) = job.done.send(Ok(())) {
                            // Its caller gave up while `COMMIT` was under way.
                            self.to_undo.push(job.row);
                        }
                    }
                    return;
                }
                Ok(BatchWrite::TooLate) => {
                    // Those whose time is up are told so; the others are written again.
                    let now = Instant::now();
                    for job in batch.extract_if(.., |job| job.deadline - self.commit_margin <= now)
                    {
                        let _ = job.done.send(Err(self.timed_out()));
                    }
                }
                Err(error) if batch.len() == 1 => {
                    let _ = batch.remove(0).done.send(Err(error));
                    return;
                }
                Err(RepositoryError::Unavailable(cause)) => {
                    let reason = cause.to_string();
                    for job in batch.drain(..) {
                        let _ = job
                            .done
                            .send(Err(RepositoryError::Unavailable(reason.clone().into())));
                    }
                    return;
                }
                Err(_) => {
                    // One bad row: each is written on its own.
                    for job in batch.drain(..) {
                        let mut alone = vec![job];
                        Box::pin(self.write(&mut alone)).await;
                    }
                    return;
                }
            }
        }
    }

    /// Writes `rows` in one transaction as a task of its own, waiting for it at most the
    /// call timeout; a write still running then is left to finish (see `writes`).
    async fn write_rows(
        &mut self,
        rows: Vec<GenerationRow>,
        commit_by: Instant,
    ) -> Result<BatchWrite, RepositoryError> {
        let rows: std::sync::Arc<[GenerationRow]> = rows.into();
        let pool = self.pool.clone();
        let (sent, mut answer) = oneshot::channel();
        self.writes.spawn(async move {
            let written = write_successes(&pool, rows.clone(), commit_by.into_std()).await;
            let committed = matches!(written, Ok(BatchWrite::Committed));
            match sent.send(written) {
                Err(_) if committed => rows.to_vec(),
                _ => Vec::new(),
            }
        });
        match tokio::time::timeout(self.call_timeout, &mut answer).await {
            Ok(Ok(written)) => written,
            Ok(Err(_)) => Err(RepositoryError::unexpected("the write's task has stopped")),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Takes back the committed rows whose callers were told they failed; on failure they are
    /// tried again a second later.
    async fn undo(&mut self) {
        if self.to_undo.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.to_undo);
        let undone =
            tokio::time::timeout(self.call_timeout, undo_successes(&self.pool, rows.clone())).await;
        match undone {
            Ok(Ok(count)) => {
                tracing::warn!(
                    count,
                    "took back generations committed after their clients were answered 503"
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not yet take back generations committed late");
                self.to_undo = rows;
            }
            Err(_) => {
                tracing::warn!("could not yet take back generations committed late: timed out");
                self.to_undo = rows;
            }
        }
    }

    fn timed_out(&self) -> RepositoryError {
        RepositoryError::Unavailable(Box::new(CallTimedOut(self.call_timeout)))
    }
}

impl SuccessWriter {
    /// Starts the writer task on `runtime`; it ends when every `SuccessWriter` is dropped.
    pub(crate) fn start(
        pool: ConnectionPool,
        runtime: &tokio::runtime::Handle,
        call_timeout: Duration,
    ) -> Self {
        let (jobs, waiting) = mpsc::channel::<Job>(MAX_WAITING);
        let writer = Writer {
            pool,
            call_timeout,
            commit_margin: COMMIT_MARGIN.min(call_timeout / 4),
            writes: JoinSet::new(),
            to_undo: Vec::new(),
        };
        runtime.spawn(writer.run(waiting));
        Self { jobs, call_timeout }
    }

    /// Returns once the row and its usage are committed (or failed), within the call timeout.
    pub(crate) async fn write(&self, row: GenerationRow) -> Result<(), RepositoryError> {
        let (done, written) = oneshot::channel();
        let timed_out = || RepositoryError::Unavailable(Box::new(CallTimedOut(self.call_timeout)));
        // As long as any repository call, room in the queue included.
        let deadline = Instant::now() + self.call_timeout;
        let job = Job {
            row,
            deadline,
            done,
        };
        match tokio::time::timeout_at(deadline, self.jobs.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(RepositoryError::unexpected(
                    "the success writer has stopped",
                ));
            }
            Err(_) => return Err(timed_out()),
        }
        match tokio::time::timeout_at(deadline, written).await {
            Ok(answer) => answer.unwrap_or_else(|_| {
                Err(RepositoryError::unexpected(
                    "the success writer has stopped",
                ))
            }),
            Err(_) => Err(timed_out()),
        }
    }
}
