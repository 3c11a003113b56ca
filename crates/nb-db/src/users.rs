//! `UserRepository` on both backends.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use nb_domain::RepositoryError;
use nb_domain::ports::{InsertUserError, UserRepository};
use nb_domain::user::{EmailAddress, NewUser, PasswordHash, User, UserCredentials, UserId};
use time::PrimitiveDateTime;

use nb_domain::quota::PeriodLimits;

use crate::convert::{
    from_limit, from_stored_time, is_unique_violation, parse_stored_id, query_error, to_limit,
    to_stored_time,
};
use crate::pool::Database;
use crate::pool::with_connection;
use crate::schema::{sessions, users};

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
        PeriodLimits {
            per_day: to_limit(self.per_day),
            per_month: to_limit(self.per_month),
        }
    }
}

#[async_trait]
impl UserRepository for Database {
    #[tracing::instrument(skip_all, fields(user_id = %new_user.user.id))]
    async fn insert_user(&self, new_user: &NewUser) -> Result<(), InsertUserError> {
        let row = UserRow {
            id: new_user.user.id.to_string(),
            email: new_user.user.email.as_str().to_owned(),
            password_hash: new_user.password_hash.as_str().to_owned(),
            created_at: to_stored_time(new_user.user.created_at),
            per_day: from_limit(new_user.limits.per_day),
            per_month: from_limit(new_user.limits.per_month),
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
