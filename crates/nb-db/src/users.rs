//! `UserRepository` on both backends.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use nb_domain::RepositoryError;
use nb_domain::accounts::{EmailAddress, NewUser, PasswordHash, User, UserCredentials, UserId};
use nb_domain::generation::ObjectKey;
use nb_domain::ports::{ErasedAccount, InsertUserError, UserRepository};
use time::{OffsetDateTime, PrimitiveDateTime};

use nb_domain::quota::{PeriodLimits, QuotaScope};

use crate::convert::{
    from_period_limits, from_stored_time, is_unique_violation, parse_stored_id, query_error,
    to_period_limits, to_stored_time,
};
use crate::pool::Database;
use crate::pool::{with_connection, with_transaction};
use crate::schema::{api_keys, generations, idempotency_keys, quota_counters, sessions, users};

/// What an erased account's password hash becomes: not a bcrypt hash, so no password
/// verifies against it.
const ERASED_PASSWORD_HASH: &str = "!erased";

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    id: String,
    email: String,
    password_hash: String,
    created_at: PrimitiveDateTime,
    per_day: Option<i64>,
    per_month: Option<i64>,
    disabled: bool,
    budget_per_day_nano_usd: Option<i64>,
    budget_per_month_nano_usd: Option<i64>,
}

impl UserRow {
    fn into_credentials(self) -> Result<UserCredentials, RepositoryError> {
        let password_hash = PasswordHash::new(self.password_hash.clone());
        Ok(UserCredentials {
            user: self.into_user()?,
            password_hash,
        })
    }

    pub(crate) fn into_user(self) -> Result<User, RepositoryError> {
        Ok(User {
            id: UserId(parse_stored_id(&self.id)?),
            email: EmailAddress::from_trusted(self.email),
            created_at: from_stored_time(self.created_at),
            disabled: self.disabled,
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn disabled(&self) -> bool {
        self.disabled
    }

    pub(crate) fn limits(&self) -> PeriodLimits {
        to_period_limits((
            self.per_day,
            self.per_month,
            self.budget_per_day_nano_usd,
            self.budget_per_month_nano_usd,
        ))
    }
}

#[async_trait]
impl UserRepository for Database {
    #[tracing::instrument(skip_all, fields(user_id = %new_user.user.id))]
    async fn insert_user(&self, new_user: &NewUser) -> Result<(), InsertUserError> {
        let (per_day, per_month, budget_per_day_nano_usd, budget_per_month_nano_usd) =
            from_period_limits(new_user.limits);
        let row = UserRow {
            id: new_user.user.id.to_string(),
            email: new_user.user.email.as_str().to_owned(),
            password_hash: new_user.password_hash.as_str().to_owned(),
            created_at: to_stored_time(new_user.user.created_at),
            per_day,
            per_month,
            budget_per_day_nano_usd,
            budget_per_month_nano_usd,
            disabled: new_user.user.disabled,
        };
        let inserted = with_connection!(self, |conn| {
            diesel::insert_into(users::table)
                .values(&row)
                .execute(conn)
                .await
        })?;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(InsertUserError::EmailTaken),
            Err(error) => Err(query_error(error).into()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn find_user_by_email(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<UserCredentials>, RepositoryError> {
        let email = email.as_str().to_owned();
        let found = with_connection!(self, |conn| {
            users::table
                .filter(users::email.eq(&email))
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        found
            .map_err(query_error)?
            .map(UserRow::into_credentials)
            .transpose()
    }

    #[tracing::instrument(skip(self))]
    async fn find_credentials_by_id(
        &self,
        id: UserId,
    ) -> Result<Option<UserCredentials>, RepositoryError> {
        let id = id.to_string();
        let found = with_connection!(self, |conn| {
            users::table
                .find(&id)
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        found
            .map_err(query_error)?
            .map(UserRow::into_credentials)
            .transpose()
    }

    #[tracing::instrument(skip_all, fields(user_id = %id))]
    async fn replace_password(
        &self,
        id: UserId,
        password_hash: &PasswordHash,
    ) -> Result<bool, RepositoryError> {
        let (id, hash) = (id.to_string(), password_hash.as_str().to_owned());
        let replaced = with_connection!(self, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let updated = diesel::update(users::table.find(&id))
                    .set(users::password_hash.eq(&hash))
                    .execute(conn)
                    .await?;
                diesel::delete(sessions::table.filter(sessions::user_id.eq(&id)))
                    .execute(conn)
                    .await?;
                Ok(updated > 0)
            })
            .await
        })?;
        replaced.map_err(query_error)
    }

    #[tracing::instrument(skip(self))]
    async fn erase_user(
        &self,
        id: UserId,
        tombstone: &EmailAddress,
        at: OffsetDateTime,
    ) -> Result<Option<ErasedAccount>, RepositoryError> {
        let user_id = id.to_string();
        let tombstone_email = tombstone.as_str().to_owned();
        let at = to_stored_time(at);
        let erased = with_transaction!(self, lock_user: Some(&user_id), |conn, run| {
            let tombstoned = run!(
                diesel::update(users::table.find(&user_id)).set((
                    users::email.eq(&tombstone_email),
                    // Not a hash any password can match.
                    users::password_hash.eq(ERASED_PASSWORD_HASH),
                    users::disabled.eq(true),
                    users::per_day.eq(None::<i64>),
                    users::per_month.eq(None::<i64>),
                    users::budget_per_day_nano_usd.eq(None::<i64>),
                    users::budget_per_month_nano_usd.eq(None::<i64>),
                )),
                execute,
                conn
            )?;
            if tombstoned == 0 {
                return Ok(None);
            }
            let keys: Vec<(String, bool)> = run!(
                api_keys::table
                    .filter(api_keys::user_id.eq(&user_id))
                    .select((api_keys::id, api_keys::is_active)),
                load,
                conn
            )?;
            let active_keys = keys.iter().filter(|(_, active)| *active).count();
            let key_ids: Vec<String> = keys.into_iter().map(|(id, _)| id).collect();
            run!(
                diesel::update(api_keys::table.filter(api_keys::user_id.eq(&user_id))).set((
                    api_keys::is_active.eq(false),
                    api_keys::name.eq(None::<String>),
                    api_keys::expires_at.eq(Some(at)),
                )),
                execute,
                conn
            )?;
            let object_keys: Vec<String> = run!(
                generations::table
                    .filter(generations::user_id.eq(&user_id))
                    .filter(generations::deleted_at.is_null())
                    .filter(generations::object_key.is_not_null())
                    .select(generations::object_key.assume_not_null()),
                load,
                conn
            )?;
            run!(
                diesel::delete(generations::table.filter(generations::user_id.eq(&user_id))),
                execute,
                conn
            )?;
            run!(
                diesel::delete(sessions::table.filter(sessions::user_id.eq(&user_id))),
                execute,
                conn
            )?;
            run!(
                diesel::delete(
                    idempotency_keys::table.filter(idempotency_keys::api_key_id.eq_any(&key_ids))
                ),
                execute,
                conn
            )?;
            run!(
                diesel::delete(
                    quota_counters::table
                        .filter(quota_counters::subject_kind.eq(QuotaScope::Key.as_str()))
                        .filter(quota_counters::subject_id.eq_any(&key_ids)),
                ),
                execute,
                conn
            )?;
            run!(
                diesel::delete(
                    quota_counters::table
                        .filter(quota_counters::subject_kind.eq(QuotaScope::Account.as_str()))
                        .filter(quota_counters::subject_id.eq(&user_id)),
                ),
                execute,
                conn
            )?;
            Ok(Some(ErasedAccount {
                keys_revoked: active_keys,
                object_keys: object_keys.into_iter().map(ObjectKey::from_stored).collect(),
            }))
        })?;
        Ok(erased)
    }

    #[tracing::instrument(skip(self))]
    async fn find_user_by_id(&self, id: UserId) -> Result<Option<User>, RepositoryError> {
        let id = id.to_string();
        let found = with_connection!(self, |conn| {
            users::table
                .find(&id)
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        found
            .map_err(query_error)?
            .map(UserRow::into_user)
            .transpose()
    }
}
