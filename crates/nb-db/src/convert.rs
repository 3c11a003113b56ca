//! Translations between stored values and domain values, and from diesel's errors to the
//! domain's.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use nb_domain::RepositoryError;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use uuid::Uuid;

/// Timestamps are stored as UTC wall-clock time.
pub(crate) fn to_stored_time(at: OffsetDateTime) -> PrimitiveDateTime {
    let utc = at.to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(utc.date(), utc.time())
}

pub(crate) fn from_stored_time(stored: PrimitiveDateTime) -> OffsetDateTime {
    stored.assume_utc()
}

pub(crate) fn parse_stored_id(stored: &str) -> Result<Uuid, RepositoryError> {
    Uuid::parse_str(stored).map_err(RepositoryError::unexpected)
}

pub(crate) fn pool_error(
    error: diesel_async::pooled_connection::deadpool::PoolError,
) -> RepositoryError {
    RepositoryError::Unavailable(Box::new(error))
}

pub(crate) fn query_error(error: DieselError) -> RepositoryError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::BrokenTransactionManager => RepositoryError::Unavailable(Box::new(error)),
        other => RepositoryError::Unexpected(Box::new(other)),
    }
}

pub(crate) fn is_unique_violation(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
