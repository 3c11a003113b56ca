//! `GenerationRepository` on both backends: [`GenerationStore`].
//!
//! Recording a success is the one multi-statement write: the history row and the usage
//! increment commit together. Successes are committed in batches by one writer task (see
//! `success_writer`), so that concurrent generations share a transaction and its fsync. On
//! SQLite the transaction starts with `BEGIN IMMEDIATE`, which takes the write lock up front
//! (waiting up to the busy timeout) instead of failing with `SQLITE_BUSY` when two deferred
//! transactions both try to upgrade.

mod history;
pub(crate) mod rows;
mod success_writer;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::accounts::UserId;
use nb_domain::api_keys::{ApiKeyId, KeyMode, KeyUsage};
use nb_domain::generation::{GenerationOutcome, GenerationRecord};
use nb_domain::money::Usd;
use nb_domain::ports::GenerationRepository;
use nb_domain::quota::QuotaPeriod;
use nb_domain::usage::UsageFact;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use self::rows::{GenerationRow, enqueue_events};
use self::success_writer::SuccessWriter;
use crate::convert::{parse_stored_id, query_error};
use crate::pool::Database;
use crate::pool::{with_connection, with_transaction};
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

/// Usage of one key on one day (with one model, when read by model): its day, key, mode,
/// model, images and nano-dollars.
type UsageLine = (Date, String, String, Option<String>, i64, i64);

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
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    cost: i64,
}

impl GenerationStore {
    /// Successes per UTC day, key, mode and model, counted from the generations themselves
    /// (`usage_daily` has no model). `date()` reads a timestamp's day on both backends.
    async fn usage_by_model(
        &self,
        user_id: String,
        from: Date,
        to: Date,
    ) -> Result<Vec<UsageLine>, RepositoryError> {
        let (start, end) = (
            PrimitiveDateTime::new(from, time::Time::MIDNIGHT),
            PrimitiveDateTime::new(to.next_day().unwrap_or(to), time::Time::MIDNIGHT),
        );
        let placeholders: [&str; 3] = match self.database.pool.backend_name() {
            "postgres" => ["$1", "$2", "$3"],
            _ => ["?", "?", "?"],
        };
        let sql = format!(
            "SELECT date(created_at) AS day, api_key_id, mode, model, COUNT(*) AS count, \
             CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) AS cost \
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
                    row.cost,
                )
            })
            .collect())
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
        // A failure and its webhook events commit together.
        let ids = [row.id.clone()];
        with_transaction!(&self.database, |conn, run| {
            run!(
                diesel::insert_into(generations::table).values(&row),
                execute,
                conn
            )?;
            enqueue_events!(conn, run, &ids);
            Ok(())
        })
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
        let rows: Vec<UsageLine> = if by_model {
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
                        usage_daily::cost_nano_usd,
                    ))
                    .load::<(Date, String, String, i64, i64)>(conn)
                    .await
            })?;
            rows.map_err(query_error)?
                .into_iter()
                .map(|(day, key, mode, count, cost)| (day, key, mode, None, count, cost))
                .collect()
        };
        rows.into_iter()
            .map(|(day, key_id, mode, model, count, cost)| {
                Ok(UsageFact {
                    day,
                    api_key_id: ApiKeyId(parse_stored_id(&key_id)?),
                    mode: KeyMode::parse(&mode).map_err(RepositoryError::unexpected)?,
                    model,
                    count: u64::try_from(count).map_err(RepositoryError::unexpected)?,
                    cost: Usd::from_nanos(cost),
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
                    usage_daily::cost_nano_usd,
                ))
                .load::<(String, Date, i64, i64)>(conn)
                .await
        })?;
        let mut usage: std::collections::HashMap<ApiKeyId, KeyUsage> = Default::default();
        for (key_id, day, count, cost) in rows.map_err(query_error)? {
            let key_id = ApiKeyId(parse_stored_id(&key_id)?);
            let count = u64::try_from(count).map_err(RepositoryError::unexpected)?;
            usage
                .entry(key_id)
                .or_default()
                .add(count, Usd::from_nanos(cost), day == today);
        }
        Ok(usage.into_iter().collect())
    }
}
