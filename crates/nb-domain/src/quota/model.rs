//! What a quota is: a number of images per UTC day or calendar month (UTC), for a key or an
//! account, and where one stands; a budget is the same in dollars. Periods reset at predictable times: 00:00 UTC each day, and
//! 00:00 UTC on the 1st of each month.

use std::num::NonZeroU64;

use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

use crate::money::Usd;

/// A positive count of images.
pub type QuotaLimit = NonZeroU64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    /// A UTC day.
    Day,
    /// A calendar month, in UTC.
    Month,
}

impl QuotaPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The first day of the period holding `at`.
    pub fn starts_on(self, at: OffsetDateTime) -> Date {
        let day = at.to_offset(UtcOffset::UTC).date();
        match self {
            Self::Day => day,
            Self::Month => day.replace_day(1).unwrap_or(day),
        }
    }

    /// When the period holding `at` ends and the next begins.
    pub fn resets_at(self, at: OffsetDateTime) -> OffsetDateTime {
        let start = self.starts_on(at);
        let next = match self {
            Self::Day => start.next_day(),
            Self::Month => {
                let (year, month) = match start.month() {
                    Month::December => (start.year() + 1, Month::January),
                    month => (start.year(), month.next()),
                };
                Date::from_calendar_date(year, month, 1).ok()
            }
        };
        next.map_or(at, |day| day.with_time(Time::MIDNIGHT).assume_utc())
    }
}

/// Whose counter: a key's, or its account's (all its keys together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaScope {
    Key,
    Account,
}

impl QuotaScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Account => "account",
        }
    }
}

/// Day and month quotas of images and budgets of dollars (absent: no limit beyond the
/// server's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodLimits {
    pub per_day: Option<QuotaLimit>,
    pub per_month: Option<QuotaLimit>,
    pub budget_per_day: Option<Usd>,
    pub budget_per_month: Option<Usd>,
}

impl PeriodLimits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn get(&self, period: QuotaPeriod) -> Option<QuotaLimit> {
        match period {
            QuotaPeriod::Day => self.per_day,
            QuotaPeriod::Month => self.per_month,
        }
    }

    pub fn budget(&self, period: QuotaPeriod) -> Option<Usd> {
        match period {
            QuotaPeriod::Day => self.budget_per_day,
            QuotaPeriod::Month => self.budget_per_month,
        }
    }
}

/// Where one budget stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStanding {
    pub scope: QuotaScope,
    pub period: QuotaPeriod,
    pub budget: Usd,
    /// Spent and reserved in the period, this request's estimate included when it was allowed.
    pub spent: Usd,
    pub resets_at: OffsetDateTime,
    pub checked_at: OffsetDateTime,
}

impl BudgetStanding {
    pub fn remaining(&self) -> Usd {
        self.budget.saturating_sub(self.spent).max(Usd::ZERO)
    }

    /// Whole seconds from when it was read to the reset, rounded up (at least 1).
    pub fn seconds_to_reset(&self) -> u64 {
        seconds_between(self.checked_at, self.resets_at)
    }
}

/// Whole seconds from `from` to `to`, rounded up (at least 1).
fn seconds_between(from: OffsetDateTime, to: OffsetDateTime) -> u64 {
    let wait = to - from;
    let seconds = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
    u64::try_from(seconds).unwrap_or(0).max(1)
}

/// Where one quota stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStanding {
    pub scope: QuotaScope,
    pub period: QuotaPeriod,
    pub limit: u64,
    /// Images counted in the period, this request's included when it was allowed.
    pub used: u64,
    pub resets_at: OffsetDateTime,
    /// When it was read (the clock of the request).
    pub checked_at: OffsetDateTime,
}

impl QuotaStanding {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Whole seconds from when it was read to the reset, rounded up (at least 1).
    pub fn seconds_to_reset(&self) -> u64 {
        seconds_between(self.checked_at, self.resets_at)
    }
}

/// Of the quotas that refuse a request, the one to report: the one that resets last, so
/// that a client waiting for its reset is not refused again by another.
pub fn longest_refusal(refusals: impl IntoIterator<Item = QuotaStanding>) -> Option<QuotaStanding> {
    refusals
        .into_iter()
        .max_by_key(|standing| standing.resets_at)
}

/// The tightest of several standings: the fewest images left, then the soonest reset.
pub fn tightest(standings: impl IntoIterator<Item = QuotaStanding>) -> Option<QuotaStanding> {
    standings
        .into_iter()
        .min_by_key(|standing| (standing.remaining(), standing.resets_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn days_and_months_reset_at_utc_midnight() {
        let late = datetime!(2026-11-30 23:59:59 UTC);
        assert_eq!(QuotaPeriod::Day.starts_on(late), date!(2026 - 11 - 30));
        assert_eq!(
            QuotaPeriod::Day.resets_at(late),
            datetime!(2026-12-01 00:00 UTC)
        );
        assert_eq!(QuotaPeriod::Month.starts_on(late), date!(2026 - 11 - 01));
        assert_eq!(
            QuotaPeriod::Month.resets_at(late),
            datetime!(2026-12-01 00:00 UTC)
        );
        let december = datetime!(2026-12-31 12:00 UTC);
        assert_eq!(
            QuotaPeriod::Month.resets_at(december),
            datetime!(2027-01-01 00:00 UTC)
        );
        // Time zones do not move the boundary: 23:30 at -02:00 is already the next UTC day.
        let offset = datetime!(2026-11-30 23:30 -02:00);
        assert_eq!(QuotaPeriod::Day.starts_on(offset), date!(2026 - 12 - 01));
        assert_eq!(QuotaPeriod::Month.starts_on(offset), date!(2026 - 12 - 01));
    }

    #[test]
    fn the_tightest_quota_has_the_fewest_images_left() {
        let standing = |period, limit, used, resets_at| QuotaStanding {
            scope: QuotaScope::Key,
            period,
            limit,
            used,
            resets_at,
            checked_at: datetime!(2026-11-30 12:00 UTC),
        };
        let day = standing(QuotaPeriod::Day, 10, 9, datetime!(2026-12-01 00:00 UTC));
        let month = standing(QuotaPeriod::Month, 100, 50, datetime!(2026-12-01 00:00 UTC));
        assert_eq!(tightest([month, day]), Some(day));
        assert_eq!(day.seconds_to_reset(), 12 * 60 * 60);
        let full_month = standing(
            QuotaPeriod::Month,
            100,
            100,
            datetime!(2027-01-01 00:00 UTC),
        );
        assert_eq!(longest_refusal([day, full_month]), Some(full_month));
        assert_eq!(longest_refusal([]), None);
        assert_eq!(tightest([]), None);
    }
}
