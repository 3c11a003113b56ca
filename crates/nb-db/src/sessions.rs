//! `SessionRepository` on both backends.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::accounts::{Session, SessionId, User, UserId};
use nb_domain::ports::SessionRepository;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::convert::{query_error, to_stored_time};
use crate::pool::{Database, with_connection};
use crate::schema::{sessions, users};
use crate::users::UserRow;

#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct SessionRow {
    id: String,
    user_id: String,
    created_at: PrimitiveDateTime,
    expires_at: PrimitiveDateTime,
}

#[async_trait]
impl SessionRepository for Database {
    #[tracing::instrument(skip_all, fields(user_id = %session.user_id))]
    async fn insert_session(&self, session: &Session) -> Result<(), RepositoryError> {
        let row = SessionRow {
            id: session.id.to_string(),
            user_id: session.user_id.to_string(),
            created_at: to_stored_time(session.created_at),
            expires_at: to_stored_time(session.expires_at),
        };
        let inserted = with_connection!(self, |conn| {
            diesel::insert_into(sessions::table)
                .values(&row)
                .execute(conn)
                .await
        })?;
        inserted.map(|_| ()).map_err(query_error)
    }

    #[tracing::instrument(skip(self))]
    async fn find_session_user(
        &self,
        user_id: UserId,
        session_id: SessionId,
        now: OffsetDateTime,
    ) -> Result<Option<User>, RepositoryError> {
        let (user_id, session_id, now) = (
            user_id.to_string(),
            session_id.to_string(),
            to_stored_time(now),
        );
        let found = with_connection!(self, |conn| {
            sessions::table
                .inner_join(users::table)
                .filter(sessions::id.eq(&session_id))
                .filter(sessions::user_id.eq(&user_id))
                .filter(sessions::expires_at.gt(now))
                .select(UserRow::as_select())
                .first::<UserRow>(conn)
                .await
                .optional()
        })?;
        found
            .map_err(query_error)?
            .map(UserRow::into_user)
            .transpose()
    }

    #[tracing::instrument(skip(self))]
    async fn delete_session(
        &self,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<(), RepositoryError> {
        let (user_id, session_id) = (user_id.to_string(), session_id.to_string());
        let deleted = with_connection!(self, |conn| {
            diesel::delete(
                sessions::table
                    .filter(sessions::id.eq(&session_id))
                    .filter(sessions::user_id.eq(&user_id)),
            )
            .execute(conn)
            .await
        })?;
        deleted.map(|_| ()).map_err(query_error)
    }

    #[tracing::instrument(skip(self))]
    async fn delete_expired_sessions(&self, now: OffsetDateTime) -> Result<u64, RepositoryError> {
        let now = to_stored_time(now);
        let deleted = with_connection!(self, |conn| {
            diesel::delete(sessions::table.filter(sessions::expires_at.le(now)))
                .execute(conn)
                .await
        })?;
        Ok(deleted.map_err(query_error)? as u64)
    }
}
