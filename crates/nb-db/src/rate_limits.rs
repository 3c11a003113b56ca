//! Per-minute limits shared by every instance, in PostgreSQL: GCRA (the algorithm the
//! in-memory limiter uses too) in one atomic statement per decision.
//!
//! Each (action and allowance, subject) row keeps its theoretical arrival time `tat` (epoch seconds, by the
//! database's clock, so instances' clocks do not matter). For an allowance of `n` a minute,
//! each request moves `tat` by `T = 60 / n` seconds from `max(tat, now)`, and is allowed
//! while that stays within a minute of now: up to `n` at once, then one every `T`. The
//! upsert's row lock makes concurrent decisions on one subject take turns, on every instance.

use std::time::Duration;

use async_trait::async_trait;
use diesel::sql_types::{Bool, Double, Text};
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::rate_limit::{PerMinute, RateDecision, RateLimitKey, RateLimiter};

use crate::convert::query_error;
use crate::pool::{ConnectionPool, Database, with_connection};

/// The window an allowance refills in.
const WINDOW_SECONDS: f64 = 60.0;

/// Rate limits counted in PostgreSQL, shared by every instance on it.
#[derive(Debug, Clone)]
pub struct PostgresRateLimiter {
    database: Database,
}

impl Database {
    /// The shared limiter, on PostgreSQL; `None` on SQLite (one instance: count in memory).
    pub fn shared_rate_limiter(&self) -> Option<PostgresRateLimiter> {
        matches!(self.pool, ConnectionPool::Postgres(_)).then(|| PostgresRateLimiter {
            database: self.clone(),
        })
    }
}

#[derive(diesel::QueryableByName)]
struct Decided {
    #[diesel(sql_type = Double)]
    tat: f64,
    #[diesel(sql_type = Bool)]
    allowed: bool,
    #[diesel(sql_type = Double)]
    now: f64,
}

const DECIDE: &str = "\
WITH clock AS (SELECT extract(epoch FROM statement_timestamp())::float8 AS now)
INSERT INTO rate_limits AS r (action, subject, tat, allowed)
SELECT $1, $2, clock.now + $3, true FROM clock
ON CONFLICT (action, subject) DO UPDATE SET
    allowed = GREATEST(r.tat, EXCLUDED.tat - $3) + $3 <= EXCLUDED.tat - $3 + $4,
    tat = CASE WHEN GREATEST(r.tat, EXCLUDED.tat - $3) + $3 <= EXCLUDED.tat - $3 + $4
               THEN GREATEST(r.tat, EXCLUDED.tat - $3) + $3
               ELSE r.tat END
RETURNING r.tat, r.allowed, extract(epoch FROM statement_timestamp())::float8 AS now";

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::ZERO)
}

#[async_trait]
impl RateLimiter for PostgresRateLimiter {
    #[tracing::instrument(skip_all, fields(action = key.action.as_str()))]
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RepositoryError> {
        let limit = rate.get();
        let interval = WINDOW_SECONDS / f64::from(limit);
        // Counted per allowance too, as in memory: a changed limit starts afresh.
        let action = format!("{}/{limit}", key.action.as_str());
        let subject = key.subject.as_str().to_owned();
        let decided = with_connection!(&self.database, |conn| {
            diesel::sql_query(DECIDE)
                .bind::<Text, _>(&action)
                .bind::<Text, _>(&subject)
                .bind::<Double, _>(interval)
                .bind::<Double, _>(WINDOW_SECONDS)
                .get_result::<Decided>(conn)
                .await
        })?
        .map_err(query_error)?;
        let ahead = decided.tat - decided.now;
        Ok(if decided.allowed {
            let left = ((WINDOW_SECONDS - ahead) / interval + 1e-9).floor();
            RateDecision {
                allowed: true,
                limit,
                remaining: (left.max(0.0) as u32).min(limit),
                reset_after: seconds(ahead),
                retry_after: Duration::ZERO,
            }
        } else {
            RateDecision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: seconds(ahead),
                retry_after: seconds(
                    decided.tat.max(decided.now) + interval - WINDOW_SECONDS - decided.now,
                ),
            }
        })
    }

    async fn forget_idle(&self) -> Result<u64, RepositoryError> {
        let deleted = with_connection!(&self.database, |conn| {
            diesel::sql_query(
                "DELETE FROM rate_limits WHERE tat < extract(epoch FROM statement_timestamp())",
            )
            .execute(conn)
            .await
        })?
        .map_err(query_error)?;
        Ok(deleted as u64)
    }
}
