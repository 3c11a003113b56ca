//! `/v1/keys`: create, list, read, change, roll and revoke the signed-in user's API keys.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use nb_domain::api_keys::{
    ApiKeyId, ApiKeyName, CreatedApiKey, DEFAULT_ROLL_GRACE, KeyChanges, KeyLimits, KeyMode,
    KeySettings, LimitChanges,
};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::SignedInUser;
use crate::extract::json::{JsonBody, OptionalJson, present};
use crate::extract::query::PageQuery;
use crate::money::{DollarsIn, budget_change};
use crate::state::AppState;
use crate::views::{KeyResponse, NO_STORE};

/// A key's limits as sent: each a positive number, or left out.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsRequest {
    /// Generation requests a minute (on top of the server's per-key limit: the lower wins).
    per_minute: Option<i64>,
    /// Images a UTC day.
    per_day: Option<i64>,
    /// Images a calendar month (UTC).
    per_month: Option<i64>,
    /// Dollars a UTC day: a number or a decimal string (`"5.00"`).
    #[schema(value_type = Option<String>)]
    budget_usd_per_day: Option<DollarsIn>,
    /// Dollars a calendar month (UTC).
    #[schema(value_type = Option<String>)]
    budget_usd_per_month: Option<DollarsIn>,
}

impl LimitsRequest {
    fn parse(self) -> Result<KeyLimits, ApiError> {
        let mut limits = KeyLimits::parse(self.per_minute, self.per_day, self.per_month)
            .map_err(|error| ApiError::invalid_field(&error.field(), error.to_string()))?;
        let budget = |field: &str, sent: Option<DollarsIn>| {
            sent.map(|amount| amount.parse(field)).transpose()
        };
        limits.quotas.budget_per_day =
            budget("limits.budget_usd_per_day", self.budget_usd_per_day)?;
        limits.quotas.budget_per_month =
            budget("limits.budget_usd_per_month", self.budget_usd_per_month)?;
        Ok(limits)
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyRequest {
    #[serde(default)]
    name: Option<String>,
    /// `live` (default: `nb_live_…`, calls the model) or `test` (`nb_test_…`: deterministic
    /// local images, free).
    #[serde(default)]
    mode: Option<String>,
    /// RFC 3339, in the future.
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    limits: Option<LimitsRequest>,
}

/// `PATCH`: a field left out keeps its value; `expires_at: null` removes the expiry.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateKeyRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Option<OffsetDateTime>>,
    /// Each limit sent is set (`null` removes it); those left out keep their value.
    #[serde(default)]
    limits: Option<LimitsPatch>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    per_minute: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    per_day: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    per_month: Option<Option<i64>>,
    /// Dollars a UTC day (number or decimal string); `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    budget_usd_per_day: Option<Option<DollarsIn>>,
    /// Dollars a calendar month (UTC); `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    budget_usd_per_month: Option<Option<DollarsIn>>,
}

/// A field that is present, as `null` or as an RFC 3339 time.
fn present_rfc3339<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(deserializer).map(Some)
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollKeyRequest {
    /// How long the old key keeps working (default 86,400; 0: it stops at once).
    #[serde(default)]
    grace_seconds: Option<u64>,
}

/// The only answer that ever carries a full key: the key object and `key`.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKeyResponse {
    key: String,
    #[serde(flatten)]
    details: KeyResponse,
}

impl From<CreatedApiKey> for CreatedKeyResponse {
    fn from(created: CreatedApiKey) -> Self {
        Self {
            key: created.secret.expose_secret().to_owned(),
            details: created.record.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KeyListResponse {
    keys: Vec<KeyResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// A key id from the path: a malformed one names no key, the same 404 as any other.
fn key_id(raw: &str) -> Result<ApiKeyId, ApiError> {
    Uuid::parse_str(raw)
        .map(ApiKeyId)
        .map_err(|_| ApiError::not_found("key_not_found", "No such API key."))
}

fn name(raw: Option<&str>) -> Result<ApiKeyName, ApiError> {
    ApiKeyName::parse(raw).map_err(|error| ApiError::invalid_field("name", error.to_string()))
}

/// Create an API key. The full key is in this answer and nowhere else, ever.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", security(("access_token" = [])),
    request_body(content = Option<CreateKeyRequest>, description = "Optional: the body may be left out"),
    responses(
        (status = 201, description = "Created", body = CreatedKeyResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 409, description = "The account already has the most active keys allowed (`key_limit_reached`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid name, expiry or limits", body = ErrorBody),
    ))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    body: OptionalJson<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0.unwrap_or_default();
    let mode = match request.mode.as_deref() {
        None => KeyMode::Live,
        Some(raw) => KeyMode::parse(raw)
            .map_err(|error| ApiError::invalid_field("mode", error.to_string()))?,
    };
    let settings = KeySettings {
        name: name(request.name.as_deref())?,
        mode,
        expires_at: request.expires_at,
        limits: request
            .limits
            .map(LimitsRequest::parse)
            .transpose()?
            .unwrap_or_default(),
    };
    let created = state.api_keys.create(user.id, settings).await?;
    Ok(HttpResponse::Created()
        .insert_header(NO_STORE)
        .json(CreatedKeyResponse::from(created)))
}

/// The caller's keys, newest first, revoked ones included; never the key itself. Paginated
/// with a cursor: pages do not shift when keys are created between two reads.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("access_token" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of keys", body = KeyListResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 422, description = "Invalid `limit` or `cursor`", body = ErrorBody),
    ))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    query: web::Query<PageQuery>,
) -> Result<web::Json<KeyListResponse>, ApiError> {
    let page = state.api_keys.list(user.id, query.page()?).await?;
    Ok(web::Json(KeyListResponse {
        keys: page.items.into_iter().map(KeyResponse::from).collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}

/// One of the caller's keys.
#[utoipa::path(get, path = "/v1/keys/{key_id}", tag = "keys", security(("access_token" = [])),
    params(("key_id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = KeyResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such key of this user", body = ErrorBody),
    ))]
pub(crate) async fn get(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
) -> Result<web::Json<KeyResponse>, ApiError> {
    let view = state.api_keys.get(user.id, key_id(&path)?).await?;
    Ok(web::Json(view.into()))
}

/// Rename a key, change or remove its expiry, or replace its limits. Takes effect at once on
/// this instance and within `NB_KEY_CACHE_TTL_SECONDS` on the others (quotas at once
/// everywhere).
#[utoipa::path(patch, path = "/v1/keys/{key_id}", tag = "keys", security(("access_token" = [])),
    params(("key_id" = Uuid, Path, description = "The key's id")),
    request_body = UpdateKeyRequest,
    responses(
        (status = 200, description = "The key as it now is", body = KeyResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such key of this user", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid name, expiry or limits", body = ErrorBody),
    ))]
pub(crate) async fn update(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
    body: JsonBody<UpdateKeyRequest>,
) -> Result<web::Json<KeyResponse>, ApiError> {
    let key = key_id(&path)?;
    let request = body.0;
    let limits = request.limits.unwrap_or_default();
    let changes = KeyChanges {
        name: request
            .name
            .as_deref()
            .map(|raw| name(Some(raw)))
            .transpose()?,
        expires_at: request.expires_at,
        limits: LimitChanges {
            budget_per_day: budget_change("limits.budget_usd_per_day", limits.budget_usd_per_day)?,
            budget_per_month: budget_change(
                "limits.budget_usd_per_month",
                limits.budget_usd_per_month,
            )?,
            ..LimitChanges::parse(limits.per_minute, limits.per_day, limits.per_month)
                .map_err(|error| ApiError::invalid_field(&error.field(), error.to_string()))?
        },
    };
    let view = state.api_keys.update(user.id, key, changes).await?;
    Ok(web::Json(view.into()))
}

/// Roll a key: a new key with the same name and limits (shown in full, once) replaces it;
/// the old key keeps working for `grace_seconds`, then expires (401 `key_expired`).
#[utoipa::path(post, path = "/v1/keys/{key_id}/roll", tag = "keys", security(("access_token" = [])),
    params(("key_id" = Uuid, Path, description = "The key to replace")),
    request_body(content = Option<RollKeyRequest>, description = "Optional: the body may be left out"),
    responses(
        (status = 201, description = "The new key", body = CreatedKeyResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such unrevoked key of this user", body = ErrorBody),
        (status = 409, description = "Rolled before (`key_already_rolled`), expired (`key_expired`), or one active key too many: a key in its grace is active (`key_limit_reached`)", body = ErrorBody),
        (status = 422, description = "Invalid grace", body = ErrorBody),
    ))]
pub(crate) async fn roll(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
    body: OptionalJson<RollKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = key_id(&path)?;
    let grace = body
        .0
        .and_then(|request| request.grace_seconds)
        .map_or(DEFAULT_ROLL_GRACE, Duration::from_secs);
    if grace > Duration::from_secs(365 * 24 * 60 * 60) {
        return Err(ApiError::invalid_field(
            "grace_seconds",
            "grace_seconds must be at most a year",
        ));
    }
    let created = state.api_keys.roll(user.id, key, grace).await?;
    Ok(HttpResponse::Created()
        .insert_header(NO_STORE)
        .json(CreatedKeyResponse::from(created)))
}

/// Revoke one of the caller's keys (repeatable).
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", security(("access_token" = [])),
    params(("key_id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such key of this user", body = ErrorBody),
    ))]
pub(crate) async fn revoke(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.api_keys.revoke(user.id, key_id(&path)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
