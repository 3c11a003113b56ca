//! What every feature asks of the machine: the time, fresh ids and secure randomness. The
//! real ones are in `nb-system`; tests hold them still.

use time::OffsetDateTime;
use uuid::Uuid;

/// The current time.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// The current UTC time, at microsecond precision (what every database keeps).
    fn now(&self) -> OffsetDateTime;
}

/// `at` cut to whole microseconds, the precision every database keeps: a time stored and
/// read back equals the time shown when it was written.
pub fn to_microseconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// Fresh ids for new records.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait IdGenerator: Send + Sync + 'static {
    /// A new id, never returned before. Implementations SHOULD be time-ordered (UUIDv7).
    fn new_id(&self) -> Uuid;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator is unavailable")]
pub struct RandomnessUnavailable;

/// Cryptographically secure random bytes.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait RandomSource: Send + Sync + 'static {
    /// Fills `dest` from a CSPRNG, or MUST return `RandomnessUnavailable` (never weak bytes).
    fn fill_bytes(&self, dest: &mut [u8]) -> Result<(), RandomnessUnavailable>;
}
