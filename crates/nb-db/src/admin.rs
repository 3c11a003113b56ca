//! `AdminRepository` on both backends: accounts with their settings and usage, changes to
//! them (audited in the same transaction), and the audit.

use std::collections::HashMap;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::accounts::{EmailAddress, UserId};
use nb_domain::admin::{AccountChanges, AccountOverview, AccountSettings, AuditEntry};
use nb_domain::api_keys::KeyUsage;
use nb_domain::money::Usd;
use nb_domain::pagination::{Cursor, Page, PageRequest};
use nb_domain::ports::AdminRepository;
use nb_domain::quota::{QuotaPeriod, QuotaScope};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::convert::{
    from_period_limits, from_stored_time, parse_stored_id, query_error, to_period_limits,
    to_stored_time,
};
use crate::pool::{Database, with_connection, with_transaction};
use crate::quota::set_counters_from_usage;
use crate::schema::{admin_bindings, api_keys, audit_log, usage_daily, users};
use crate::users::UserRow;

/// An account's settings as the audit stores them (JSON).
#[derive(Serialize, Deserialize)]
struct StoredSettings {
    per_day: Option<i64>,
    per_month: Option<i64>,
    /// Nano-dollars (absent in entries written before budgets).
    #[serde(default)]
    budget_per_day: Option<i64>,
    #[serde(default)]
    budget_per_month: Option<i64>,
    disabled: bool,
}

impl From<AccountSettings> for StoredSettings {
    fn from(settings: AccountSettings) -> Self {
        let (per_day, per_month, budget_per_day, budget_per_month) =
            from_period_limits(settings.limits);
        Self {
            per_day,
            per_month,
            budget_per_day,
            budget_per_month,
            disabled: settings.disabled,
        }
    }
}

impl From<StoredSettings> for AccountSettings {
    fn from(stored: StoredSettings) -> Self {
        Self {
            limits: to_period_limits((
                stored.per_day,
                stored.per_month,
                stored.budget_per_day,
                stored.budget_per_month,
            )),
            disabled: stored.disabled,
        }
    }
}

fn settings_of(row: &UserRow) -> AccountSettings {
    AccountSettings {
        limits: row.limits(),
        disabled: row.disabled(),
    }
}

fn to_json(settings: AccountSettings) -> String {
    serde_json::to_string(&StoredSettings::from(settings)).unwrap_or_else(|_| "{}".to_owned())
}

fn from_json(stored: &str) -> Result<AccountSettings, RepositoryError> {
    serde_json::from_str::<StoredSettings>(stored)
        .map(AccountSettings::from)
        .map_err(RepositoryError::unexpected)
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log)]
struct AuditRow {
    id: String,
    actor_id: String,
    action: String,
    target_id: String,
    before: String,
    after: String,
    created_at: PrimitiveDateTime,
}

impl AuditRow {
    fn into_entry(self) -> Result<AuditEntry, RepositoryError> {
        Ok(AuditEntry {
            id: parse_stored_id(&self.id)?,
            actor: UserId(parse_stored_id(&self.actor_id)?),
            action: self.action,
            target: UserId(parse_stored_id(&self.target_id)?),
            before: from_json(&self.before)?,
            after: from_json(&self.after)?,
            at: from_stored_time(self.created_at),
        })
    }
}

/// A page newest first, by `(created_at, id)`, after a cursor.
macro_rules! after_cursor {
    ($query:expr, $table:ident, $after:expr) => {{
        let mut query = $query;
        if let Some((created_at, id)) = $after {
            query = query.filter(
                $table::created_at
                    .lt(created_at)
                    .or($table::created_at.eq(created_at).and($table::id.lt(id))),
            );
        }
        query
    }};
}

/// Which accounts [`Database::account_overviews`] reads.
enum Accounts {
    /// Newest first, after a cursor's `(created_at, id)`.
    Page {
        after: Option<(PrimitiveDateTime, String)>,
        limit: i64,
    },
    One(String),
}

impl Database {
    /// Accounts with their settings and what their keys made (and cost) today and this month.
    async fn account_overviews(
        &self,
        which: Accounts,
        at: OffsetDateTime,
    ) -> Result<Vec<AccountOverview>, RepositoryError> {
        let month = QuotaPeriod::Month.starts_on(at);
        let today = QuotaPeriod::Day.starts_on(at);
        let rows = with_connection!(self, |conn| {
            async {
                let query = users::table
                    .order((users::created_at.desc(), users::id.desc()))
                    .select(UserRow::as_select())
                    .into_boxed();
                let query = match &which {
                    Accounts::Page { after, limit } => {
                        after_cursor!(query, users, after.clone()).limit(*limit)
                    }
                    Accounts::One(id) => query.filter(users::id.eq(id.clone())).limit(1),
                };
                let users: Vec<UserRow> = query.load(conn).await?;
                let ids: Vec<String> = users.iter().map(|row| row.id().to_owned()).collect();
                let usage = usage_daily::table
                    .inner_join(api_keys::table)
                    .filter(api_keys::user_id.eq_any(&ids))
                    .filter(usage_daily::day.ge(month))
                    .select((
                        api_keys::user_id,
                        usage_daily::day,
                        usage_daily::count,
                        usage_daily::cost_nano_usd,
                    ))
                    .load::<(String, Date, i64, i64)>(conn)
                    .await?;
                Ok::<_, diesel::result::Error>((users, usage))
            }
            .await
        })?;
        let (users, usage) = rows.map_err(query_error)?;
        let mut totals: HashMap<String, KeyUsage> = HashMap::new();
        for (user_id, day, count, cost) in usage {
            let count = u64::try_from(count).map_err(RepositoryError::unexpected)?;
            totals
                .entry(user_id)
                .or_default()
                .add(count, Usd::from_nanos(cost), day == today);
        }
        users
            .into_iter()
            .map(|row| {
                let usage = totals.get(row.id()).copied().unwrap_or_default();
                let settings = settings_of(&row);
                Ok(AccountOverview {
                    user: row.into_user()?,
                    settings,
                    usage,
                })
            })
            .collect()
    }
}

#[async_trait]
impl AdminRepository for Database {
    #[tracing::instrument(skip(self))]
    async fn list_accounts(
        &self,
        page: PageRequest,
        at: OffsetDateTime,
    ) -> Result<Page<AccountOverview>, RepositoryError> {
        let after = page
            .after
            .map(|cursor| (to_stored_time(cursor.created_at), cursor.id.to_string()));
        let overviews = self
            .account_overviews(
                Accounts::Page {
                    after,
                    limit: i64::from(page.limit) + 1,
                },
                at,
            )
            .await?;
        Ok(Page::from_overfetch(overviews, page.limit, |overview| {
            Cursor {
                created_at: overview.user.created_at,
                id: overview.user.id.0,
            }
        }))
    }

    #[tracing::instrument(skip(self))]
    async fn find_account(
        &self,
        user_id: UserId,
        at: OffsetDateTime,
    ) -> Result<Option<AccountOverview>, RepositoryError> {
        let mut overviews = self
            .account_overviews(Accounts::One(user_id.to_string()), at)
            .await?;
        Ok(overviews.pop())
    }

    #[tracing::instrument(skip(self, changes, entry))]
    async fn update_account(
        &self,
        user_id: UserId,
        changes: &AccountChanges,
        entry: &AuditEntry,
    ) -> Result<Option<(AccountSettings, AccountSettings)>, RepositoryError> {
        let id = user_id.to_string();
        let changes = *changes;
        let entry = entry.clone();
        with_transaction!(self, lock_user: Some(&id), |conn, run| {
            let found: Option<UserRow> = run!(
                users::table.find(&id).select(UserRow::as_select()),
                first,
                conn
            )
            .optional()?;
            let Some(row) = found else {
                return Ok(None);
            };
            let before = settings_of(&row);
            let after = changes.apply(before);
            let (per_day, per_month, budget_per_day, budget_per_month) =
                from_period_limits(after.limits);
            run!(
                diesel::update(users::table.find(&id)).set((
                    users::per_day.eq(per_day),
                    users::per_month.eq(per_month),
                    users::budget_per_day_nano_usd.eq(budget_per_day),
                    users::budget_per_month_nano_usd.eq(budget_per_month),
                    users::disabled.eq(after.disabled),
                )),
                execute,
                conn
            )?;
            if changes.touches_quotas() {
                set_counters_from_usage!(conn, run, QuotaScope::Account, &id, entry.at);
            }
            let audit = AuditRow {
                id: entry.id.to_string(),
                actor_id: entry.actor.to_string(),
                action: entry.action.clone(),
                target_id: id.clone(),
                before: to_json(before),
                after: to_json(after),
                created_at: to_stored_time(entry.at),
            };
            run!(diesel::insert_into(audit_log::table).values(&audit), execute, conn)?;
            Ok(Some((before, after)))
        })
    }

    #[tracing::instrument(skip(self))]
    async fn list_audit(&self, page: PageRequest) -> Result<Page<AuditEntry>, RepositoryError> {
        let after = page
            .after
            .map(|cursor| (to_stored_time(cursor.created_at), cursor.id.to_string()));
        let rows = with_connection!(self, |conn| {
            let query = audit_log::table
                .order((audit_log::created_at.desc(), audit_log::id.desc()))
                .select(AuditRow::as_select())
                .limit(i64::from(page.limit) + 1)
                .into_boxed();
            after_cursor!(query, audit_log, after).load(conn).await
        })?;
        let entries = rows
            .map_err(query_error)?
            .into_iter()
            .map(AuditRow::into_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(entries, page.limit, |entry| Cursor {
            created_at: entry.at,
            id: entry.id,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn bind_admin_email(
        &self,
        email: &EmailAddress,
        user_id: UserId,
        at: OffsetDateTime,
    ) -> Result<UserId, RepositoryError> {
        let (email, candidate, at) = (
            email.as_str().to_owned(),
            user_id.to_string(),
            to_stored_time(at),
        );
        let bound = with_connection!(self, |conn| {
            let inserted = diesel::insert_into(admin_bindings::table)
                .values((
                    admin_bindings::email.eq(&email),
                    admin_bindings::user_id.eq(&candidate),
                    admin_bindings::bound_at.eq(at),
                ))
                .on_conflict(admin_bindings::email)
                .do_nothing()
                .execute(conn)
                .await;
            match inserted {
                Ok(_) => {
                    admin_bindings::table
                        .find(&email)
                        .select(admin_bindings::user_id)
                        .first::<String>(conn)
                        .await
                }
                Err(error) => Err(error),
            }
        })?;
        Ok(UserId(parse_stored_id(&bound.map_err(query_error)?)?))
    }

    #[tracing::instrument(skip_all)]
    async fn release_admin_email(&self, email: &EmailAddress) -> Result<bool, RepositoryError> {
        let email = email.as_str().to_owned();
        let deleted = with_connection!(self, |conn| {
            diesel::delete(admin_bindings::table.find(&email))
                .execute(conn)
                .await
        })?;
        Ok(deleted.map_err(query_error)? > 0)
    }
}
