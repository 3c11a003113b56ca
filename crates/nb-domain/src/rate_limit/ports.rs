//! The port limits are counted through: in memory for one instance, in PostgreSQL or Redis
//! for several.

use async_trait::async_trait;

use super::model::{PerMinute, RateDecision, RateLimitKey, Taken};
use crate::error::{BoxError, RepositoryError};

/// Why a limiter could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The counts live in the database, and it failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The store the counts live in (Redis) does not answer.
    #[error("the store that counts rate limits is unavailable")]
    Unavailable(#[source] BoxError),
}

/// Counts requests against allowances.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request for `key` against `rate` when it is allowed; a refused request
    /// MUST NOT be counted. When the counts cannot be read or written it MUST fail, never
    /// allow uncounted: `RateLimitError::Repository` when they live in the database,
    /// `RateLimitError::Unavailable` when a store of their own (Redis) does not answer.
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RateLimitError>;

    /// Takes up to `wanted` requests' worth of `key`'s allowance at once, for an instance to
    /// hand out itself (see [`LeasedRateLimiter`](super::LeasedRateLimiter)), after giving
    /// back `returned` taken earlier and not used: as many as fit, never more (0 when none
    /// does). The decision is that of the last request granted, or the refusal. The same
    /// failures as [`check`](Self::check).
    ///
    /// The default decides one request at a time and gives nothing back: right for a limiter
    /// no other instance shares, which is never leased from.
    async fn take(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
        wanted: u32,
        returned: u32,
    ) -> Result<Taken, RateLimitError> {
        let _ = returned;
        let mut taken = Taken::nothing(rate);
        while taken.granted < wanted {
            taken.last = self.check(key, rate).await?;
            if !taken.last.allowed {
                break;
            }
            taken.granted += 1;
        }
        Ok(taken)
    }

    /// Forgets subjects whose allowance is back to full (memory or rows stay bounded by
    /// recent clients); how many. Called every minute.
    async fn forget_idle(&self) -> Result<u64, RateLimitError>;
}
