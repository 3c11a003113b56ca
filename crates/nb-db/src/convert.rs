//! Translations between stored values and domain values, and from diesel's errors to the
//! domain's.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use nb_domain::RepositoryError;
use nb_domain::money::Usd;
use nb_domain::quota::{PeriodLimits, QuotaLimit};
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

/// A stored limit (`NULL`: none). A stored value that is not positive means none.
fn to_limit(stored: Option<i64>) -> Option<QuotaLimit> {
    stored
        .and_then(|n| u64::try_from(n).ok())
        .and_then(QuotaLimit::new)
}

fn from_limit(limit: Option<QuotaLimit>) -> Option<i64> {
    limit.map(|n| i64::try_from(n.get()).unwrap_or(i64::MAX))
}

/// A key's or an account's limit columns as stored, in this order: images a UTC day, images a
/// month, nano-dollars a day, nano-dollars a month (`NULL`: none).
pub(crate) type StoredLimits = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

pub(crate) fn to_period_limits(stored: StoredLimits) -> PeriodLimits {
    let (per_day, per_month, budget_per_day, budget_per_month) = stored;
    PeriodLimits {
        per_day: to_limit(per_day),
        per_month: to_limit(per_month),
        budget_per_day: budget_per_day.map(Usd::from_nanos),
        budget_per_month: budget_per_month.map(Usd::from_nanos),
    }
}

pub(crate) fn from_period_limits(limits: PeriodLimits) -> StoredLimits {
    (
        from_limit(limits.per_day),
        from_limit(limits.per_month),
        limits.budget_per_day.map(Usd::nanos),
        limits.budget_per_month.map(Usd::nanos),
    )
}

pub(crate) fn parse_stored_id(stored: &str) -> Result<Uuid, RepositoryError> {
    Uuid::parse_str(stored).map_err(RepositoryError::unexpected)
}

pub(crate) fn pool_error(
    error: diesel_async::pooled_connection::deadpool::PoolError,
) -> RepositoryError {
    RepositoryError::Unavailable(Box::new(error))
}

/// Server messages that mean "the database is going away or busy", not "this query is wrong":
/// PostgreSQL shutting down or restarting (SQLSTATE class 57, which diesel does not expose),
/// and SQLite's busy timeout running out.
const UNAVAILABLE_MESSAGES: [&str; 5] = [
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "connection closed",
    "database is locked",
];

/// A failed statement: `Unavailable` when the database could not be reached or is going
/// away (callers answer 503 and the pool replaces the connection), `Unexpected` otherwise.
pub(crate) fn query_error(error: DieselError) -> RepositoryError {
    let unavailable = match &error {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => UNAVAILABLE_MESSAGES
            .iter()
            .any(|message| info.message().contains(message)),
        _ => false,
    };
    if unavailable {
        RepositoryError::Unavailable(Box::new(error))
    } else {
        RepositoryError::Unexpected(Box::new(error))
    }
}

pub(crate) fn is_unique_violation(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
