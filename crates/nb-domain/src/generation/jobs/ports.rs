//! The queue of jobs, shared by every instance.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::model::{ClaimedJob, NewJob};
use crate::accounts::model::UserId;
use crate::error::RepositoryError;
use crate::generation::model::{GenerationId, GenerationRecord};
use crate::quota::reservation::Settlement;

/// The durable queue of jobs. Every method that changes a claimed job MUST do so only while
/// `job.lease` is still the job's lease, and MUST return `Ok(false)` (changing nothing)
/// otherwise: another worker took the job after the lease ran out.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait JobRepository: Send + Sync + 'static {
    /// Commits the job and its `queued` generation row together.
    async fn submit(&self, job: &NewJob) -> Result<(), RepositoryError>;

    /// Takes the oldest job that is queued (and due), or running with a lease that ran out
    /// before `now`, marking it (and its generation) `running` under a new lease until
    /// `lease_until` and counting the attempt. Two workers never take the same job at once
    /// (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    async fn claim(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<ClaimedJob>, RepositoryError>;

    /// Takes the oldest job still queued without any attempt that was submitted before
    /// `submitted_before` (as [`claim`](Self::claim) does), for it to fail with
    /// `queue_timeout` whether or not a worker is free.
    async fn claim_overdue(
        &self,
        submitted_before: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<ClaimedJob>, RepositoryError>;

    /// Extends the lease.
    async fn renew(
        &self,
        job: &ClaimedJob,
        lease_until: OffsetDateTime,
    ) -> Result<bool, RepositoryError>;

    /// Puts the job back in the queue (and its generation back to `queued`), due at
    /// `run_after`, remembering why this attempt failed.
    async fn retry(
        &self,
        job: &ClaimedJob,
        error_code: &str,
        run_after: OffsetDateTime,
    ) -> Result<bool, RepositoryError>;

    /// The job made its image: in one transaction, the generation row becomes `record`
    /// (which MUST be a success), its usage is counted, the job's reservation is settled with
    /// `settlement`, and the job leaves the queue.
    async fn succeed(
        &self,
        job: &ClaimedJob,
        record: &GenerationRecord,
        settlement: Settlement,
    ) -> Result<bool, RepositoryError>;

    /// The job failed for good: in one transaction, its generation becomes `failed` with
    /// `error_code` and `latency`, its reservation is settled, and it leaves the queue.
    async fn fail(
        &self,
        job: &ClaimedJob,
        error_code: &str,
        latency: Duration,
        settlement: Settlement,
    ) -> Result<bool, RepositoryError>;

    /// Cancels the user's job `id` if it is queued (not running, not finished): in one
    /// transaction its generation becomes `canceled`, its whole reservation is given back
    /// and it leaves the queue. `Ok(false)` when it is not a queued job of the user's (a
    /// worker that takes it at the same moment and this cancel never both win).
    async fn cancel(&self, user_id: UserId, id: GenerationId) -> Result<bool, RepositoryError>;

    /// How many jobs are queued or running.
    async fn depth(&self) -> Result<u64, RepositoryError>;
}
