//! `ApiKeyRepository` on both backends.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use nb_domain::RepositoryError;
use nb_domain::api_keys::{ApiKeyHash, ApiKeyId, ApiKeyRecord, AuthenticatedApiKey, NewApiKey};
use nb_domain::pagination::{Cursor, Page, PageRequest};
use nb_domain::ports::{ApiKeyRepository, InsertKeyError};
use nb_domain::user::UserId;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::convert::{from_stored_time, parse_stored_id, pool_error, query_error, to_stored_time};
use crate::pool::{ConnectionPool, Database, with_connection};
use crate::schema::{api_keys, users};

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
struct NewApiKeyRow {
    id: String,
    user_id: String,
    name: Option<String>,
    key_hash: String,
    prefix: String,
    is_active: bool,
    last_used_at: Option<PrimitiveDateTime>,
    created_at: PrimitiveDateTime,
}

/// Every column but the hash, which never leaves the database once written.
#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys)]
struct ApiKeyRow {
    id: String,
    user_id: String,
    name: Option<String>,
    prefix: String,
    is_active: bool,
    last_used_at: Option<PrimitiveDateTime>,
    created_at: PrimitiveDateTime,
}

impl ApiKeyRow {
    fn into_record(self) -> Result<ApiKeyRecord, RepositoryError> {
        Ok(ApiKeyRecord {
            id: ApiKeyId(parse_stored_id(&self.id)?),
            user_id: UserId(parse_stored_id(&self.user_id)?),
            name: self.name,
            prefix: self.prefix,
            is_active: self.is_active,
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

/// Counts the owner's active keys and inserts the new one if there is room, in the caller's
/// transaction (which has locked the owner first).
macro_rules! insert_if_room {
    ($conn:expr, $row:expr, $max_active:expr, $run:ident) => {{
        let active: i64 = $run!(
            api_keys::table
                .filter(api_keys::user_id.eq(&$row.user_id))
                .filter(api_keys::is_active.eq(true))
                .count(),
            get_result,
            $conn
        )?;
        if active >= i64::from($max_active) {
            Ok(InsertOutcome::Full)
        } else {
            $run!(
                diesel::insert_into(api_keys::table).values(&$row),
                execute,
                $conn
            )?;
            Ok(InsertOutcome::Inserted)
        }
    }};
}

macro_rules! run_async {
    ($query:expr, $method:ident, $conn:expr) => {
        $query.$method($conn).await
    };
}

macro_rules! run_sync {
    ($query:expr, $method:ident, $conn:expr) => {
        diesel::RunQueryDsl::$method($query, $conn)
    };
}

#[async_trait]
impl ApiKeyRepository for Database {
    /// On PostgreSQL the owner's row is locked (`FOR UPDATE`) for the count and the insert;
    /// on SQLite the transaction takes the write lock up front (`BEGIN IMMEDIATE`). Either
    /// way, concurrent creations for one account run one after the other.
    #[tracing::instrument(skip_all, fields(key_id = %new_key.record.id))]
    async fn insert_api_key(
        &self,
        new_key: &NewApiKey,
        max_active: u32,
    ) -> Result<(), InsertKeyError> {
        let record = &new_key.record;
        let row = NewApiKeyRow {
            id: record.id.to_string(),
            user_id: record.user_id.to_string(),
            name: record.name.clone(),
            key_hash: new_key.key_hash.as_str().to_owned(),
            prefix: record.prefix.clone(),
            is_active: record.is_active,
            last_used_at: record.last_used_at.map(to_stored_time),
            created_at: to_stored_time(record.created_at),
        };
        let pool = self.pool.clone();
        let outcome = self
            .runtime
            .spawn(async move {
                match pool {
                    ConnectionPool::Postgres(pool) => {
                        let mut conn = pool.get().await.map_err(pool_error)?;
                        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                            users::table
                                .find(&row.user_id)
                                .select(users::id)
                                .for_update()
                                .first::<String>(conn)
                                .await?;
                            insert_if_room!(conn, row, max_active, run_async)
                        })
                        .await
                        .map_err(query_error)
                    }
                    ConnectionPool::Sqlite(pool) => {
                        let mut conn = pool.get().await.map_err(pool_error)?;
                        conn.spawn_blocking(move |conn| {
                            conn.immediate_transaction(|conn| {
                                insert_if_room!(conn, row, max_active, run_sync)
                            })
                        })
                        .await
                        .map_err(query_error)
                    }
                }
            })
            .await
            .unwrap_or_else(|crashed| Err(RepositoryError::unexpected(crashed)))?;
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
    ) -> Result<Option<AuthenticatedApiKey>, RepositoryError> {
        let key_hash = key_hash.as_str().to_owned();
        let found = with_connection!(self, |conn| {
            api_keys::table
                .filter(api_keys::key_hash.eq(&key_hash))
                .filter(api_keys::is_active.eq(true))
                .select((api_keys::id, api_keys::user_id))
                .first::<(String, String)>(conn)
                .await
                .optional()
        })?;
        found
            .map_err(query_error)?
            .map(|(key_id, user_id)| {
                Ok(AuthenticatedApiKey {
                    key_id: ApiKeyId(parse_stored_id(&key_id)?),
                    user_id: UserId(parse_stored_id(&user_id)?),
                })
            })
            .transpose()
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
