//! Where `Idempotency-Key` entries are kept.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::model::{ClaimOutcome, IdempotencyLease, KeptAnswer, NewClaim};
use crate::error::RepositoryError;

/// Entries of `Idempotency-Key`, one per API key and idempotency key, shared by every
/// instance.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait IdempotencyRepository: Send + Sync + 'static {
    /// Atomically (one winner among concurrent callers, on every instance): creates the entry
    /// as running under `claim.lease`, or takes over one that has expired or whose running
    /// lease has lapsed (`locked_until <= claim.now`), and MUST then return `Claimed`.
    /// Otherwise it MUST return the live entry (`Existing`, with its answer once completed),
    /// or `Vanished` when the entry it met was removed before it could be read.
    async fn claim(&self, claim: &NewClaim) -> Result<ClaimOutcome, RepositoryError>;

    /// Stores `answer` and `expires_at` on the entry held by `lease`; MUST return `false`
    /// (and change nothing) when `lease` no longer holds it.
    async fn complete(
        &self,
        lease: &IdempotencyLease,
        answer: &KeptAnswer,
        expires_at: OffsetDateTime,
    ) -> Result<bool, RepositoryError>;

    /// Removes the entry if `lease` still holds it.
    async fn release(&self, lease: &IdempotencyLease) -> Result<(), RepositoryError>;

    /// Removes every entry that expired at or before `now`; how many.
    async fn delete_expired(&self, now: OffsetDateTime) -> Result<u64, RepositoryError>;
}
