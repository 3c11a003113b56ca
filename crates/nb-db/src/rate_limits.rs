//! Per-minute limits shared by every instance, in PostgreSQL: GCRA (the algorithm the
//! in-memory limiter uses too) in one atomic statement per decision.
//!
//! Each (action and allowance, subject) row keeps its theoretical arrival time `tat` (epoch seconds, by the
//! database's clock, so instances' clocks do not matter). For an allowance of `n` a minute,
//! each request moves `tat` by `T = 60 / n` seconds from `max(tat, now)`, and is allowed
//! while that stays within a minute of now: up to `n` at once, then one every `T`. The
//! upsert's row lock makes concurrent decisions on one subject take turns, on every instance;
//! within an instance, requests for one subject are decided in batches (see
//! [`PostgresRateLimiter`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use diesel::sql_types::{Double, Integer, Text};
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::rate_limit::{
    PerMinute, RateDecision, RateLimitError, RateLimitKey, RateLimiter, Taken,
};
use tokio::sync::oneshot;

use crate::convert::query_error;
use crate::pool::{ConnectionPool, Database, with_connection};

/// The window an allowance refills in.
const WINDOW_SECONDS: f64 = 60.0;
/// The most requests one statement decides.
const MAX_BATCH: usize = 1024;

/// Rate limits counted in PostgreSQL, shared by every instance on it.
///
/// Requests for one subject that arrive while a decision about it is in flight wait for the
/// next statement, which decides all of them at once (how many of the `n` fit, in arrival
/// order): one round trip and one row update per batch instead of per request, so a busy key
/// does not queue its requests on its row's lock. Alone, a request goes at once.
#[derive(Clone)]
pub struct PostgresRateLimiter {
    database: Database,
    /// Per (action and allowance, subject): the requests waiting for the next statement. An
    /// entry exists while a task is deciding for that subject.
    waiting: Arc<Mutex<HashMap<BatchKey, Vec<Waiter>>>>,
}

/// (action and allowance, subject).
type BatchKey = (String, String);

/// The row `key` is counted in at `rate`: per allowance too, as in memory, so a changed
/// limit starts afresh.
fn batch_key(key: &RateLimitKey, rate: PerMinute) -> BatchKey {
    (
        format!("{}/{}", key.action.as_str(), rate.get()),
        key.subject.as_str().to_owned(),
    )
}

/// Seconds between two requests of an allowance of `limit` a minute.
fn interval_of(limit: u32) -> f64 {
    WINDOW_SECONDS / f64::from(limit)
}

impl std::fmt::Debug for PostgresRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRateLimiter")
            .finish_non_exhaustive()
    }
}

type Waiter = oneshot::Sender<Result<RateDecision, RepositoryError>>;

impl Database {
    /// The shared limiter, on PostgreSQL; `None` on SQLite (one instance: count in memory).
    pub fn shared_rate_limiter(&self) -> Option<PostgresRateLimiter> {
        matches!(self.pool, ConnectionPool::Postgres(_)).then(|| PostgresRateLimiter {
            database: self.clone(),
            waiting: Arc::default(),
        })
    }
}

#[derive(diesel::QueryableByName)]
struct Decided {
    #[diesel(sql_type = Double)]
    tat: f64,
    #[diesel(sql_type = Integer)]
    granted: i32,
    #[diesel(sql_type = Double)]
    now: f64,
}

/// The database's clock, in epoch seconds (one value for the whole statement).
macro_rules! now {
    () => {
        "extract(epoch FROM statement_timestamp())::float8"
    };
}

/// Where the row's arrival time starts from: `max(tat - $6 * $3, now)`, after giving back `$6`
/// requests' worth taken earlier and not used.
macro_rules! start {
    () => {
        concat!("GREATEST(r.tat - $6 * $3, ", now!(), ")")
    };
}

/// How many of `$5` requests an existing row lets through: as many steps of `$3` seconds as
/// fit between its start and `now + $4`.
macro_rules! granted_on_row {
    () => {
        concat!(
            "GREATEST(0, LEAST($5, floor((",
            now!(),
            " + $4 - ",
            start!(),
            ") / $3 + 1e-9)))"
        )
    };
}

/// `$1` action, `$2` subject, `$3` seconds per request, `$4` the window, `$5` requests wanted,
/// `$6` requests given back first.
const TAKE: &str = concat!(
    "INSERT INTO rate_limits AS r (action, subject, tat, allowed, granted) VALUES ($1, $2, ",
    now!(),
    " + LEAST($5, floor($4 / $3 + 1e-9)) * $3, $5 > 0, LEAST($5, floor($4 / $3 + 1e-9))::int) ",
    "ON CONFLICT (action, subject) DO UPDATE SET granted = ",
    granted_on_row!(),
    "::int, allowed = ",
    granted_on_row!(),
    " > 0, tat = ",
    start!(),
    " + ",
    granted_on_row!(),
    " * $3 RETURNING r.tat, r.granted, ",
    now!(),
    " AS now"
);

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::ZERO)
}

/// What one statement decided for a batch, and each request's share of it.
struct BatchDecision {
    tat: f64,
    granted: usize,
    now: f64,
    interval: f64,
    limit: u32,
}

impl BatchDecision {
    /// The decision for the batch's `index`-th request (in arrival order): the first
    /// `granted` pass, each as if decided alone in turn.
    fn for_request(&self, index: usize) -> RateDecision {
        let limit = self.limit;
        if index < self.granted {
            let later = (self.granted - 1 - index) as f64;
            let ahead = self.tat - later * self.interval - self.now;
            let left = ((WINDOW_SECONDS - ahead) / self.interval + 1e-9).floor();
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
                reset_after: seconds(self.tat - self.now),
                retry_after: seconds(
                    self.tat.max(self.now) + self.interval - WINDOW_SECONDS - self.now,
                ),
            }
        }
    }
}

/// A failure told to every request of a batch (the error itself goes to the first).
fn told_to_all(error: &RepositoryError) -> RepositoryError {
    match error {
        RepositoryError::Unavailable(cause) => {
            RepositoryError::Unavailable(cause.to_string().into())
        }
        RepositoryError::Unexpected(cause) => RepositoryError::Unexpected(cause.to_string().into()),
    }
}

impl PostgresRateLimiter {
    /// Decides `requests` requests for one subject in one statement, after giving back
    /// `returned`.
    async fn decide(
        &self,
        (action, subject): &BatchKey,
        rate: PerMinute,
        requests: usize,
        returned: u32,
    ) -> Result<BatchDecision, RepositoryError> {
        let limit = rate.get();
        let interval = interval_of(limit);
        let (action, subject) = (action.to_owned(), subject.to_owned());
        let decided = with_connection!(&self.database, |conn| {
            diesel::sql_query(TAKE)
                .bind::<Text, _>(&action)
                .bind::<Text, _>(&subject)
                .bind::<Double, _>(interval)
                .bind::<Double, _>(WINDOW_SECONDS)
                .bind::<Double, _>(requests as f64)
                .bind::<Double, _>(f64::from(returned))
                .get_result::<Decided>(conn)
                .await
        })?
        .map_err(query_error)?;
        let granted = usize::try_from(decided.granted).unwrap_or(0).min(requests);
        Ok(BatchDecision {
            tat: decided.tat,
            granted,
            now: decided.now,
            interval,
            limit,
        })
    }

    /// Decides for the subject's waiting requests, batch after batch, until none waits. Runs
    /// as a task of its own: a caller that gives up does not strand the others.
    async fn drive(self, batch_key: BatchKey, rate: PerMinute) {
        loop {
            let waiters = {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(queue) = waiting.get_mut(&batch_key) else {
                    return;
                };
                if queue.is_empty() {
                    waiting.remove(&batch_key);
                    return;
                }
                let take = queue.len().min(MAX_BATCH);
                queue.drain(..take).collect::<Vec<_>>()
            };
            match self.decide(&batch_key, rate, waiters.len(), 0).await {
                Ok(batch) => {
                    for (index, waiter) in waiters.into_iter().enumerate() {
                        let _ = waiter.send(Ok(batch.for_request(index)));
                    }
                }
                Err(error) => {
                    // Those who queued meanwhile fail too, at once: a database that did not
                    // answer this statement will not answer the next in time either, and each
                    // request must wait at most one call's bound.
                    let queued = {
                        let mut waiting =
                            self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                        waiting.remove(&batch_key).unwrap_or_default()
                    };
                    let mut waiters = waiters.into_iter().chain(queued);
                    let first = waiters.next();
                    for waiter in waiters {
                        let _ = waiter.send(Err(told_to_all(&error)));
                    }
                    if let Some(first) = first {
                        let _ = first.send(Err(error));
                    }
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl RateLimiter for PostgresRateLimiter {
    #[tracing::instrument(skip_all, fields(action = key.action.as_str()))]
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RateLimitError> {
        let batch_key = batch_key(key, rate);
        let (sender, decision) = oneshot::channel();
        let start_deciding = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            match waiting.get_mut(&batch_key) {
                Some(queue) => {
                    queue.push(sender);
                    false
                }
                None => {
                    waiting.insert(batch_key.clone(), vec![sender]);
                    true
                }
            }
        };
        if start_deciding {
            // On the database's runtime, as every repository call: it outlives the worker
            // whose request happened to start the batch.
            let runtime = self.database.runtime.clone();
            runtime.spawn(self.clone().drive(batch_key, rate));
        }
        // At most one call's bound, whatever is ahead of this request in its subject's queue
        // (a decision that comes later is dropped: the request was refused, fail closed).
        let decided = match tokio::time::timeout(self.database.call_timeout, decision).await {
            Ok(Ok(decided)) => decided,
            Ok(Err(_dropped)) => Err(RepositoryError::unexpected(
                "the rate-limit decision was dropped before it was made",
            )),
            Err(_) => Err(RepositoryError::Unavailable(Box::new(
                crate::pool::CallTimedOut(self.database.call_timeout),
            ))),
        };
        Ok(decided?)
    }

    /// One statement, outside the batches: slices are taken rarely.
    #[tracing::instrument(skip_all, fields(action = key.action.as_str(), wanted = wanted, returned = returned))]
    async fn take(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
        wanted: u32,
        returned: u32,
    ) -> Result<Taken, RateLimitError> {
        let batch = self
            .decide(&batch_key(key, rate), rate, wanted as usize, returned)
            .await?;
        Ok(Taken {
            granted: batch.granted as u32,
            last: batch.for_request(batch.granted.saturating_sub(1)),
        })
    }

    async fn forget_idle(&self) -> Result<u64, RateLimitError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_shared_out_as_if_each_request_came_in_turn() {
        // 30 a minute (one every 2 s), a full allowance granted to 30 of 31 requests.
        let batch = BatchDecision {
            tat: 1_000.0 + 60.0,
            granted: 30,
            now: 1_000.0,
            interval: 2.0,
            limit: 30,
        };
        let first = batch.for_request(0);
        assert!(first.allowed);
        assert_eq!(first.remaining, 29);
        assert_eq!(first.reset_after, Duration::from_secs(2));
        let last = batch.for_request(29);
        assert!(last.allowed);
        assert_eq!(last.remaining, 0);
        assert_eq!(last.reset_after, Duration::from_secs(60));
        let refused = batch.for_request(30);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_secs(2));
    }
}
