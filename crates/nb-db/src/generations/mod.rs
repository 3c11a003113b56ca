//! `GenerationRepository` on both backends: [`GenerationStore`].
//!
//! Recording a success is the one multi-statement write: the history row and the usage
//! increment commit together. Successes are committed in batches by one writer task (see
//! `success_writer`), so that concurrent generations share a transaction and its fsync. On
//! SQLite the transaction starts with `BEGIN IMMEDIATE`, which takes the write lock up front
//! (waiting up to the busy timeout) instead of failing with `SQLITE_BUSY` when two deferred
//! transactions both try to upgrade.

mod history;
mod success_writer;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, RunQueryDsl};
use nb_domain::RepositoryError;
use nb_domain::accounts::UserId;
use nb_domain::api_keys::{ApiKeyId, KeyMode, KeyUsage};
use nb_domain::generation::{GenerationOutcome, GenerationRecord, size_label};
use nb_domain::ports::GenerationRepository;
use nb_domain::quota::QuotaPeriod;
use nb_domain::usage::UsageFact;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use self::success_writer::SuccessWriter;
use crate::convert::{parse_stored_id, pool_error, query_error, to_stored_time};
use crate::pool::with_connection;
use crate::pool::{ConnectionPool, Database};
use crate::schema::{api_keys, generations, usage_daily};

/// The generation history and usage counts of one database, with the writer task that
/// commits successes in batches.
#[derive(Clone)]
pub struct GenerationStore {
    database: Database,
    success_writer: SuccessWriter,
}

impl std::fmt::Debug for GenerationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationStore")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl GenerationStore {
    /// Starts the success writer on the database's runtime; it stops when the last clone of
    /// this store is dropped.
    pub fn start(database: &Database) -> Self {
        Self {
            database: database.clone(),
            success_writer: SuccessWriter::start(
                database.pool.clone(),
                &database.runtime,
                database.call_timeout,
            ),
        }
    }
}

#[derive(Insertable, Clone)]
#[diesel(table_name = generations)]
pub(crate) struct GenerationRow {
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
    mode: String,
}

impl From<&GenerationRecord> for GenerationRow {
    fn from(record: &GenerationRecord) -> Self {
        let mut row = Self {
            id: record.id.to_string(),
            user_id: record.caller.user_id.to_string(),
            api_key_id: record.caller.key_id.to_string(),
            prompt: record.prompt.as_str().to_owned(),
            size: size_label(record.size).to_owned(),
            style: record.style.as_str().to_owned(),
            model: record.model.as_str().to_owned(),
            status: record.outcome.status().to_owned(),
            error_code: None,
            object_key: None,
            url: None,
            mime_type: None,
            byte_size: None,
            latency_ms: i64::try_from(record.latency.as_millis()).unwrap_or(i64::MAX),
            created_at: to_stored_time(record.created_at),
            mode: record.caller.mode.as_str().to_owned(),
        };
        match &record.outcome {
            GenerationOutcome::Succeeded {
                object_key,
                url,
                format,
                bytes,
            } => {
                row.object_key = Some(object_key.as_str().to_owned());
                row.url.clone_from(url);
                row.mime_type = Some(format.mime_type().to_owned());
                row.byte_size = Some(i64::try_from(*bytes).unwrap_or(i64::MAX));
            }
            GenerationOutcome::Failed { code } => row.error_code = Some((*code).to_owned()),
        }
        row
    }
}

/// `INSERT … ON CONFLICT (api_key_id, day) DO UPDATE SET count = count + n`: one atomic
/// statement on both backends, so concurrent increments never lose a count.
macro_rules! increment_usage {
    ($key_id:expr, $day:expr, $count:expr) => {
        diesel::insert_into(usage_daily::table)
            .values((
                usage_daily::api_key_id.eq($key_id),
                usage_daily::day.eq($day),
                usage_daily::count.eq($count),
            ))
            .on_conflict((usage_daily::api_key_id, usage_daily::day))
            .do_update()
            .set(usage_daily::count.eq(usage_daily::count + excluded(usage_daily::count)))
    };
}

/// One line of usage by model, counted from the history.
#[derive(QueryableByName)]
struct ModelUsageRow {
    #[diesel(sql_type = diesel::sql_types::Date)]
    day: Date,
    #[diesel(sql_type = diesel::sql_types::Text)]
    api_key_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    mode: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    model: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

impl GenerationStore {
    /// Successes per UTC day, key, mode and model, counted from the generations themselves
    /// (`usage_daily` has no model). `date()` reads a timestamp's day on both backends.
    async fn usage_by_model(
        &self,
        user_id: String,
        from: Date,
        to: Date,
    ) -> Result<Vec<(Date, String, String, Option<String>, i64)>, RepositoryError> {
        let (start, end) = (
            PrimitiveDateTime::new(from, time::Time::MIDNIGHT),
            PrimitiveDateTime::new(to.next_day().unwrap_or(to), time::Time::MIDNIGHT),
        );
        let placeholders: [&str; 3] = match self.database.pool.backend_name() {
            "postgres" => ["$1", "$2", "$3"],
            _ => ["?", "?", "?"],
        };
        let sql = format!(
            "SELECT date(created_at) AS day, api_key_id, mode, model, COUNT(*) AS count \
             FROM generations WHERE user_id = {} AND status = 'succeeded' \
             AND created_at >= {} AND created_at < {} \
             GROUP BY date(created_at), api_key_id, mode, model",
            placeholders[0], placeholders[1], placeholders[2]
        );
        let rows = with_connection!(&self.database, |conn| {
            diesel::sql_query(&sql)
                .bind::<diesel::sql_types::Text, _>(&user_id)
                .bind::<diesel::sql_types::Timestamp, _>(start)
                .bind::<diesel::sql_types::Timestamp, _>(end)
                .load::<ModelUsageRow>(conn)
                .await
        })?;
        Ok(rows
            .map_err(query_error)?
            .into_iter()
            .map(|row| {
                (
                    row.day,
                    row.api_key_id,
                    row.mode,
                    Some(row.model),
                    row.count,
                )
            })
            .collect())
    }
}

/// The usage increments of a batch of successes: one `(key, UTC day, count)` per key and day.
fn usage_increments(rows: &[GenerationRow]) -> Vec<(String, Date, i64)> {
    let mut increments: Vec<(String, Date, i64)> = Vec::new();
    for row in rows {
        let day = row.created_at.date();
        match increments
            .iter_mut()
            .find(|(key, d, _)| *key == row.api_key_id && *d == day)
        {
            Some(increment) => increment.2 += 1,
            None => increments.push((row.api_key_id.clone(), day, 1)),
        }
    }
    increments
}

/// Writes succeeded generations and their usage in one transaction: all or none.
pub(crate) async fn write_successes(
    pool: &ConnectionPool,
    rows: Vec<GenerationRow>,
) -> Result<(), RepositoryError> {
    let increments = usage_increments(&rows);
    match pool {
        ConnectionPool::Postgres(pool) => {
            let mut conn = pool.get().await.map_err(pool_error)?;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                for (key_id, day, count) in &increments {
                    increment_usage!(key_id, *day, *count).execute(conn).await?;
                }
                diesel::insert_into(generations::table)
                    .values(&rows)
                    .execute(conn)
                    .await?;
                Ok(())
            })
            .await
            .map_err(query_error)
        }
        ConnectionPool::Sqlite(pool) => {
            let mut conn = pool.get().await.map_err(pool_error)?;
            conn.spawn_blocking(move |conn| {
                conn.immediate_transaction(|conn| {
                    for (key_id, day, count) in &increments {
                        diesel::RunQueryDsl::execute(increment_usage!(key_id, *day, *count), conn)?;
                    }
                    diesel::RunQueryDsl::execute(
                        diesel::insert_into(generations::table).values(&rows),
                        conn,
                    )?;
                    Ok(())
                })
            })
            .await
            .map_err(query_error)
        }
    }
}

#[async_trait]
impl GenerationRepository for GenerationStore {
    /// A success is handed to the success writer (see `success_writer`), which commits it
    /// with the other successes waiting at that moment; this returns once it is committed.
    #[tracing::instrument(skip_all, fields(generation_id = %generation.id, status = generation.outcome.status()))]
    async fn record(&self, generation: &GenerationRecord) -> Result<(), RepositoryError> {
        let row = GenerationRow::from(generation);
        if let GenerationOutcome::Succeeded { .. } = generation.outcome {
            return self.success_writer.write(row).await;
        }
        let inserted = with_connection!(&self.database, |conn| {
            diesel::insert_into(generations::table)
                .values(&row)
                .execute(conn)
                .await
        })?;
        inserted.map(|_| ()).map_err(query_error)
    }

    #[tracing::instrument(skip(self))]
    async fn usage_facts(
        &self,
        user_id: UserId,
        from: Date,
        to: Date,
        by_model: bool,
    ) -> Result<Vec<UsageFact>, RepositoryError> {
        let user_id = user_id.to_string();
        let rows: Vec<(Date, String, String, Option<String>, i64)> = if by_model {
            self.usage_by_model(user_id, from, to).await?
        } else {
            let rows = with_connection!(&self.database, |conn| {
                usage_daily::table
                    .inner_join(api_keys::table)
                    .filter(api_keys::user_id.eq(&user_id))
                    .filter(usage_daily::day.between(from, to))
                    .select((
                        usage_daily::day,
                        usage_daily::api_key_id,
                        api_keys::mode,
                        usage_daily::count,
                    ))
                    .load::<(Date, String, String, i64)>(conn)
                    .await
            })?;
            rows.map_err(query_error)?
                .into_iter()
                .map(|(day, key, mode, count)| (day, key, mode, None, count))
                .collect()
        };
        rows.into_iter()
            .map(|(day, key_id, mode, model, count)| {
                Ok(UsageFact {
                    day,
                    api_key_id: ApiKeyId(parse_stored_id(&key_id)?),
                    mode: KeyMode::parse(&mode).map_err(RepositoryError::unexpected)?,
                    model,
                    count: u64::try_from(count).map_err(RepositoryError::unexpected)?,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(keys = keys.len()))]
    async fn key_usage(
        &self,
        keys: &[ApiKeyId],
        at: OffsetDateTime,
    ) -> Result<Vec<(ApiKeyId, KeyUsage)>, RepositoryError> {
        let today = QuotaPeriod::Day.starts_on(at);
        let month = QuotaPeriod::Month.starts_on(at);
        let ids: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let rows = with_connection!(&self.database, |conn| {
            usage_daily::table
                .filter(usage_daily::api_key_id.eq_any(&ids))
                .filter(usage_daily::day.ge(month))
                .select((
                    usage_daily::api_key_id,
                    usage_daily::day,
                    usage_daily::count,
                ))
                .load::<(String, Date, i64)>(conn)
                .await
        })?;
        let mut usage: std::collections::HashMap<ApiKeyId, KeyUsage> = Default::default();
        for (key_id, day, count) in rows.map_err(query_error)? {
            let key_id = ApiKeyId(parse_stored_id(&key_id)?);
            let count = u64::try_from(count).map_err(RepositoryError::unexpected)?;
            let entry = usage.entry(key_id).or_default();
            entry.this_month += count;
            if day == today {
                entry.today += count;
            }
        }
        Ok(usage.into_iter().collect())
    }
}
