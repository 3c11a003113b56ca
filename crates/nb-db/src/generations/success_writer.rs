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
//! refused), a caller waits at most the database's call timeout in all (for room, then for its
//! commit; past it the database counts as unavailable), and a success whose caller stopped
//! waiting before its batch began is not written (the client was told it failed; its image is
//! deleted).

use std::time::Duration;

use nb_domain::RepositoryError;
use tokio::sync::{mpsc, oneshot};

use super::rows::{GenerationRow, write_successes};
use crate::pool::{CallTimedOut, ConnectionPool};

const MAX_BATCH: usize = 512;
/// The most successes queued for the writer (more wait for room).
const MAX_WAITING: usize = 4 * MAX_BATCH;

struct Job {
    row: GenerationRow,
    done: oneshot::Sender<Result<(), RepositoryError>>,
}

#[derive(Clone)]
pub(crate) struct SuccessWriter {
    jobs: mpsc::Sender<Job>,
    call_timeout: Duration,
}

/// Writes `rows` in one transaction, giving up (as unavailable) after `call_timeout`.
async fn write_within(
    pool: &ConnectionPool,
    rows: Vec<GenerationRow>,
    call_timeout: Duration,
) -> Result<(), RepositoryError> {
    tokio::time::timeout(call_timeout, write_successes(pool, rows))
        .await
        .unwrap_or_else(|_| {
            Err(RepositoryError::Unavailable(Box::new(CallTimedOut(
                call_timeout,
            ))))
        })
}

impl SuccessWriter {
    /// Starts the writer task on `runtime`; it ends when every `SuccessWriter` is dropped.
    pub(crate) fn start(
        pool: ConnectionPool,
        runtime: &tokio::runtime::Handle,
        call_timeout: Duration,
    ) -> Self {
        let (jobs, mut waiting) = mpsc::channel::<Job>(MAX_WAITING);
        runtime.spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Nobody waits for these any more: their clients were answered with an error.
                batch.retain(|job| !job.done.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let rows = batch.iter().map(|job| job.row.clone()).collect();
                match write_within(&pool, rows, call_timeout).await {
                    Ok(()) => {
                        for job in batch.drain(..) {
                            let _ = job.done.send(Ok(()));
                        }
                    }
                    Err(error) if batch.len() == 1 => {
                        let _ = batch.remove(0).done.send(Err(error));
                    }
                    Err(RepositoryError::Unavailable(cause)) => {
                        let reason = cause.to_string();
                        for job in batch.drain(..) {
                            let _ = job
                                .done
                                .send(Err(RepositoryError::Unavailable(reason.clone().into())));
                        }
                    }
                    Err(_) => {
                        for job in batch.drain(..) {
                            let written = write_within(&pool, vec![job.row], call_timeout).await;
                            let _ = job.done.send(written);
                        }
                    }
                }
            }
        });
        Self { jobs, call_timeout }
    }

    /// Returns once the row and its usage are committed (or failed). A caller that stops
    /// waiting does not stop the write.
    pub(crate) async fn write(&self, row: GenerationRow) -> Result<(), RepositoryError> {
        let (done, written) = oneshot::channel();
        let timed_out = || RepositoryError::Unavailable(Box::new(CallTimedOut(self.call_timeout)));
        // As long as any repository call, room in the queue included: a caller that gives up
        // is not written (see above).
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        match tokio::time::timeout_at(deadline, self.jobs.send(Job { row, done })).await {
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
