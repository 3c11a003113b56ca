//! Group commit for succeeded generations.
//!
//! Each success must be written with its usage increment in one transaction, and a durable
//! commit costs a disk flush. Instead of one transaction per generation, one writer task takes
//! every success waiting at that moment (up to `MAX_BATCH`), writes them in one transaction,
//! and then answers each caller: the flush is shared, and a caller still returns only once its
//! own row is committed. A batch that fails is retried one success at a time, so one bad row
//! cannot fail the others.

use nb_domain::RepositoryError;
use tokio::sync::{mpsc, oneshot};

use super::{GenerationRow, write_successes};
use crate::pool::ConnectionPool;

const MAX_BATCH: usize = 512;

struct Job {
    row: GenerationRow,
    done: oneshot::Sender<Result<(), RepositoryError>>,
}

#[derive(Clone)]
pub(crate) struct SuccessWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl SuccessWriter {
    /// Starts the writer task on `runtime`; it ends when every `SuccessWriter` is dropped.
    pub(crate) fn start(pool: ConnectionPool, runtime: &tokio::runtime::Handle) -> Self {
        let (jobs, mut waiting) = mpsc::unbounded_channel::<Job>();
        runtime.spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let rows = batch.iter().map(|job| job.row.clone()).collect();
                match write_successes(&pool, rows).await {
                    Ok(()) => {
                        for job in batch.drain(..) {
                            let _ = job.done.send(Ok(()));
                        }
                    }
                    Err(error) if batch.len() == 1 => {
                        let _ = batch.remove(0).done.send(Err(error));
                    }
                    Err(_) => {
                        for job in batch.drain(..) {
                            let written = write_successes(&pool, vec![job.row]).await;
                            let _ = job.done.send(written);
                        }
                    }
                }
            }
        });
        Self { jobs }
    }

    /// Returns once the row and its usage are committed (or failed). A caller that stops
    /// waiting does not stop the write.
    pub(crate) async fn write(&self, row: GenerationRow) -> Result<(), RepositoryError> {
        let (done, written) = oneshot::channel();
        self.jobs
            .send(Job { row, done })
            .map_err(|_| RepositoryError::unexpected("the success writer has stopped"))?;
        written.await.unwrap_or_else(|_| {
            Err(RepositoryError::unexpected(
                "the success writer has stopped",
            ))
        })
    }
}
