//! Where quota counters are kept.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::reservation::{Reservation, ReserveError, Reserved};
use crate::api_keys::model::AuthenticatedApiKey;
use crate::error::RepositoryError;

/// Day and month quota counters.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait QuotaRepository: Send + Sync + 'static {
    /// Reserves `images` for the caller at `at` against every day and month quota of its key
    /// and its account, reading the key's and the account's state and limits as they are
    /// now (not as a cache last saw them): all counters or none, each with a conditional
    /// update (never a read then a write), so concurrent reservations, on one instance or
    /// many, cannot pass a limit. MUST return `Exceeded` with the quota that refused,
    /// `KeyRevoked`, `KeyExpired` or `AccountDisabled` (reserving nothing) when so.
    async fn reserve(
        &self,
        caller: &AuthenticatedApiKey,
        images: u64,
        at: OffsetDateTime,
    ) -> Result<Reserved, ReserveError>;

    /// Gives back `images` of a reservation (images not made), in the periods it counted in.
    async fn release(&self, reservation: &Reservation, images: u64) -> Result<(), RepositoryError>;
}
