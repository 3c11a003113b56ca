//! `QuotaRepository` on both backends: day and month counters per key and per account.
//!
//! A reservation runs in one transaction that first locks the account's row (PostgreSQL;
//! SQLite's transaction holds the write lock from its start), so every reservation of one
//! account is decided one after another, across instances too: it reads the key's and the
//! account's state and limits as they are and the counters the domain names, the domain
//! decides (`nb_domain::quota::reservation`), and a grant adds to every counter with a
//! conditional upsert (`… ON CONFLICT DO UPDATE SET count = count + n WHERE count <= limit -
//! n`). A release subtracts from the counters of the periods the reservation was made in.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use nb_domain::RepositoryError;
use nb_domain::api_keys::{AuthenticatedApiKey, KeyMode, KeyState};
use nb_domain::ports::QuotaRepository;
use nb_domain::quota::{
    PeriodLimits, QuotaScope, Reservation, ReservationState, ReserveError, Reserved, decide,
};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::convert::{from_stored_time, to_limit};
use crate::pool::{Database, with_transaction};
use crate::schema::{api_keys, quota_counters, users};

/// Sets a key's or an account's counters for the periods holding `$at` from its recorded
/// usage (`usage_daily`), in the caller's transaction: for when its quotas change.
macro_rules! set_counters_from_usage {
    ($conn:expr, $run:ident, $scope:expr, $subject_id:expr, $at:expr) => {{
        let scope: nb_domain::quota::QuotaScope = $scope;
        let subject_id: &str = $subject_id;
        let at: time::OffsetDateTime = $at;
        let today = nb_domain::quota::QuotaPeriod::Day.starts_on(at);
        let month = nb_domain::quota::QuotaPeriod::Month.starts_on(at);
        let days: Vec<(time::Date, i64)> = match scope {
            nb_domain::quota::QuotaScope::Key => $run!(
                crate::schema::usage_daily::table
                    .filter(crate::schema::usage_daily::api_key_id.eq(subject_id))
                    .filter(crate::schema::usage_daily::day.ge(month))
                    .select((
                        crate::schema::usage_daily::day,
                        crate::schema::usage_daily::count,
                    )),
                load,
                $conn
            )?,
            nb_domain::quota::QuotaScope::Account => $run!(
                crate::schema::usage_daily::table
                    .inner_join(crate::schema::api_keys::table)
                    .filter(crate::schema::api_keys::user_id.eq(subject_id))
                    .filter(crate::schema::usage_daily::day.ge(month))
                    .select((
                        crate::schema::usage_daily::day,
                        crate::schema::usage_daily::count,
                    )),
                load,
                $conn
            )?,
        };
        let today_count: i64 = days
            .iter()
            .filter(|(day, _)| *day == today)
            .map(|(_, n)| n)
            .sum();
        let month_count: i64 = days.iter().map(|(_, n)| n).sum();
        for (period, starts_on, count) in [
            (nb_domain::quota::QuotaPeriod::Day, today, today_count),
            (nb_domain::quota::QuotaPeriod::Month, month, month_count),
        ] {
            $run!(
                diesel::insert_into(crate::schema::quota_counters::table)
                    .values((
                        crate::schema::quota_counters::subject_kind.eq(scope.as_str()),
                        crate::schema::quota_counters::subject_id.eq(subject_id),
                        crate::schema::quota_counters::period.eq(period.as_str()),
                        crate::schema::quota_counters::starts_on.eq(starts_on),
                        crate::schema::quota_counters::count.eq(count),
                    ))
                    .on_conflict((
                        crate::schema::quota_counters::subject_kind,
                        crate::schema::quota_counters::subject_id,
                        crate::schema::quota_counters::period,
                        crate::schema::quota_counters::starts_on,
                    ))
                    .do_update()
                    .set(
                        crate::schema::quota_counters::count.eq(diesel::upsert::excluded(
                            crate::schema::quota_counters::count
                        )),
                    ),
                execute,
                $conn
            )?;
        }
    }};
}
pub(crate) use set_counters_from_usage;

/// The state a reservation is decided on, as read in its transaction: the key's `is_active`,
/// `expires_at`, day and month quotas and mode; the account's `disabled`, day and month quotas.
type StateRow = (
    bool,
    Option<PrimitiveDateTime>,
    Option<i64>,
    Option<i64>,
    String,
    bool,
    Option<i64>,
    Option<i64>,
);

fn reservation_state(row: StateRow) -> Result<ReservationState, RepositoryError> {
    let (active, expires_at, key_day, key_month, mode, disabled, account_day, account_month) = row;
    Ok(ReservationState {
        key: KeyState {
            revoked: !active,
            expires_at: expires_at.map(from_stored_time),
            account_disabled: disabled,
        },
        mode: KeyMode::parse(&mode).map_err(RepositoryError::unexpected)?,
        key_quotas: PeriodLimits {
            per_day: to_limit(key_day),
            per_month: to_limit(key_month),
        },
        account_quotas: PeriodLimits {
            per_day: to_limit(account_day),
            per_month: to_limit(account_month),
        },
    })
}

fn subject<'a>(scope: QuotaScope, key_id: &'a str, user_id: &'a str) -> &'a str {
    match scope {
        QuotaScope::Key => key_id,
        QuotaScope::Account => user_id,
    }
}

fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[async_trait]
impl QuotaRepository for Database {
    /// Reads the state and the counters under the account's lock, lets the domain decide
    /// ([`ReservationState::counters`], [`decide`]), and writes what it granted.
    #[tracing::instrument(skip(self, caller), fields(key_id = %caller.key_id))]
    async fn reserve(
        &self,
        caller: &AuthenticatedApiKey,
        images: u64,
        at: OffsetDateTime,
    ) -> Result<Reserved, ReserveError> {
        let (key_id, user_id) = (caller.key_id.to_string(), caller.user_id.to_string());
        let decided = with_transaction!(self, lock_user: Some(&user_id), |conn, run| {
            let row: Option<StateRow> = run!(
                api_keys::table
                    .inner_join(users::table)
                    .filter(api_keys::id.eq(&key_id))
                    .select((
                        api_keys::is_active,
                        api_keys::expires_at,
                        api_keys::per_day,
                        api_keys::per_month,
                        api_keys::mode,
                        users::disabled,
                        users::per_day,
                        users::per_month,
                    )),
                first,
                conn
            )
            .optional()?;
            let state = match row.map(reservation_state).transpose() {
                Ok(state) => state,
                Err(error) => return Ok(Err(ReserveError::Repository(error))),
            };
            let counters = match ReservationState::counters(state.as_ref(), at) {
                Ok(counters) => counters,
                Err(refused) => return Ok(Err(refused)),
            };
            // Where each counter stands now: under the account's lock nobody else moves them.
            let mut standings = Vec::with_capacity(counters.len());
            for counter in &counters {
                let used: Option<i64> = run!(
                    quota_counters::table
                        .filter(quota_counters::subject_kind.eq(counter.scope.as_str()))
                        .filter(quota_counters::subject_id.eq(subject(
                            counter.scope,
                            &key_id,
                            &user_id
                        )))
                        .filter(quota_counters::period.eq(counter.period.as_str()))
                        .filter(quota_counters::starts_on.eq(counter.starts_on(at)))
                        .select(quota_counters::count),
                    first,
                    conn
                )
                .optional()?;
                let used = used.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                standings.push(counter.standing(used, at));
            }
            let after = match decide(standings, images) {
                Ok(after) => after,
                Err(refused) => return Ok(Err(refused)),
            };
            for (counter, expected) in counters.iter().zip(&after) {
                let upsert = diesel::insert_into(quota_counters::table)
                    .values((
                        quota_counters::subject_kind.eq(counter.scope.as_str()),
                        quota_counters::subject_id.eq(subject(counter.scope, &key_id, &user_id)),
                        quota_counters::period.eq(counter.period.as_str()),
                        quota_counters::starts_on.eq(counter.starts_on(at)),
                        quota_counters::count.eq(stored(images)),
                    ))
                    .on_conflict((
                        quota_counters::subject_kind,
                        quota_counters::subject_id,
                        quota_counters::period,
                        quota_counters::starts_on,
                    ))
                    .do_update()
                    .set(
                        quota_counters::count
                            .eq(quota_counters::count + excluded(quota_counters::count)),
                    );
                // `… DO UPDATE … WHERE count <= limit - n`: the condition is part of the
                // statement, so no count can pass the limit whatever else runs.
                let conditional = diesel::query_dsl::methods::FilterDsl::filter(
                    upsert,
                    quota_counters::count.le(stored(counter.limit.get() - images)),
                );
                let counted: Option<i64> = run!(
                    conditional.returning(quota_counters::count),
                    get_result,
                    conn
                )
                .optional()?;
                // Under the lock the count is the one decided on; never count past a limit
                // if it is not.
                if counted.and_then(|n| u64::try_from(n).ok()) != Some(expected.used) {
                    return Err(diesel::result::Error::RollbackTransaction);
                }
            }
            Ok(Ok(after))
        })?;
        Ok(Reserved::new(caller, images, at, decided?))
    }

    #[tracing::instrument(skip(self, reservation), fields(key_id = %reservation.key_id))]
    async fn release(&self, reservation: &Reservation, images: u64) -> Result<(), RepositoryError> {
        let key_id = reservation.key_id.to_string();
        let user_id = reservation.user_id.to_string();
        let at = reservation.at;
        let counted = reservation.counted.clone();
        with_transaction!(self, |conn, run| {
            for (scope, period) in &counted {
                let subject = match scope {
                    QuotaScope::Key => &key_id,
                    QuotaScope::Account => &user_id,
                };
                run!(
                    diesel::update(
                        quota_counters::table
                            .filter(quota_counters::subject_kind.eq(scope.as_str()))
                            .filter(quota_counters::subject_id.eq(subject))
                            .filter(quota_counters::period.eq(period.as_str()))
                            .filter(quota_counters::starts_on.eq(period.starts_on(at)))
                            .filter(quota_counters::count.ge(stored(images))),
                    )
                    .set(quota_counters::count.eq(quota_counters::count - stored(images))),
                    execute,
                    conn
                )?;
            }
            Ok(())
        })
    }
}
