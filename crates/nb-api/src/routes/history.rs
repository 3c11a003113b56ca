//! `/v1/generations`: the record of every generation, for an access token (the whole
//! account) or an API key (that key's own), and deletion of one.

use actix_web::{HttpResponse, web};
use nb_domain::api_keys::{ApiKeyId, KeyMode};
use nb_domain::generation::{
    GenerationId, GenerationStatus, GenerationView, HistoryFilter, HistoryScope,
};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::Caller;
use crate::extract::query::PageQuery;
use crate::state::AppState;
use crate::views::TokenUsageResponse;

/// A generation as its owner sees it.
#[derive(Serialize, ToSchema)]
pub(crate) struct GenerationResponse {
    /// `gen_<uuid>`.
    id: String,
    key_id: Uuid,
    /// `live` or `test`.
    mode: &'static str,
    prompt: String,
    /// What was asked as a size: `WxH`, or `auto`.
    size: String,
    /// The aspect ratio asked of the model; `null`: the model's choice (and on generations
    /// older than the model catalog).
    aspect_ratio: Option<String>,
    /// `512`, `1K`, `2K` or `4K`; `null` on generations older than the model catalog.
    resolution: Option<String>,
    /// The image's pixel size, read from its header.
    width: Option<u32>,
    height: Option<u32>,
    /// The tokens Google counted; `null` when it sent none.
    usage: Option<TokenUsageResponse>,
    /// What it cost, in dollars with 6 decimals: `"0.000000"` when it failed, for a test
    /// key's, and on generations older than prices.
    #[schema(example = "0.067200")]
    cost_usd: String,
    /// The generation this one continued, if any.
    previous_generation_id: Option<String>,
    style: String,
    model: String,
    /// `queued` → `running` → `succeeded` | `failed` | `canceled` (asynchronous jobs), or
    /// `succeeded` | `failed` at once; `deleted` once its owner deleted it.
    status: &'static str,
    /// Why it failed (`content_rejected`, `upstream_timeout`, …): the same as `error.code`.
    error_code: Option<String>,
    /// Why it failed, when it did: the code the synchronous route answers with and a message.
    error: Option<GenerationFailure>,
    /// Where the image can be fetched now (a fresh presigned URL on R2/S3 without a public
    /// URL); `null` once deleted, for failures, and with inline storage.
    url: Option<String>,
    mime_type: Option<String>,
    bytes: Option<u64>,
    latency_ms: u64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    deleted_at: Option<OffsetDateTime>,
}

/// Why a generation failed.
#[derive(Serialize, ToSchema)]
pub(crate) struct GenerationFailure {
    /// `content_rejected`, `upstream_timeout`, `queue_timeout`, …
    code: String,
    message: &'static str,
}

impl GenerationFailure {
    fn of(code: String) -> Self {
        let message = failure_message(&code);
        Self { code, message }
    }
}

/// What a stored failure code means, for a person reading it.
fn failure_message(code: &str) -> &'static str {
    match code {
        "content_rejected" => {
            "The image provider returned no image (its safety system refused the prompt or the images)."
        }
        "upstream_busy" => "Too many images were being generated on the server.",
        "upstream_rate_limited" => "The image provider's quota was exhausted.",
        "upstream_timeout" => "The image provider did not answer in time.",
        "upstream_failed" => "The image provider failed.",
        "upstream_auth_failed" => "The image provider rejected the server's credentials.",
        "model_unavailable" => "The model is no longer available.",
        "generation_not_configured" => "Image generation is not configured on the server.",
        "conversion_failed" => "The image could not be converted to the format asked for.",
        "storage_unavailable" => "The image store was unavailable.",
        "storage_full" => "The image store was full.",
        "storage_failed" => "The image store failed.",
        "database_unavailable" => "The database was unavailable.",
        "validation_failed" => {
            "The request could not be served as asked (see the model's options, or the conversation it continues)."
        }
        "generation_not_found" => "The generation it continues no longer exists.",
        "queue_timeout" => {
            "The job waited in the queue longer than the server allows (NB_JOB_TIMEOUT_SECONDS)."
        }
        "job_interrupted" => "The server running the job stopped during its last attempt.",
        _ => "The generation failed.",
    }
}

impl From<GenerationView> for GenerationResponse {
    fn from(view: GenerationView) -> Self {
        let generation = view.generation;
        Self {
            id: generation.id.to_string(),
            key_id: generation.key_id.0,
            mode: generation.mode.as_str(),
            prompt: generation.prompt,
            size: generation.size,
            aspect_ratio: generation.aspect_ratio,
            resolution: generation.resolution,
            width: generation.width,
            height: generation.height,
            usage: generation.usage.map(TokenUsageResponse::from),
            cost_usd: generation.cost.to_string(),
            previous_generation_id: generation.previous.map(|id| id.to_string()),
            style: generation.style,
            model: generation.model,
            status: generation.status.as_str(),
            error: generation.error_code.clone().map(GenerationFailure::of),
            error_code: generation.error_code,
            url: view.url,
            mime_type: generation.mime_type,
            bytes: generation.bytes,
            latency_ms: u64::try_from(generation.latency.as_millis()).unwrap_or(u64::MAX),
            created_at: generation.created_at,
            deleted_at: generation.deleted_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct GenerationListResponse {
    generations: Vec<GenerationResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// Only this key's (an API key always sees only its own).
    #[param(value_type = Uuid, required = false)]
    key_id: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `canceled` or `deleted`.
    #[param(value_type = String, required = false)]
    status: Option<String>,
    /// `live` or `test`.
    #[param(value_type = String, required = false)]
    mode: Option<String>,
    /// Created at or after: RFC 3339, or a UTC day `YYYY-MM-DD` (from its start).
    #[param(value_type = String, required = false)]
    from: Option<String>,
    /// Created before: RFC 3339, or a UTC day `YYYY-MM-DD` (that day included).
    #[param(value_type = String, required = false)]
    to: Option<String>,
}

/// An instant, or the start of a UTC day (the start of the next one when `day_end`).
fn instant(field: &str, raw: &str, day_end: bool) -> Result<OffsetDateTime, ApiError> {
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(at);
    }
    let day = Date::parse(
        raw,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| {
        ApiError::invalid_field(
            field,
            format!("{field} must be an RFC 3339 time or a day (YYYY-MM-DD)"),
        )
    })?;
    let day = if day_end {
        day.next_day().unwrap_or(day)
    } else {
        day
    };
    Ok(day.with_time(Time::MIDNIGHT).assume_utc())
}

impl HistoryParams {
    fn filter(&self) -> Result<HistoryFilter, ApiError> {
        let invalid = |field: &str, message: String| ApiError::invalid_field(field, message);
        Ok(HistoryFilter {
            key_id: self
                .key_id
                .as_deref()
                .map(|raw| {
                    Uuid::parse_str(raw)
                        .map(ApiKeyId)
                        .map_err(|_| invalid("key_id", "key_id must be a key's id".into()))
                })
                .transpose()?,
            status: self
                .status
                .as_deref()
                .map(|raw| {
                    GenerationStatus::parse(raw)
                        .map_err(|error| invalid("status", error.to_string()))
                })
                .transpose()?,
            mode: self
                .mode
                .as_deref()
                .map(|raw| KeyMode::parse(raw).map_err(|error| invalid("mode", error.to_string())))
                .transpose()?,
            from: self
                .from
                .as_deref()
                .map(|raw| instant("from", raw, false))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|raw| instant("to", raw, true))
                .transpose()?,
        })
    }
}

pub(crate) fn scope(caller: &Caller) -> HistoryScope {
    match caller {
        Caller::Account(user) => HistoryScope {
            user_id: user.id,
            key_id: None,
        },
        Caller::Key(key) => HistoryScope {
            user_id: key.user_id,
            key_id: Some(key.key_id),
        },
    }
}

/// A generation id from the path: a malformed one names no generation.
fn generation_id(raw: &str) -> Result<GenerationId, ApiError> {
    GenerationId::parse(raw)
        .map_err(|_| ApiError::not_found("generation_not_found", "No such generation."))
}

/// The caller's generations, newest first: with an access token all of the account's, with
/// an API key that key's. Pages stay put while new generations arrive.
#[utoipa::path(get, path = "/v1/generations", tag = "generation", operation_id = "list_generations",
    security(("access_token" = []), ("api_key" = [])),
    params(PageQuery, HistoryParams),
    responses(
        (status = 200, description = "One page of generations", body = GenerationListResponse),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 422, description = "An invalid filter, `limit` or `cursor`", body = ErrorBody),
        (status = 502, description = "A fresh URL could not be made (`storage_failed`)", body = ErrorBody),
    ))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageQuery>,
    params: web::Query<HistoryParams>,
) -> Result<web::Json<GenerationListResponse>, ApiError> {
    let filter = params.filter()?;
    let page = state
        .history
        .list(scope(&caller), filter, page.page()?)
        .await?;
    Ok(web::Json(GenerationListResponse {
        generations: page
            .items
            .into_iter()
            .map(GenerationResponse::from)
            .collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}

/// One generation of the caller's.
#[utoipa::path(get, path = "/v1/generations/{generation_id}", tag = "generation", operation_id = "get_generation",
    security(("access_token" = []), ("api_key" = [])),
    params(("generation_id" = String, Path, description = "`gen_<uuid>`")),
    responses(
        (status = 200, description = "The generation", body = GenerationResponse),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such generation of the caller's (`generation_not_found`)", body = ErrorBody),
        (status = 502, description = "A fresh URL could not be made (`storage_failed`)", body = ErrorBody),
    ))]
pub(crate) async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<GenerationResponse>, ApiError> {
    let view = state
        .history
        .get(scope(&caller), generation_id(&path)?)
        .await?;
    Ok(web::Json(view.into()))
}

/// Delete a generation's image (local disk or R2/S3) and mark it deleted: its URL answers
/// 404 from then on; the record and its usage stay. Repeatable.
#[utoipa::path(delete, path = "/v1/generations/{generation_id}", tag = "generation", operation_id = "delete_generation",
    security(("access_token" = []), ("api_key" = [])),
    params(("generation_id" = String, Path, description = "`gen_<uuid>`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such generation of the caller's (`generation_not_found`)", body = ErrorBody),
        (status = 409, description = "The generation is queued or running (`generation_not_finished`): cancel it first", body = ErrorBody),
        (status = 502, description = "The storage could not delete the image (`storage_failed`): nothing changed; retry", body = ErrorBody),
    ))]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .history
        .delete(scope(&caller), generation_id(&path)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Cancel a queued asynchronous generation: it will not run, and what it reserved against
/// the caller's quotas and budgets is given back.
#[utoipa::path(post, path = "/v1/generations/{generation_id}/cancel", tag = "generation", operation_id = "cancel_generation",
    security(("access_token" = []), ("api_key" = [])),
    params(("generation_id" = String, Path, description = "`gen_<uuid>`")),
    responses(
        (status = 200, description = "Canceled: the generation, `status: canceled`", body = GenerationResponse),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such generation of the caller's (`generation_not_found`)", body = ErrorBody),
        (status = 409, description = "It is running or has finished (`not_cancelable`)", body = ErrorBody),
    ))]
pub(crate) async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<GenerationResponse>, ApiError> {
    let view = state
        .jobs
        .cancel(scope(&caller), generation_id(&path)?)
        .await?;
    Ok(web::Json(view.into()))
}
