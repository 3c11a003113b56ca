//! Where quota counters are kept.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::reservation::{Ask, Reservation, ReserveError, Reserved, Settlement};
use crate::api_keys::model::AuthenticatedApiKey;
use crate::error::RepositoryError;

/// Day and month quota counters.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait QuotaRepository: Send + Sync + 'static {
    /// Reserves `ask` (images, and their estimated cost) for the caller at `at` against every
    /// day and month quota and budget of its key and its account, reading the key's and the account's state and limits as they are
    /// now (not as a cache last saw them): all counters or none, each with a conditional
    /// update (never a read then a write), so concurrent reservations, on one instance or
    /// many, cannot pass a limit. MUST return `Exceeded` with the quota that refused,
    /// `OverBudget` with the budget that refused, `KeyRevoked`, `KeyExpired` or
    /// `AccountDisabled` (reserving nothing) when so.
    async fn reserve(
        &self,
        caller: &AuthenticatedApiKey,
        ask: Ask,
        at: OffsetDateTime,
    ) -> Result<Reserved, ReserveError>;

    /// Decides as `reserve` would, and reserves nothing (a dry run).
    async fn check(
        &self,
        caller: &AuthenticatedApiKey,
        ask: Ask,
        at: OffsetDateTime,
    ) -> Result<Reserved, ReserveError>;

    /// Settles a reservation in the periods it counted in: gives back the images not made
    /// and moves the dollars by the difference between the real cost and the estimate.
    async fn settle(
        &self,
        reservation: &Reservation,
        settlement: Settlement,
    ) -> Result<(), RepositoryError>;
}
