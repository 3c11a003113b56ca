//! `HistoryRepository` on both backends: the generations table read back, page by page, and
//! marked deleted.

use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::accounts::UserId;
use nb_domain::api_keys::{ApiKeyId, KeyMode};
use nb_domain::generation::{
    GenerationId, GenerationStatus, HistoryFilter, ObjectKey, StoredGeneration, StoredTurn,
    TokenUsage,
};
use nb_domain::pagination::{Cursor, Page, PageRequest};
use nb_domain::ports::HistoryRepository;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::GenerationStore;
use super::rows::TurnJson;
use crate::convert::{from_stored_time, parse_stored_id, query_error, to_stored_time};
use crate::pool::with_connection;
use crate::schema::generations;

/// The largest batch of object keys asked about in one query (well under both backends'
/// limits on bound parameters).
const KEYS_PER_QUERY: usize = 500;

#[derive(Queryable, Selectable)]
#[diesel(table_name = generations)]
struct StoredRow {
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
    deleted_at: Option<PrimitiveDateTime>,
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

impl StoredRow {
    fn into_generation(self) -> Result<StoredGeneration, RepositoryError> {
        let id = GenerationId::parse(&self.id).map_err(RepositoryError::unexpected)?;
        let status = match (self.deleted_at, self.status.as_str()) {
            (Some(_), _) => GenerationStatus::Deleted,
            (None, status) => {
                GenerationStatus::parse(status).map_err(RepositoryError::unexpected)?
            }
        };
        let usage = stored_usage(&self);
        let previous = self
            .previous_generation_id
            .as_deref()
            .map(GenerationId::parse)
            .transpose()
            .map_err(RepositoryError::unexpected)?;
        let turn = self
            .turn
            .as_deref()
            .map(serde_json::from_str::<TurnJson>)
            .transpose()
            .map_err(RepositoryError::unexpected)?
            .map(StoredTurn::from);
        Ok(StoredGeneration {
            id,
            user_id: UserId(parse_stored_id(&self.user_id)?),
            key_id: ApiKeyId(parse_stored_id(&self.api_key_id)?),
            mode: KeyMode::parse(&self.mode).map_err(RepositoryError::unexpected)?,
            prompt: self.prompt,
            size: self.size,
            style: self.style,
            model: self.model,
            status,
            error_code: self.error_code,
            object_key: self
                .object_key
                .filter(|_| self.deleted_at.is_none())
                .map(ObjectKey::from_stored),
            url: self.url.filter(|_| self.deleted_at.is_none()),
            mime_type: self.mime_type,
            bytes: self.byte_size.and_then(|n| u64::try_from(n).ok()),
            latency: Duration::from_millis(u64::try_from(self.latency_ms).unwrap_or(0)),
            created_at: from_stored_time(self.created_at),
            deleted_at: self.deleted_at.map(from_stored_time),
            aspect_ratio: self.aspect_ratio,
            resolution: self.resolution,
            width: self.width.and_then(|n| u32::try_from(n).ok()),
            height: self.height.and_then(|n| u32::try_from(n).ok()),
            usage,
            cost: nb_domain::money::Usd::from_nanos(self.cost_nano_usd),
            previous,
            turn,
        })
    }
}

/// The token counts of a row: present when Google reported them (`input_tokens` is set).
fn stored_usage(row: &StoredRow) -> Option<TokenUsage> {
    let count = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
    Some(TokenUsage {
        input_tokens: count(row.input_tokens)?,
        input_text_tokens: count(row.input_text_tokens),
        input_image_tokens: count(row.input_image_tokens),
        output_tokens: count(row.output_tokens).unwrap_or(0),
        output_image_tokens: count(row.output_image_tokens),
        output_text_tokens: count(row.output_text_tokens),
        thinking_tokens: count(row.thinking_tokens).unwrap_or(0),
        total_tokens: count(row.total_tokens).unwrap_or(0),
    })
}

#[async_trait]
impl HistoryRepository for GenerationStore {
    #[tracing::instrument(skip(self, filter))]
    async fn list_generations(
        &self,
        user_id: UserId,
        filter: &HistoryFilter,
        page: PageRequest,
    ) -> Result<Page<StoredGeneration>, RepositoryError> {
        let user_id = user_id.to_string();
        let key_id = filter.key_id.map(|id| id.to_string());
        let mode = filter.mode.map(KeyMode::as_str);
        let status = filter.status;
        let from = filter.from.map(to_stored_time);
        let to = filter.to.map(to_stored_time);
        let after = page.after.map(|cursor| {
            (
                to_stored_time(cursor.created_at),
                GenerationId(cursor.id).to_string(),
            )
        });
        let rows = with_connection!(&self.database, |conn| {
            let mut query = generations::table
                .filter(generations::user_id.eq(&user_id))
                .order((generations::created_at.desc(), generations::id.desc()))
                .select(StoredRow::as_select())
                .limit(i64::from(page.limit) + 1)
                .into_boxed();
            if let Some(key_id) = &key_id {
                query = query.filter(generations::api_key_id.eq(key_id));
            }
            if let Some(mode) = mode {
                query = query.filter(generations::mode.eq(mode));
            }
            query = match status {
                None => query,
                Some(GenerationStatus::Deleted) => {
                    query.filter(generations::deleted_at.is_not_null())
                }
                Some(status) => query
                    .filter(generations::deleted_at.is_null())
                    .filter(generations::status.eq(status.as_str())),
            };
            if let Some(from) = from {
                query = query.filter(generations::created_at.ge(from));
            }
            if let Some(to) = to {
                query = query.filter(generations::created_at.lt(to));
            }
            if let Some((created_at, id)) = &after {
                query = query.filter(
                    generations::created_at
                        .lt(*created_at)
                        .or(generations::created_at
                            .eq(*created_at)
                            .and(generations::id.lt(id))),
                );
            }
            query.load::<StoredRow>(conn).await
        })?;
        let generations = rows
            .map_err(query_error)?
            .into_iter()
            .map(StoredRow::into_generation)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(
            generations,
            page.limit,
            |generation| Cursor {
                created_at: generation.created_at,
                id: generation.id.0,
            },
        ))
    }

    #[tracing::instrument(skip(self))]
    async fn find_generation(
        &self,
        user_id: UserId,
        id: GenerationId,
    ) -> Result<Option<StoredGeneration>, RepositoryError> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        let row = with_connection!(&self.database, |conn| {
            generations::table
                .filter(generations::id.eq(&id))
                .filter(generations::user_id.eq(&user_id))
                .select(StoredRow::as_select())
                .first::<StoredRow>(conn)
                .await
                .optional()
        })?;
        row.map_err(query_error)?
            .map(StoredRow::into_generation)
            .transpose()
    }

    #[tracing::instrument(skip(self))]
    async fn mark_generation_deleted(
        &self,
        user_id: UserId,
        id: GenerationId,
        at: OffsetDateTime,
    ) -> Result<bool, RepositoryError> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        let at = to_stored_time(at);
        let updated = with_connection!(&self.database, |conn| {
            diesel::update(
                generations::table
                    .filter(generations::id.eq(&id))
                    .filter(generations::user_id.eq(&user_id)),
            )
            .set((
                generations::deleted_at.eq(diesel::dsl::case_when(
                    generations::deleted_at.is_null(),
                    Some(at),
                )
                .otherwise(generations::deleted_at)),
                generations::url.eq(None::<String>),
            ))
            .execute(conn)
            .await
        })?;
        Ok(updated.map_err(query_error)? > 0)
    }

    #[tracing::instrument(skip_all, fields(keys = keys.len()))]
    async fn named_object_keys(
        &self,
        keys: &[ObjectKey],
    ) -> Result<Vec<ObjectKey>, RepositoryError> {
        let mut named = Vec::new();
        for batch in keys.chunks(KEYS_PER_QUERY) {
            let batch: Vec<String> = batch.iter().map(|key| key.as_str().to_owned()).collect();
            let rows = with_connection!(&self.database, |conn| {
                generations::table
                    .filter(generations::object_key.eq_any(&batch))
                    .select(generations::object_key)
                    .load::<Option<String>>(conn)
                    .await
            })?;
            named.extend(
                rows.map_err(query_error)?
                    .into_iter()
                    .flatten()
                    .map(ObjectKey::from_stored),
            );
        }
        Ok(named)
    }

    async fn live_generation_ids(
        &self,
        ids: &[GenerationId],
    ) -> Result<Vec<GenerationId>, RepositoryError> {
        let mut live = Vec::new();
        for batch in ids.chunks(KEYS_PER_QUERY) {
            let batch: Vec<String> = batch.iter().map(ToString::to_string).collect();
            let rows = with_connection!(&self.database, |conn| {
                generations::table
                    .filter(generations::id.eq_any(&batch))
                    .filter(generations::deleted_at.is_null())
                    .select(generations::id)
                    .load::<String>(conn)
                    .await
            })?;
            for id in rows.map_err(query_error)? {
                live.push(GenerationId::parse(&id).map_err(RepositoryError::unexpected)?);
            }
        }
        Ok(live)
    }
}
