//! Usage: how many images each key made on each UTC day.

use time::{Date, OffsetDateTime, UtcOffset};

use crate::api_keys::ApiKeyId;

/// One day of one key's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    pub api_key_id: ApiKeyId,
    pub day: Date,
    pub count: u64,
}

pub const DEFAULT_USAGE_DAYS: u16 = 30;
pub const MAX_USAGE_DAYS: u16 = 366;

/// How many UTC days of usage to report, today included: 1 to 366, 30 when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDays(u16);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("days must be between 1 and {MAX_USAGE_DAYS}")]
pub struct InvalidUsageDays;

impl UsageDays {
    pub fn parse(requested: Option<u16>) -> Result<Self, InvalidUsageDays> {
        let days = requested.unwrap_or(DEFAULT_USAGE_DAYS);
        if (1..=MAX_USAGE_DAYS).contains(&days) {
            Ok(Self(days))
        } else {
            Err(InvalidUsageDays)
        }
    }

    /// The first UTC day of the window that ends today.
    pub fn first_day(self, now: OffsetDateTime) -> Date {
        let today = now.to_offset(UtcOffset::UTC).date();
        today - time::Duration::days(i64::from(self.0) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn the_window_is_bounded_and_defaults_to_30_days() {
        assert_eq!(UsageDays::parse(None), Ok(UsageDays(30)));
        assert_eq!(UsageDays::parse(Some(0)), Err(InvalidUsageDays));
        assert_eq!(UsageDays::parse(Some(367)), Err(InvalidUsageDays));
        let now = datetime!(2026-03-01 00:30 +02:00);
        assert_eq!(
            UsageDays::parse(Some(1)).unwrap().first_day(now),
            date!(2026 - 02 - 28)
        );
        assert_eq!(
            UsageDays::parse(Some(366)).unwrap().first_day(now),
            date!(2025 - 02 - 28)
        );
    }
}
