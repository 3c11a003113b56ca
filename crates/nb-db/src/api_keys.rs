//! `ApiKeyRepository` on both backends.

use std::num::NonZeroU32;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::accounts::UserId;
use nb_domain::api_keys::{
    ApiKeyHash, ApiKeyId, ApiKeyRecord, AuthenticatedApiKey, KeyAccess, KeyChanges, KeyLimits,
    KeyMode, KeyState, NewApiKey, RollApiKeyError, RollState,
};
use nb_domain::pagination::{Cursor, Page, PageRequest};
use nb_domain::ports::{ApiKeyRepository, InsertKeyError};
use nb_domain::quota::{QuotaPeriod, QuotaScope, quota_applies};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::convert::{
    StoredLimits, from_period_limits, from_stored_time, parse_stored_id, query_error,
    to_period_limits, to_stored_time,
};
use crate::pool::{Database, with_connection, with_transaction};
use crate::quota::set_counters_from_usage;
use crate::schema::{api_keys, quota_counters, users};

/// Every column but the hash, which never leaves the database once written.
#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct ApiKeyRow {
    id: String,
    user_id: String,
    name: Option<String>,
    prefix: String,
    is_active: bool,
    last_used_at: Option<PrimitiveDateTime>,
    created_at: PrimitiveDateTime,
    expires_at: Option<PrimitiveDateTime>,
    per_minute: Option<i32>,
    per_day: Option<i64>,
    per_month: Option<i64>,
    rolled_from: Option<String>,
    mode: String,
    budget_per_day_nano_usd: Option<i64>,
    budget_per_month_nano_usd: Option<i64>,
}

/// What an owner may change on a key (`None` is written as NULL: it removes a setting).
#[derive(AsChangeset)]
#[diesel(table_name = api_keys, treat_none_as_null = true)]
struct KeySettingsChangeset<'a> {
    name: Option<&'a str>,
    expires_at: Option<PrimitiveDateTime>,
    per_minute: Option<i32>,
    per_day: Option<i64>,
    per_month: Option<i64>,
    budget_per_day_nano_usd: Option<i64>,
    budget_per_month_nano_usd: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
struct NewApiKeyRow {
    #[diesel(embed)]
    key: ApiKeyRow,
    key_hash: String,
}

impl ApiKeyRow {
    fn from_record(record: &ApiKeyRecord) -> Self {
        let (per_day, per_month, budget_per_day_nano_usd, budget_per_month_nano_usd) =
            from_period_limits(record.limits.quotas);
        Self {
            id: record.id.to_string(),
            user_id: record.user_id.to_string(),
            name: record.name.clone(),
            prefix: record.prefix.clone(),
            is_active: record.is_active,
            last_used_at: record.last_used_at.map(to_stored_time),
            created_at: to_stored_time(record.created_at),
            expires_at: record.expires_at.map(to_stored_time),
            per_minute: record
                .limits
                .per_minute
                .map(|n| i32::try_from(n.get()).unwrap_or(i32::MAX)),
            per_day,
            per_month,
            rolled_from: record.rolled_from.map(|id| id.to_string()),
            mode: record.mode.as_str().to_owned(),
            budget_per_day_nano_usd,
            budget_per_month_nano_usd,
        }
    }

    pub(crate) fn into_record(self) -> Result<ApiKeyRecord, RepositoryError> {
        Ok(ApiKeyRecord {
            id: ApiKeyId(parse_stored_id(&self.id)?),
            user_id: UserId(parse_stored_id(&self.user_id)?),
            name: self.name,
            prefix: self.prefix,
            mode: KeyMode::parse(&self.mode).map_err(RepositoryError::unexpected)?,
            is_active: self.is_active,
            expires_at: self.expires_at.map(from_stored_time),
            limits: KeyLimits {
                per_minute: self
                    .per_minute
                    .and_then(|n| u32::try_from(n).ok())
                    .and_then(NonZeroU32::new),
                quotas: to_period_limits((
                    self.per_day,
                    self.per_month,
                    self.budget_per_day_nano_usd,
                    self.budget_per_month_nano_usd,
                )),
            },
            rolled_from: self
                .rolled_from
                .as_deref()
                .map(parse_stored_id)
                .transpose()?
                .map(ApiKeyId),
            last_used_at: self.last_used_at.map(from_stored_time),
            created_at: from_stored_time(self.created_at),
        })
    }
}

/// Why an insert did not happen, inside the transaction.
enum InsertOutcome {
    Inserted,
    Full,
}

/// The owner's usable keys (unrevoked, unexpired at `now`), in the caller's transaction.
macro_rules! usable_keys {
    ($conn:expr, $run:ident, $user_id:expr, $now:expr) => {{
        let counted: i64 = $run!(
            api_keys::table
                .filter(api_keys::user_id.eq($user_id))
                .filter(api_keys::is_active.eq(true))
                .filter(
                    api_keys::expires_at
                        .is_null()
                        .or(api_keys::expires_at.gt($now)),
                )
                .count(),
            get_result,
            $conn
        )?;
        counted
    }};
}

#[async_trait]
impl ApiKeyRepository for Database {
    /// The owner's row is locked first (`FOR UPDATE` on PostgreSQL; SQLite's transaction
    /// holds the write lock from its start), so concurrent creations for one account count
    /// one after the other.
    #[tracing::instrument(skip_all, fields(key_id = %new_key.record.id))]
    async fn insert_api_key(
        &self,
        new_key: &NewApiKey,
        max_active: u32,
    ) -> Result<(), InsertKeyError> {
        let row = NewApiKeyRow {
            key: ApiKeyRow::from_record(&new_key.record),
            key_hash: new_key.key_hash.as_str().to_owned(),
        };
        let owner = Some(new_key.record.user_id);
        let outcome = with_transaction!(self, lock_user: owner, |conn, run| {
            let active = usable_keys!(conn, run, &row.key.user_id, row.key.created_at);
            if active >= i64::from(max_active) {
                Ok(InsertOutcome::Full)
            } else {
                run!(diesel::insert_into(api_keys::table).values(&row), execute, conn)?;
                Ok(InsertOutcome::Inserted)
            }
        })?;
        match outcome {
            InsertOutcome::Inserted => Ok(()),
            InsertOutcome::Full => Err(InsertKeyError::TooManyActiveKeys { max_active }),
        }
    }

    #[tracing::instrument(skip(self))]
    async fn list_api_keys(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyRecord>, RepositoryError> {
        let user_id = user_id.to_string();
        let after = page
            .after
            .map(|cursor| (to_stored_time(cursor.created_at), cursor.id.to_string()));
        let rows = with_connection!(self, |conn| {
            let mut query = api_keys::table
                .filter(api_keys::user_id.eq(&user_id))
                .order((api_keys::created_at.desc(), api_keys::id.desc()))
                .select(ApiKeyRow::as_select())
                .limit(i64::from(page.limit) + 1)
                .into_boxed();
            if let Some((created_at, id)) = &after {
                query = query.filter(
                    api_keys::created_at.lt(*created_at).or(api_keys::created_at
                        .eq(*created_at)
                        .and(api_keys::id.lt(id))),
                );
            }
            query.load(conn).await
        })?;
        let records = rows
            .map_err(query_error)?
            .into_iter()
            .map(ApiKeyRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(records, page.limit, |record| Cursor {
            created_at: record.created_at,
            id: record.id.0,
        }))
    }

    #[tracing::instrument(skip(self))]
    async fn find_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
    ) -> Result<Option<ApiKeyRecord>, RepositoryError> {
        let (user_id, key_id) = (user_id.to_string(), key_id.to_string());
        let found = with_connection!(self, |conn| {
            api_keys::table
                .filter(api_keys::id.eq(&key_id))
                .filter(api_keys::user_id.eq(&user_id))
                .select(ApiKeyRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        found
            .map_err(query_error)?
            .map(ApiKeyRow::into_record)
            .transpose()
    }

    #[tracing::instrument(skip(self, changes))]
    async fn update_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
        changes: &KeyChanges,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKeyRecord>, RepositoryError> {
        let (user_id, key_id) = (user_id.to_string(), key_id.to_string());
        let changes = changes.clone();
        // Under the account's lock: concurrent changes, reservations and rolls of its keys
        // are applied one after another, each on what the one before left.
        let updated = with_transaction!(self, lock_user: Some(&user_id), |conn, run| {
            let found: Option<ApiKeyRow> = run!(
                api_keys::table
                    .filter(api_keys::id.eq(&key_id))
                    .filter(api_keys::user_id.eq(&user_id))
                    .select(ApiKeyRow::as_select()),
                first,
                conn
            )
            .optional()?;
            let Some(mut row) = found else {
                return Ok(None);
            };
            if let Some(name) = &changes.name {
                row.name = name.as_deref().map(str::to_owned);
            }
            if let Some(expires_at) = changes.expires_at {
                row.expires_at = expires_at.map(to_stored_time);
            }
            if !changes.limits.is_empty() {
                let current = KeyLimits {
                    per_minute: row
                        .per_minute
                        .and_then(|n| u32::try_from(n).ok())
                        .and_then(NonZeroU32::new),
                    quotas: to_period_limits((
                        row.per_day,
                        row.per_month,
                        row.budget_per_day_nano_usd,
                        row.budget_per_month_nano_usd,
                    )),
                };
                let limits = changes.limits.apply(current);
                row.per_minute = limits
                    .per_minute
                    .map(|n| i32::try_from(n.get()).unwrap_or(i32::MAX));
                (
                    row.per_day,
                    row.per_month,
                    row.budget_per_day_nano_usd,
                    row.budget_per_month_nano_usd,
                ) = from_period_limits(limits.quotas);
            }
            let settings = KeySettingsChangeset {
                name: row.name.as_deref(),
                expires_at: row.expires_at,
                per_minute: row.per_minute,
                per_day: row.per_day,
                per_month: row.per_month,
                budget_per_day_nano_usd: row.budget_per_day_nano_usd,
                budget_per_month_nano_usd: row.budget_per_month_nano_usd,
            };
            run!(
                diesel::update(api_keys::table.find(&key_id)).set(&settings),
                execute,
                conn
            )?;
            if changes.limits.touches_quotas() {
                set_counters_from_usage!(conn, run, QuotaScope::Key, &key_id, at);
            }
            Ok(Some(row))
        })?;
        updated.map(ApiKeyRow::into_record).transpose()
    }

    #[tracing::instrument(skip(self, new_key), fields(new_key = %new_key.record.id))]
    async fn roll_api_key(
        &self,
        user_id: UserId,
        old: ApiKeyId,
        new_key: &NewApiKey,
        old_expires_at: OffsetDateTime,
        max_active: u32,
    ) -> Result<(), RollApiKeyError> {
        let (owner, user_id, old) = (user_id, user_id.to_string(), old.to_string());
        let (old_ends_at, old_expires_at) = (old_expires_at, to_stored_time(old_expires_at));
        let at = new_key.record.created_at;
        let periods = [QuotaPeriod::Day, QuotaPeriod::Month]
            .map(|period| (period.as_str(), period.starts_on(at)));
        let row = NewApiKeyRow {
            key: ApiKeyRow::from_record(&new_key.record),
            key_hash: new_key.key_hash.as_str().to_owned(),
        };
        let decided = with_transaction!(self, lock_user: Some(owner), |conn, run| {
            let found: Option<(bool, Option<PrimitiveDateTime>)> = run!(
                api_keys::table
                    .filter(api_keys::id.eq(&old))
                    .filter(api_keys::user_id.eq(&user_id))
                    .select((api_keys::is_active, api_keys::expires_at)),
                first,
                conn
            )
            .optional()?;
            let successors: i64 = run!(
                api_keys::table
                    .filter(api_keys::rolled_from.eq(Some(&old)))
                    .count(),
                get_result,
                conn
            )?;
            let usable = usable_keys!(conn, run, &user_id, row.key.created_at);
            let state = found.map(|(active, expires_at)| RollState {
                key: KeyState {
                    revoked: !active,
                    expires_at: expires_at.map(from_stored_time),
                    account_disabled: false,
                },
                already_rolled: successors > 0,
                usable_keys: u32::try_from(usable).unwrap_or(u32::MAX),
            });
            if let Err(refusal) = RollState::check(state.as_ref(), at, old_ends_at, max_active) {
                return Ok(Err(refusal));
            }
            // The old key expires at the grace's end, or sooner when it already would.
            run!(
                diesel::update(
                    api_keys::table.filter(api_keys::id.eq(&old)).filter(
                        api_keys::expires_at
                            .is_null()
                            .or(api_keys::expires_at.gt(old_expires_at)),
                    ),
                )
                .set(api_keys::expires_at.eq(Some(old_expires_at))),
                execute,
                conn
            )?;
            run!(
                diesel::insert_into(api_keys::table).values(&row),
                execute,
                conn
            )?;
            // What the old key spent of its day and month quotas, its successor has spent.
            for (period, starts_on) in &periods {
                let spent: Option<i64> = run!(
                    quota_counters::table
                        .filter(quota_counters::subject_kind.eq(QuotaScope::Key.as_str()))
                        .filter(quota_counters::subject_id.eq(&old))
                        .filter(quota_counters::period.eq(*period))
                        .filter(quota_counters::starts_on.eq(*starts_on))
                        .select(quota_counters::count),
                    first,
                    conn
                )
                .optional()?;
                if let Some(spent) = spent {
                    run!(
                        diesel::insert_into(quota_counters::table).values((
                            quota_counters::subject_kind.eq(QuotaScope::Key.as_str()),
                            quota_counters::subject_id.eq(&row.key.id),
                            quota_counters::period.eq(*period),
                            quota_counters::starts_on.eq(*starts_on),
                            quota_counters::count.eq(spent),
                        )),
                        execute,
                        conn
                    )?;
                }
            }
            Ok(Ok(()))
        })?;
        Ok(decided?)
    }

    #[tracing::instrument(skip(self))]
    async fn deactivate_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
    ) -> Result<bool, RepositoryError> {
        let (user_id, key_id) = (user_id.to_string(), key_id.to_string());
        // Both backends count rows matched by the WHERE clause, changed or not, so a repeated
        // revocation still reports the key as found.
        let updated = with_connection!(self, |conn| {
            diesel::update(
                api_keys::table
                    .filter(api_keys::id.eq(&key_id))
                    .filter(api_keys::user_id.eq(&user_id)),
            )
            .set(api_keys::is_active.eq(false))
            .execute(conn)
            .await
        })?;
        Ok(updated.map_err(query_error)? > 0)
    }

    #[tracing::instrument(skip_all)]
    async fn find_active_api_key(
        &self,
        key_hash: &ApiKeyHash,
    ) -> Result<Option<KeyAccess>, RepositoryError> {
        let key_hash = key_hash.as_str().to_owned();
        let found = with_connection!(self, |conn| {
            api_keys::table
                .inner_join(users::table)
                .filter(api_keys::key_hash.eq(&key_hash))
                .filter(api_keys::is_active.eq(true))
                .select((
                    ApiKeyRow::as_select(),
                    (
                        users::per_day,
                        users::per_month,
                        users::budget_per_day_nano_usd,
                        users::budget_per_month_nano_usd,
                    ),
                    users::disabled,
                ))
                .first::<(ApiKeyRow, StoredLimits, bool)>(conn)
                .await
                .optional()
        })?;
        let Some((row, account_limits, disabled)) = found.map_err(query_error)? else {
            return Ok(None);
        };
        let record = row.into_record()?;
        let account_limits = to_period_limits(account_limits);
        Ok(Some(KeyAccess {
            key: AuthenticatedApiKey {
                key_id: record.id,
                user_id: record.user_id,
                per_minute: record.limits.per_minute,
                quota_applies: quota_applies(record.limits.quotas, record.mode, account_limits),
                mode: record.mode,
            },
            expires_at: record.expires_at,
            account_disabled: disabled,
        }))
    }

    #[tracing::instrument(skip_all, fields(keys = uses.len()))]
    async fn record_key_uses(
        &self,
        uses: &[(ApiKeyId, OffsetDateTime)],
    ) -> Result<(), RepositoryError> {
        let uses: Vec<(String, PrimitiveDateTime)> = uses
            .iter()
            .map(|(id, at)| (id.to_string(), to_stored_time(*at)))
            .collect();
        let written = with_connection!(self, |conn| {
            let mut written = Ok(0);
            for (key_id, used_at) in &uses {
                written = diesel::update(
                    api_keys::table.filter(api_keys::id.eq(key_id)).filter(
                        api_keys::last_used_at
                            .is_null()
                            .or(api_keys::last_used_at.lt(*used_at)),
                    ),
                )
                .set(api_keys::last_used_at.eq(Some(*used_at)))
                .execute(conn)
                .await;
                if written.is_err() {
                    break;
                }
            }
            written
        })?;
        written.map(|_| ()).map_err(query_error)
    }
}
