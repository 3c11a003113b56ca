//! Usage: how many images were made, and what they cost, by UTC day, key, model and mode,
//! over a range of days.

use time::{Date, OffsetDateTime, UtcOffset};

use crate::api_keys::model::{ApiKeyId, KeyMode};
use crate::money::Usd;

/// Images one key made on one UTC day (with one model, when the model is asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFact {
    pub day: Date,
    pub api_key_id: ApiKeyId,
    pub mode: KeyMode,
    /// Set when the facts were read by model.
    pub model: Option<String>,
    pub count: u64,
    pub cost: Usd,
}

/// What usage can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageDimension {
    Day,
    Key,
    Model,
    Mode,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUsageQuery {
    #[error("group_by takes day, key, model and mode, separated by commas")]
    GroupBy,
    #[error("from must be a day (YYYY-MM-DD) no later than to")]
    From,
    #[error("to must be a day (YYYY-MM-DD)")]
    To,
    #[error("days must be between 1 and {MAX_USAGE_DAYS}")]
    Days,
    #[error("a range is at most {MAX_USAGE_DAYS} days")]
    TooLong,
}

impl InvalidUsageQuery {
    pub fn field(&self) -> &'static str {
        match self {
            Self::GroupBy => "group_by",
            Self::From | Self::TooLong => "from",
            Self::To => "to",
            Self::Days => "days",
        }
    }
}

/// A usage report's question: which UTC days (both ends included), grouped how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub from: Date,
    pub to: Date,
    /// In the order asked; by day and key when not asked.
    pub group_by: Vec<UsageDimension>,
}

impl UsageQuery {
    /// `from`/`to` (days, inclusive) or the last `days` days (default 30) ending today;
    /// `group_by` a comma-separated list of `day`, `key`, `model`, `mode`.
    pub fn parse(
        days: Option<u16>,
        from: Option<&str>,
        to: Option<&str>,
        group_by: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Self, InvalidUsageQuery> {
        let today = now.to_offset(UtcOffset::UTC).date();
        let day = |raw: &str, error| {
            Date::parse(
                raw,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|_| error)
        };
        let to = to
            .map(|raw| day(raw, InvalidUsageQuery::To))
            .transpose()?
            .unwrap_or(today);
        let from = match from {
            Some(raw) => day(raw, InvalidUsageQuery::From)?,
            None => {
                let days = UsageDays::parse(days).map_err(|_| InvalidUsageQuery::Days)?;
                to - time::Duration::days(i64::from(days.0) - 1)
            }
        };
        if from > to {
            return Err(InvalidUsageQuery::From);
        }
        if (to - from).whole_days() >= i64::from(MAX_USAGE_DAYS) {
            return Err(InvalidUsageQuery::TooLong);
        }
        let group_by = match group_by {
            None => vec![UsageDimension::Day, UsageDimension::Key],
            Some(raw) => {
                let mut dimensions = Vec::new();
                for name in raw.split(',').map(str::trim) {
                    let dimension = match name {
                        "day" => UsageDimension::Day,
                        "key" => UsageDimension::Key,
                        "model" => UsageDimension::Model,
                        "mode" => UsageDimension::Mode,
                        _ => return Err(InvalidUsageQuery::GroupBy),
                    };
                    if !dimensions.contains(&dimension) {
                        dimensions.push(dimension);
                    }
                }
                dimensions
            }
        };
        Ok(Self { from, to, group_by })
    }

    pub fn by(&self, dimension: UsageDimension) -> bool {
        self.group_by.contains(&dimension)
    }
}

/// One line of a report: the count for one combination of the dimensions grouped by (the
/// others `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub day: Option<Date>,
    pub api_key_id: Option<ApiKeyId>,
    pub model: Option<String>,
    pub mode: Option<KeyMode>,
    pub count: u64,
    /// The sum of the generations' costs, exact.
    pub cost: Usd,
}

/// Sums facts by the query's dimensions: newest day first, then by key, model and mode.
pub fn group_usage(facts: Vec<UsageFact>, query: &UsageQuery) -> Vec<UsageRow> {
    let mut rows: std::collections::BTreeMap<_, (u64, Usd)> = std::collections::BTreeMap::new();
    for fact in facts {
        let key = (
            query
                .by(UsageDimension::Day)
                .then_some(std::cmp::Reverse(fact.day)),
            query.by(UsageDimension::Key).then_some(fact.api_key_id.0),
            query
                .by(UsageDimension::Model)
                .then(|| fact.model.clone())
                .flatten(),
            query.by(UsageDimension::Mode).then_some(fact.mode.as_str()),
        );
        let row = rows.entry(key).or_default();
        row.0 += fact.count;
        row.1 = row.1.saturating_add(fact.cost);
    }
    rows.into_iter()
        .map(|((day, key, model, mode), (count, cost))| UsageRow {
            day: day.map(|day| day.0),
            api_key_id: key.map(ApiKeyId),
            model,
            mode: mode.and_then(|mode| KeyMode::parse(mode).ok()),
            count,
            cost,
        })
        .collect()
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

    const NOW: OffsetDateTime = datetime!(2026-11-28 10:00 UTC);

    #[test]
    fn ranges_are_days_both_ends_included_and_bounded() {
        let default = UsageQuery::parse(None, None, None, None, NOW).unwrap();
        assert_eq!(
            (default.from, default.to),
            (date!(2026 - 10 - 30), date!(2026 - 11 - 28))
        );
        assert_eq!(default.group_by, [UsageDimension::Day, UsageDimension::Key]);
        let week = UsageQuery::parse(Some(7), None, None, None, NOW).unwrap();
        assert_eq!(week.from, date!(2026 - 11 - 22));
        let explicit =
            UsageQuery::parse(None, Some("2026-11-01"), Some("2026-11-15"), None, NOW).unwrap();
        assert_eq!(
            (explicit.from, explicit.to),
            (date!(2026 - 11 - 01), date!(2026 - 11 - 15))
        );
        for (from, to, field) in [
            (Some("2026-11-16"), Some("2026-11-15"), "from"),
            (Some("2026/11/01"), None, "from"),
            (None, Some("yesterday"), "to"),
            (Some("2025-01-01"), Some("2026-11-15"), "from"),
        ] {
            let error = UsageQuery::parse(None, from, to, None, NOW).unwrap_err();
            assert_eq!(error.field(), field, "{from:?} {to:?}");
        }
        assert_eq!(
            UsageQuery::parse(Some(0), None, None, None, NOW).unwrap_err(),
            InvalidUsageQuery::Days
        );
    }

    #[test]
    fn facts_are_summed_by_the_dimensions_asked() {
        let key = |n| ApiKeyId(uuid::Uuid::from_u128(n));
        let fact = |day, n, mode, model: &str, count| UsageFact {
            day,
            api_key_id: key(n),
            mode,
            model: Some(model.to_owned()),
            count,
            // A micro-dollar and a half an image: sums must not round.
            cost: Usd::from_nanos(1_500 * count as i64),
        };
        let facts = vec![
            fact(date!(2026 - 11 - 27), 1, KeyMode::Live, "flash", 2),
            fact(date!(2026 - 11 - 28), 1, KeyMode::Live, "pro", 3),
            fact(date!(2026 - 11 - 28), 2, KeyMode::Test, "flash", 5),
        ];
        let by = |group_by: &str| {
            let query = UsageQuery::parse(None, None, None, Some(group_by), NOW).unwrap();
            group_usage(facts.clone(), &query)
        };
        let by_model = by("model");
        assert_eq!(
            by_model
                .iter()
                .map(|row| (row.model.as_deref(), row.count))
                .collect::<Vec<_>>(),
            [(Some("flash"), 7), (Some("pro"), 3)]
        );
        assert_eq!(
            by_model
                .iter()
                .map(|row| row.cost.to_string())
                .collect::<Vec<_>>(),
            ["0.000011", "0.000005"]
        );
        assert!(
            by_model
                .iter()
                .all(|row| row.day.is_none() && row.api_key_id.is_none())
        );
        let by_day_and_mode = by("day, mode");
        assert_eq!(
            by_day_and_mode
                .iter()
                .map(|row| (row.day.unwrap(), row.mode.unwrap(), row.count))
                .collect::<Vec<_>>(),
            [
                (date!(2026 - 11 - 28), KeyMode::Live, 3),
                (date!(2026 - 11 - 28), KeyMode::Test, 5),
                (date!(2026 - 11 - 27), KeyMode::Live, 2),
            ]
        );
        assert_eq!(by("key").len(), 2);
        assert_eq!(
            UsageQuery::parse(None, None, None, Some("day,colour"), NOW).unwrap_err(),
            InvalidUsageQuery::GroupBy
        );
    }
}
