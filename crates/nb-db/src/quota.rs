//! `QuotaRepository` on both backends: day and month counters per key and per account.
//!
//! A reservation runs in one transaction that first locks the account's row (PostgreSQL;
//! SQLite's transaction holds the write lock from its start), so every reservation of one
//! account is decided one after another, across instances too: it reads the key's and the
//! account's state and limits as they are and the counters the domain names, the domain
//! decides (`nb_domain::quota::reservation`), and a grant adds to every counter with a
//! conditional upsert (`… ON CONFLICT DO UPDATE SET count = count + n, cost = cost + e WHERE
//! count <= limit - n AND cost <= budget - e`). A settlement subtracts the images not made and
//! moves the dollars by the real cost minus the estimate, in the periods the reservation was
//! made in.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use nb_domain::RepositoryError;
use nb_domain::api_keys::{AuthenticatedApiKey, KeyMode, KeyState};
use nb_domain::money::Usd;
use nb_domain::ports::QuotaRepository;
use nb_domain::quota::{
    Ask, QuotaScope, Reservation, ReservationState, ReserveError, Reserved, Settlement, decide,
};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::convert::{StoredLimits, from_stored_time, to_period_limits};
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
        let days: Vec<(time::Date, i64, i64)> = match scope {
            nb_domain::quota::QuotaScope::Key => $run!(
                crate::schema::usage_daily::table
                    .filter(crate::schema::usage_daily::api_key_id.eq(subject_id))
                    .filter(crate::schema::usage_daily::day.ge(month))
                    .select((
                        crate::schema::usage_daily::day,
                        crate::schema::usage_daily::count,
                        crate::schema::usage_daily::cost_nano_usd,
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
                        crate::schema::usage_daily::cost_nano_usd,
                    )),
                load,
                $conn
            )?,
        };
        let sum = |of_today: bool| {
            days.iter()
                .filter(|(day, _, _)| !of_today || *day == today)
                .fold((0i64, 0i64), |(count, cost), (_, n, c)| {
                    (count + n, cost.saturating_add(*c))
                })
        };
        let ((today_count, today_cost), (month_count, month_cost)) = (sum(true), sum(false));
        for (period, starts_on, count, cost) in [
            (
                nb_domain::quota::QuotaPeriod::Day,
                today,
                today_count,
                today_cost,
            ),
            (
                nb_domain::quota::QuotaPeriod::Month,
                month,
                month_count,
                month_cost,
            ),
        ] {
            $run!(
                diesel::insert_into(crate::schema::quota_counters::table)
                    .values((
                        crate::schema::quota_counters::subject_kind.eq(scope.as_str()),
                        crate::schema::quota_counters::subject_id.eq(subject_id),
                        crate::schema::quota_counters::period.eq(period.as_str()),
                        crate::schema::quota_counters::starts_on.eq(starts_on),
                        crate::schema::quota_counters::count.eq(count),
                        crate::schema::quota_counters::cost_nano_usd.eq(cost),
                    ))
                    .on_conflict((
                        crate::schema::quota_counters::subject_kind,
                        crate::schema::quota_counters::subject_id,
                        crate::schema::quota_counters::period,
                        crate::schema::quota_counters::starts_on,
                    ))
                    .do_update()
                    .set((
                        crate::schema::quota_counters::count.eq(diesel::upsert::excluded(
                            crate::schema::quota_counters::count,
                        )),
                        crate::schema::quota_counters::cost_nano_usd.eq(diesel::upsert::excluded(
                            crate::schema::quota_counters::cost_nano_usd
                        ),),
                    )),
                execute,
                $conn
            )?;
        }
    }};
}
pub(crate) use set_counters_from_usage;

/// The state a reservation is decided on, as read in its transaction: the key's `is_active`,
/// `expires_at`, mode, day and month quotas and budgets; the account's `disabled`, day and
/// month quotas and budgets.
type StateRow = (
    (bool, Option<PrimitiveDateTime>, String),
    StoredLimits,
    bool,
    StoredLimits,
);

fn reservation_state(row: StateRow) -> Result<ReservationState, RepositoryError> {
    let ((active, expires_at, mode), key_limits, disabled, account_limits) = row;
    Ok(ReservationState {
        key: KeyState {
            revoked: !active,
            expires_at: expires_at.map(from_stored_time),
            account_disabled: disabled,
        },
        mode: KeyMode::parse(&mode).map_err(RepositoryError::unexpected)?,
        key_quotas: to_period_limits(key_limits),
        account_quotas: to_period_limits(account_limits),
    })
}

fn subject<'a>(scope: QuotaScope, key_id: &'a str, user_id: &'a str) -> &'a str {
    match scope {
        QuotaScope::Key => key_id,
        QuotaScope::Account => user_id,
    }
}

/// Applies `$settlement` to the counters `$reservation` added to, in the caller's
/// transaction: the images not made are subtracted and the dollars moved, in the periods the
/// reservation was made in, never below zero (a counter re-read from usage meanwhile may hold
/// less).
macro_rules! settle_counters {
    ($conn:expr, $run:ident, $reservation:expr, $settlement:expr) => {{
        let reservation: &nb_domain::quota::Reservation = $reservation;
        let settlement: nb_domain::quota::Settlement = $settlement;
        let key_id = reservation.key_id.to_string();
        let user_id = reservation.user_id.to_string();
        let unmade = i64::try_from(settlement.unmade_images).unwrap_or(i64::MAX);
        let cost_change = settlement.cost_change_nanos;
        if unmade != 0 || cost_change != 0 {
            for (scope, period) in &reservation.counted {
                let subject = match scope {
                    nb_domain::quota::QuotaScope::Key => &key_id,
                    nb_domain::quota::QuotaScope::Account => &user_id,
                };
                use crate::schema::quota_counters;
                $run!(
                    diesel::update(
                        quota_counters::table
                            .filter(quota_counters::subject_kind.eq(scope.as_str()))
                            .filter(quota_counters::subject_id.eq(subject))
                            .filter(quota_counters::period.eq(period.as_str()))
                            .filter(quota_counters::starts_on.eq(period.starts_on(reservation.at)))
                            .filter(quota_counters::count.ge(unmade))
                            .filter(quota_counters::cost_nano_usd.ge(-cost_change)),
                    )
                    .set((
                        quota_counters::count.eq(quota_counters::count - unmade),
                        quota_counters::cost_nano_usd
                            .eq(quota_counters::cost_nano_usd + cost_change),
                    )),
                    execute,
                    $conn
                )?;
            }
        }
    }};
}
pub(crate) use settle_counters;

fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Database {
    /// Reads the state and the counters under the account's lock and lets the domain decide
    /// ([`ReservationState::counters`], [`decide`]); when `write`, writes what it granted.
    async fn decide_reservation(
        &self,
        caller: &AuthenticatedApiKey,
        ask: Ask,
        at: OffsetDateTime,
        write: bool,
    ) -> Result<Reserved, ReserveError> {
        let (key_id, user_id) = (caller.key_id.to_string(), caller.user_id.to_string());
        let (images, estimate) = (stored(ask.images), ask.estimate.nanos());
        let decided = with_transaction!(self, lock_user: Some(&user_id), |conn, run| {
            let row: Option<StateRow> = run!(
                api_keys::table
                    .inner_join(users::table)
                    .filter(api_keys::id.eq(&key_id))
                    .select((
                        (api_keys::is_active, api_keys::expires_at, api_keys::mode),
                        (
                            api_keys::per_day,
                            api_keys::per_month,
                            api_keys::budget_per_day_nano_usd,
                            api_keys::budget_per_month_nano_usd,
                        ),
                        users::disabled,
                        (
                            users::per_day,
                            users::per_month,
                            users::budget_per_day_nano_usd,
                            users::budget_per_month_nano_usd,
                        ),
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
                let counted: Option<(i64, i64)> = run!(
                    quota_counters::table
                        .filter(quota_counters::subject_kind.eq(counter.scope.as_str()))
                        .filter(quota_counters::subject_id.eq(subject(
                            counter.scope,
                            &key_id,
                            &user_id
                        )))
                        .filter(quota_counters::period.eq(counter.period.as_str()))
                        .filter(quota_counters::starts_on.eq(counter.starts_on(at)))
                        .select((quota_counters::count, quota_counters::cost_nano_usd)),
                    first,
                    conn
                )
                .optional()?;
                let (used, spent) = counted.unwrap_or((0, 0));
                let used = u64::try_from(used).unwrap_or(0);
                standings.push(counter.standing(used, Usd::from_nanos(spent), at));
            }
            let after = match decide(standings, ask) {
                Ok(after) => after,
                Err(refused) => return Ok(Err(refused)),
            };
            if !write {
                return Ok(Ok(after));
            }
            for (counter, expected) in counters.iter().zip(&after) {
                let upsert = diesel::insert_into(quota_counters::table)
                    .values((
                        quota_counters::subject_kind.eq(counter.scope.as_str()),
                        quota_counters::subject_id.eq(subject(counter.scope, &key_id, &user_id)),
                        quota_counters::period.eq(counter.period.as_str()),
                        quota_counters::starts_on.eq(counter.starts_on(at)),
                        quota_counters::count.eq(images),
                        quota_counters::cost_nano_usd.eq(estimate),
                    ))
                    .on_conflict((
                        quota_counters::subject_kind,
                        quota_counters::subject_id,
                        quota_counters::period,
                        quota_counters::starts_on,
                    ))
                    .do_update()
                    .set((
                        quota_counters::count
                            .eq(quota_counters::count + excluded(quota_counters::count)),
                        quota_counters::cost_nano_usd.eq(quota_counters::cost_nano_usd
                            + excluded(quota_counters::cost_nano_usd)),
                    ));
                // `… DO UPDATE … WHERE count <= limit - n AND cost <= budget - e`: the
                // condition is part of the statement, so no counter can pass its limit
                // whatever else runs (a counter without a limit or a budget has none).
                let max_count = counter
                    .limit
                    .map_or(i64::MAX, |limit| stored(limit.get()) - images);
                let max_cost = counter
                    .budget
                    .map_or(i64::MAX, |budget| budget.nanos().saturating_sub(estimate));
                let conditional = diesel::query_dsl::methods::FilterDsl::filter(
                    upsert,
                    quota_counters::count
                        .le(max_count)
                        .and(quota_counters::cost_nano_usd.le(max_cost)),
                );
                let counted: Option<(i64, i64)> = run!(
                    conditional.returning((quota_counters::count, quota_counters::cost_nano_usd)),
                    get_result,
                    conn
                )
                .optional()?;
                // Under the lock the counter is the one decided on; never count past a limit
                // if it is not.
                let expected = (stored(expected.used), expected.spent.nanos());
                if counted != Some(expected) {
                    return Err(diesel::result::Error::RollbackTransaction);
                }
            }
            Ok(Ok(after))
        })?;
        Ok(Reserved::new(caller, ask, at, decided?))
    }
}

#[async_trait]
impl QuotaRepository for Database {
    #[tracing::instrument(skip(self, caller), fields(key_id = %caller.key_id))]
    async fn reserve(
        &self,
        caller: &AuthenticatedApiKey,
        ask: Ask,
        at: OffsetDateTime,
    ) -> Result<Reserved, ReserveError> {
        self.decide_reservation(caller, ask, at, true).await
    }

    #[tracing::instrument(skip(self, caller), fields(key_id = %caller.key_id))]
    async fn check(
        &self,
        caller: &AuthenticatedApiKey,
        ask: Ask,
        at: OffsetDateTime,
    ) -> Result<Reserved, ReserveError> {
        self.decide_reservation(caller, ask, at, false).await
    }

    #[tracing::instrument(skip(self, reservation), fields(key_id = %reservation.key_id))]
    async fn settle(
        &self,
        reservation: &Reservation,
        settlement: Settlement,
    ) -> Result<(), RepositoryError> {
        let reservation = reservation.clone();
        with_transaction!(self, |conn, run| {
            settle_counters!(conn, run, &reservation, settlement);
            Ok(())
        })
    }
}
