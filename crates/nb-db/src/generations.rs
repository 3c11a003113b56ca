//! `GenerationRepository` on both backends.
//!
//! Recording a success is the one multi-statement write: the history row and the usage
//! increment commit together. On SQLite the transaction starts with `BEGIN IMMEDIATE`, which
//! takes the write lock up front (waiting up to the busy timeout) instead of failing with
//! `SQLITE_BUSY` when two deferred transactions both try to upgrade.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, RunQueryDsl};
use nb_domain::RepositoryError;
use nb_domain::api_keys::ApiKeyId;
use nb_domain::generation::GenerationRecord;
use nb_domain::ports::{DailyUsage, GenerationRepository};
use nb_domain::user::UserId;
use time::{Date, PrimitiveDateTime, UtcOffset};
use tracing::Instrument;

use crate::connect::{ConnectionPool, Database};
use crate::convert::{parse_stored_id, pool_error, query_error, to_stored_time};
use crate::schema::{api_keys, generations, usage_daily};
use crate::with_connection;

#[derive(Insertable, Clone)]
#[diesel(table_name = generations)]
struct GenerationRow {
    id: String,
    user_id: String,
    api_key_id: String,
    prompt: String,
    size: String,
    style: String,
    model: String,
    status: String,
    error_code: Option<String>,
    object_key: Option<String>,
    url: Option<String>,
    mime_type: Option<String>,
    byte_size: Option<i64>,
    latency_ms: i64,
    created_at: PrimitiveDateTime,
}

impl From<&GenerationRecord> for GenerationRow {
    fn from(record: &GenerationRecord) -> Self {
        Self {
            id: record.id.to_string(),
            user_id: record.caller.user_id.to_string(),
            api_key_id: record.caller.key_id.to_string(),
            prompt: record.prompt.as_str().to_owned(),
            size: record.size.as_str().to_owned(),
            style: record.style.as_str().to_owned(),
            model: record.model.as_str().to_owned(),
            status: record.status.as_str().to_owned(),
            error_code: record.error_code.clone(),
            object_key: record
                .object_key
                .as_ref()
                .map(|key| key.as_str().to_owned()),
            url: record.url.clone(),
            mime_type: record.mime_type.map(str::to_owned),
            byte_size: record.byte_size.and_then(|size| i64::try_from(size).ok()),
            latency_ms: i64::try_from(record.latency.as_millis()).unwrap_or(i64::MAX),
            created_at: to_stored_time(record.created_at),
        }
    }
}

/// `INSERT … ON CONFLICT (api_key_id, day) DO UPDATE SET count = count + 1`: one atomic
/// statement on both backends, so concurrent increments never lose a count.
macro_rules! increment_usage {
    ($key_id:expr, $day:expr) => {
        diesel::insert_into(usage_daily::table)
            .values((
                usage_daily::api_key_id.eq($key_id),
                usage_daily::day.eq($day),
                usage_daily::count.eq(1_i64),
            ))
            .on_conflict((usage_daily::api_key_id, usage_daily::day))
            .do_update()
            .set(usage_daily::count.eq(usage_daily::count + excluded(usage_daily::count)))
    };
}

#[async_trait]
impl GenerationRepository for Database {
    #[tracing::instrument(skip_all, fields(generation_id = %generation.id))]
    async fn record_success(&self, generation: &GenerationRecord) -> Result<(), RepositoryError> {
        let row = GenerationRow::from(generation);
        let day: Date = generation.created_at.to_offset(UtcOffset::UTC).date();
        let span = tracing::Span::current();
        let task = match self.pool.clone() {
            ConnectionPool::Postgres(pool) => self.runtime.spawn(
                async move {
                    let mut conn = pool.get().await.map_err(pool_error)?;
                    let written = conn
                        .transaction::<_, diesel::result::Error, _>(async |conn| {
                            increment_usage!(&row.api_key_id, day).execute(conn).await?;
                            diesel::insert_into(generations::table)
                                .values(&row)
                                .execute(conn)
                                .await?;
                            Ok(())
                        })
                        .await;
                    written.map_err(query_error)
                }
                .instrument(span.clone()),
            ),
            ConnectionPool::Sqlite(pool) => self.runtime.spawn(
                async move {
                    let mut conn = pool.get().await.map_err(pool_error)?;
                    let written = conn
                        .spawn_blocking(move |conn| {
                            conn.immediate_transaction(|conn| {
                                diesel::RunQueryDsl::execute(
                                    increment_usage!(&row.api_key_id, day),
                                    conn,
                                )?;
                                diesel::RunQueryDsl::execute(
                                    diesel::insert_into(generations::table).values(&row),
                                    conn,
                                )?;
                                Ok(())
                            })
                        })
                        .await;
                    written.map_err(query_error)
                }
                .instrument(span),
            ),
        };
        task.await
            .unwrap_or_else(|crashed| Err(RepositoryError::unexpected(crashed)))
    }

    #[tracing::instrument(skip_all, fields(generation_id = %generation.id))]
    async fn record_failure(&self, generation: &GenerationRecord) -> Result<(), RepositoryError> {
        let row = GenerationRow::from(generation);
        let inserted = with_connection!(self, |conn| {
            diesel::insert_into(generations::table)
                .values(&row)
                .execute(conn)
                .await
        })?;
        inserted.map(|_| ()).map_err(query_error)
    }

    #[tracing::instrument(skip(self))]
    async fn daily_usage(
        &self,
        user_id: UserId,
        since: Date,
    ) -> Result<Vec<DailyUsage>, RepositoryError> {
        let user_id = user_id.to_string();
        let rows = with_connection!(self, |conn| {
            usage_daily::table
                .inner_join(api_keys::table)
                .filter(api_keys::user_id.eq(&user_id))
                .filter(usage_daily::day.ge(since))
                .order((usage_daily::day.desc(), usage_daily::api_key_id.asc()))
                .select((
                    usage_daily::api_key_id,
                    usage_daily::day,
                    usage_daily::count,
                ))
                .load::<(String, Date, i64)>(conn)
                .await
        })?;
        rows.map_err(query_error)?
            .into_iter()
            .map(|(key_id, day, count)| {
                Ok(DailyUsage {
                    api_key_id: ApiKeyId(parse_stored_id(&key_id)?),
                    day,
                    count: u64::try_from(count).map_err(RepositoryError::unexpected)?,
                })
            })
            .collect()
    }
}
