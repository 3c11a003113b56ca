//! A generation as its row, and the write of a batch of successes with their usage.

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, RunQueryDsl};
use nb_domain::RepositoryError;
use nb_domain::generation::{
    GenerationOutcome, GenerationRecord, ObjectKey, ReturnedPart, StoredTurn,
};
use time::{Date, PrimitiveDateTime};

use crate::convert::{pool_error, query_error, to_stored_time};
use crate::pool::ConnectionPool;
use crate::schema::{generations, usage_daily};

#[derive(Insertable, AsChangeset, Clone)]
#[diesel(table_name = generations, treat_none_as_null = true)]
pub(crate) struct GenerationRow {
    pub(crate) id: String,
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
    aspect_ratio: Option<String>,
    resolution: Option<String>,
    width: Option<i32>,
    height: Option<i32>,
    input_tokens: Option<i64>,
    input_text_tokens: Option<i64>,
    input_image_tokens: Option<i64>,
    output_tokens: Option<i64>,
    output_image_tokens: Option<i64>,
    output_text_tokens: Option<i64>,
    thinking_tokens: Option<i64>,
    total_tokens: Option<i64>,
    previous_generation_id: Option<String>,
    turn: Option<String>,
    cost_nano_usd: i64,
}

/// A stored turn as its JSON column holds it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct TurnJson {
    text: String,
    inputs: Vec<String>,
    parts: Vec<PartJson>,
}

/// A part of the model's turn: text, or (no `text`) the image.
#[derive(serde::Serialize, serde::Deserialize)]
struct PartJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl From<&StoredTurn> for TurnJson {
    fn from(turn: &StoredTurn) -> Self {
        Self {
            text: turn.text.clone(),
            inputs: turn
                .input_keys
                .iter()
                .map(|key| key.as_str().to_owned())
                .collect(),
            parts: turn
                .parts
                .iter()
                .map(|part| PartJson {
                    text: part.text.clone(),
                    thought_signature: part.thought_signature.clone(),
                })
                .collect(),
        }
    }
}

impl From<TurnJson> for StoredTurn {
    fn from(turn: TurnJson) -> Self {
        Self {
            text: turn.text,
            input_keys: turn
                .inputs
                .into_iter()
                .map(ObjectKey::from_stored)
                .collect(),
            parts: turn
                .parts
                .into_iter()
                .map(|part| ReturnedPart {
                    text: part.text,
                    thought_signature: part.thought_signature,
                })
                .collect(),
        }
    }
}

impl From<&GenerationRecord> for GenerationRow {
    fn from(record: &GenerationRecord) -> Self {
        let mut row = Self {
            id: record.id.to_string(),
            user_id: record.caller.user_id.to_string(),
            api_key_id: record.caller.key_id.to_string(),
            prompt: record.prompt.as_str().to_owned(),
            size: record.size.clone(),
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
            aspect_ratio: record.shape.aspect_ratio.map(|ratio| ratio.to_string()),
            resolution: Some(record.shape.resolution.as_str().to_owned()),
            width: None,
            height: None,
            input_tokens: None,
            input_text_tokens: None,
            input_image_tokens: None,
            output_tokens: None,
            output_image_tokens: None,
            output_text_tokens: None,
            thinking_tokens: None,
            total_tokens: None,
            previous_generation_id: record.previous.map(|id| id.to_string()),
            turn: record
                .turn
                .as_ref()
                .and_then(|turn| serde_json::to_string(&TurnJson::from(turn)).ok()),
            cost_nano_usd: 0,
        };
        if let Some(usage) = &record.usage {
            let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
            row.input_tokens = count(usage.input_tokens);
            row.input_text_tokens = usage.input_text_tokens.and_then(count);
            row.input_image_tokens = usage.input_image_tokens.and_then(count);
            row.output_tokens = count(usage.output_tokens);
            row.output_image_tokens = usage.output_image_tokens.and_then(count);
            row.output_text_tokens = usage.output_text_tokens.and_then(count);
            row.thinking_tokens = count(usage.thinking_tokens);
            row.total_tokens = count(usage.total_tokens);
        }
        match &record.outcome {
            GenerationOutcome::Succeeded {
                object_key,
                url,
                format,
                bytes,
                dimensions,
                cost,
            } => {
                row.cost_nano_usd = cost.nanos();
                if let Some((width, height)) = dimensions {
                    row.width = i32::try_from(*width).ok();
                    row.height = i32::try_from(*height).ok();
                }
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

impl GenerationRow {
    /// A job's generation as submitted: `queued`, nothing made yet.
    pub(crate) fn queued(job: &nb_domain::generation::NewJob) -> Self {
        let request = &job.request;
        Self {
            id: job.id.to_string(),
            user_id: job.caller.user_id.to_string(),
            api_key_id: job.caller.key_id.to_string(),
            prompt: request.prompt.clone(),
            size: request.size.clone(),
            style: request.style.clone(),
            model: request.model.clone(),
            status: "queued".to_owned(),
            error_code: None,
            object_key: None,
            url: None,
            mime_type: None,
            byte_size: None,
            latency_ms: 0,
            created_at: to_stored_time(job.created_at),
            mode: job.caller.mode.as_str().to_owned(),
            aspect_ratio: request.aspect_ratio.clone(),
            resolution: Some(request.resolution.clone()),
            width: None,
            height: None,
            input_tokens: None,
            input_text_tokens: None,
            input_image_tokens: None,
            output_tokens: None,
            output_image_tokens: None,
            output_text_tokens: None,
            thinking_tokens: None,
            total_tokens: None,
            previous_generation_id: request.previous.map(|id| id.to_string()),
            turn: None,
            cost_nano_usd: 0,
        }
    }

    /// The key and UTC day its usage counts on, with its cost in nano-dollars.
    pub(crate) fn usage_increment(&self) -> (String, Date, i64) {
        (
            self.api_key_id.clone(),
            self.created_at.date(),
            self.cost_nano_usd,
        )
    }
}

/// `INSERT … ON CONFLICT (api_key_id, day) DO UPDATE SET count = count + n, cost = cost +
/// c`: one atomic statement on both backends, so concurrent increments never lose a count.
macro_rules! increment_usage {
    ($key_id:expr, $day:expr, $count:expr, $cost:expr) => {
        diesel::insert_into(usage_daily::table)
            .values((
                usage_daily::api_key_id.eq($key_id),
                usage_daily::day.eq($day),
                usage_daily::count.eq($count),
                usage_daily::cost_nano_usd.eq($cost),
            ))
            .on_conflict((usage_daily::api_key_id, usage_daily::day))
            .do_update()
            .set((
                usage_daily::count.eq(usage_daily::count + excluded(usage_daily::count)),
                usage_daily::cost_nano_usd
                    .eq(usage_daily::cost_nano_usd + excluded(usage_daily::cost_nano_usd)),
            ))
    };
}
pub(crate) use increment_usage;

/// The usage increments of a batch of successes: one `(key, UTC day, count, cost)` per key
/// and day.
fn usage_increments(rows: &[GenerationRow]) -> Vec<(String, Date, i64, i64)> {
    let mut increments: Vec<(String, Date, i64, i64)> = Vec::new();
    for row in rows {
        let day = row.created_at.date();
        match increments
            .iter_mut()
            .find(|(key, d, _, _)| *key == row.api_key_id && *d == day)
        {
            Some(increment) => {
                increment.2 += 1;
                increment.3 = increment.3.saturating_add(row.cost_nano_usd);
            }
            None => increments.push((row.api_key_id.clone(), day, 1, row.cost_nano_usd)),
        }
    }
    increments
}

/// How a batch's transaction ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BatchWrite {
    /// Every row and its usage are committed.
    Committed,
    /// Rolled back before `COMMIT`: `commit_by` had passed when the statements were done.
    TooLate,
}

/// Writes succeeded generations and their usage in one transaction: all or none. The
/// transaction commits only if its statements are done before `commit_by` (checked just
/// before `COMMIT`): a database that answers again after a hang does not commit rows whose
/// callers were told it failed.
pub(crate) async fn write_successes(
    pool: &ConnectionPool,
    rows: std::sync::Arc<[GenerationRow]>,
    commit_by: std::time::Instant,
) -> Result<BatchWrite, RepositoryError> {
    let increments = usage_increments(&rows);
    let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
    let too_late = move || std::time::Instant::now() >= commit_by;
    let written = match pool {
        ConnectionPool::Postgres(pool) => {
            let mut conn = pool.get().await.map_err(pool_error)?;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                for (key_id, day, count, cost) in &increments {
                    increment_usage!(key_id, *day, *count, *cost)
                        .execute(conn)
                        .await?;
                }
                diesel::insert_into(generations::table)
                    .values(&rows[..])
                    .execute(conn)
                    .await?;
                use crate::pool::run_async as run;
                enqueue_events!(conn, run, &ids);
                if too_late() {
                    return Err(diesel::result::Error::RollbackTransaction);
                }
                Ok(())
            })
            .await
        }
        ConnectionPool::Sqlite(pool) => {
            let mut conn = pool.get().await.map_err(pool_error)?;
            conn.spawn_blocking(move |conn| {
                conn.immediate_transaction(|conn| {
                    for (key_id, day, count, cost) in &increments {
                        diesel::RunQueryDsl::execute(
                            increment_usage!(key_id, *day, *count, *cost),
                            conn,
                        )?;
                    }
                    diesel::RunQueryDsl::execute(
                        diesel::insert_into(generations::table).values(&rows[..]),
                        conn,
                    )?;
                    use crate::pool::run_sync as run;
                    enqueue_events!(conn, run, &ids);
                    if too_late() {
                        return Err(diesel::result::Error::RollbackTransaction);
                    }
                    Ok(())
                })
            })
            .await
        }
    };
    match written {
        Ok(()) => Ok(BatchWrite::Committed),
        Err(diesel::result::Error::RollbackTransaction) => Ok(BatchWrite::TooLate),
        Err(error) => Err(query_error(error)),
    }
}

/// Takes back committed successes whose callers were told they failed: their rows, their
/// pending webhook events and their usage, in one transaction. Rows that are not there (their
/// transaction did not commit after all) are skipped. Returns how many were taken back.
pub(crate) async fn undo_successes(
    pool: &ConnectionPool,
    rows: Vec<GenerationRow>,
) -> Result<usize, RepositoryError> {
    use crate::schema::webhook_deliveries;
    let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
    let removed_rows = move |removed: &[String]| -> Vec<(String, Date, i64, i64)> {
        let taken_back: Vec<GenerationRow> = rows
            .iter()
            .filter(|row| removed.contains(&row.id))
            .cloned()
            .collect();
        usage_increments(&taken_back)
    };
    let undone = match pool {
        ConnectionPool::Postgres(pool) => {
            let mut conn = pool.get().await.map_err(pool_error)?;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::delete(
                    webhook_deliveries::table
                        .filter(webhook_deliveries::generation_id.eq_any(&ids)),
                )
                .execute(conn)
                .await?;
                let removed: Vec<String> =
                    diesel::delete(generations::table.filter(generations::id.eq_any(&ids)))
                        .returning(generations::id)
                        .get_results(conn)
                        .await?;
                for (key_id, day, count, cost) in removed_rows(&removed) {
                    increment_usage!(&key_id, day, -count, -cost)
                        .execute(conn)
                        .await?;
                }
                Ok(removed.len())
            })
            .await
        }
        ConnectionPool::Sqlite(pool) => {
            let mut conn = pool.get().await.map_err(pool_error)?;
            conn.spawn_blocking(move |conn| {
                conn.immediate_transaction(|conn| {
                    diesel::RunQueryDsl::execute(
                        diesel::delete(
                            webhook_deliveries::table
                                .filter(webhook_deliveries::generation_id.eq_any(&ids)),
                        ),
                        conn,
                    )?;
                    let removed: Vec<String> = diesel::RunQueryDsl::get_results(
                        diesel::delete(generations::table.filter(generations::id.eq_any(&ids)))
                            .returning(generations::id),
                        conn,
                    )?;
                    for (key_id, day, count, cost) in removed_rows(&removed) {
                        diesel::RunQueryDsl::execute(
                            increment_usage!(&key_id, day, -count, -cost),
                            conn,
                        )?;
                    }
                    Ok(removed.len())
                })
            })
            .await
        }
    };
    undone.map_err(query_error)
}

/// Puts the events of the generations `$ids` (which must be written, with their final
/// status, earlier in the caller's transaction) in the webhook outbox: one pending delivery
/// per endpoint of each generation's account that takes its event, due at once. Nothing for
/// an account without endpoints, in one statement.
macro_rules! enqueue_events {
    ($conn:expr, $run:ident, $ids:expr) => {{
        use diesel::expression::IntoSql as _;
        use $crate::schema::{generations, webhook_deliveries, webhook_endpoints};
        let ids: &[String] = $ids;
        let at = $crate::convert::to_stored_time(time::OffsetDateTime::now_utc());
        let subscribed = generations::status
            .eq("succeeded")
            .and(webhook_endpoints::on_succeeded)
            .or(generations::status
                .eq("failed")
                .and(webhook_endpoints::on_failed))
            .or(generations::status
                .eq("canceled")
                .and(webhook_endpoints::on_canceled));
        let due = webhook_endpoints::table
            .inner_join(generations::table.on(generations::user_id.eq(webhook_endpoints::user_id)))
            .filter(generations::id.eq_any(ids))
            .filter(subscribed)
            .select((
                webhook_endpoints::id,
                generations::id,
                generations::status,
                at.into_sql::<diesel::sql_types::Timestamp>(),
                "pending".into_sql::<diesel::sql_types::Text>(),
                0.into_sql::<diesel::sql_types::Integer>(),
                at.into_sql::<diesel::sql_types::Timestamp>(),
            ));
        $run!(
            diesel::insert_into(webhook_deliveries::table)
                .values(due)
                .into_columns((
                    webhook_deliveries::endpoint_id,
                    webhook_deliveries::generation_id,
                    webhook_deliveries::event,
                    webhook_deliveries::occurred_at,
                    webhook_deliveries::state,
                    webhook_deliveries::attempts,
                    webhook_deliveries::next_attempt_at,
                )),
            execute,
            $conn
        )?;
    }};
}
pub(crate) use enqueue_events;
