//! `ApiKeyRepository` on both backends.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::api_keys::{ApiKeyHash, ApiKeyId, ApiKeyRecord, AuthenticatedApiKey, NewApiKey};
use nb_domain::ports::ApiKeyRepository;
use nb_domain::user::UserId;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::convert::{from_stored_time, parse_stored_id, query_error, to_stored_time};
use crate::pool::Database;
use crate::pool::with_connection;
use crate::schema::api_keys;

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

#[async_trait]
impl ApiKeyRepository for Database {
    #[tracing::instrument(skip_all, fields(key_id = %new_key.record.id))]
    async fn insert_api_key(&self, new_key: &NewApiKey) -> Result<(), RepositoryError> {
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
        let inserted = with_connection!(self, |conn| {
            diesel::insert_into(api_keys::table)
                .values(&row)
                .execute(conn)
                .await
        })?;
        inserted.map(|_| ()).map_err(query_error)
    }

    #[tracing::instrument(skip(self))]
    async fn list_api_keys(&self, user_id: UserId) -> Result<Vec<ApiKeyRecord>, RepositoryError> {
        let user_id = user_id.to_string();
        let rows = with_connection!(self, |conn| {
            api_keys::table
                .filter(api_keys::user_id.eq(&user_id))
                .order((api_keys::created_at.desc(), api_keys::id.desc()))
                .select(ApiKeyRow::as_select())
                .load(conn)
                .await
        })?;
        rows.map_err(query_error)?
            .into_iter()
            .map(ApiKeyRow::into_record)
            .collect()
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
