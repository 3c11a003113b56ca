//! `/v1/keys`: create, list and revoke the signed-in user's API keys.

use actix_web::{HttpResponse, web};
use nb_domain::api_keys::{ApiKeyId, ApiKeyName, ApiKeyRecord};
use nb_domain::pagination::PageRequest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::SignedInUser;
use crate::error::{ApiError, ErrorBody};
use crate::json::OptionalJson;
use crate::state::AppState;

#[derive(Deserialize, Default, ToSchema)]
pub(crate) struct CreateKeyRequest {
    #[serde(default)]
    name: Option<String>,
}

/// The only response that ever carries a full key.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKeyResponse {
    id: Uuid,
    key: String,
    name: Option<String>,
    prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KeyResponse {
    id: Uuid,
    name: Option<String>,
    prefix: String,
    is_active: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<ApiKeyRecord> for KeyResponse {
    fn from(record: ApiKeyRecord) -> Self {
        Self {
            id: record.id.0,
            name: record.name,
            prefix: record.prefix,
            is_active: record.is_active,
            last_used_at: record.last_used_at,
            created_at: record.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KeyListResponse {
    keys: Vec<KeyResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Items per page (default 20).
    #[param(value_type = u16, required = false, minimum = 1, maximum = 100)]
    limit: Option<u16>,
    /// `next_cursor` of the previous page.
    #[param(value_type = String, required = false)]
    cursor: Option<String>,
}

impl PageQuery {
    pub(crate) fn page(&self) -> Result<PageRequest, ApiError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
            .map_err(|error| ApiError::invalid_field(error.field(), error.to_string()))
    }
}

/// Create an API key. The full key is in this answer and nowhere else, ever.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", security(("access_token" = [])),
    request_body(content = Option<CreateKeyRequest>, description = "Optional: the body may be left out"),
    responses(
        (status = 201, description = "Created", body = CreatedKeyResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 409, description = "The account already has the most active keys allowed (`key_limit_reached`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    body: OptionalJson<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0.unwrap_or_default();
    let name = ApiKeyName::parse(request.name.as_deref())
        .map_err(|error| ApiError::invalid_field("name", error.to_string()))?;
    let created = state.api_keys.create(user.id, name).await?;
    Ok(HttpResponse::Created().json(CreatedKeyResponse {
        id: created.record.id.0,
        key: created.secret.expose_secret().to_owned(),
        name: created.record.name,
        prefix: created.record.prefix,
        created_at: created.record.created_at,
    }))
}

/// The caller's keys, newest first, revoked ones included; never the key itself. Paginated
/// with a cursor: pages do not shift when keys are created between two reads.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("access_token" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of keys", body = KeyListResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
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

/// Revoke one of the caller's keys (repeatable).
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", security(("access_token" = [])),
    params(("key_id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such key of this user", body = ErrorBody),
    ))]
pub(crate) async fn revoke(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    key_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // A malformed id names no key of this user: the same 404 as any other unknown id.
    let key_id = Uuid::parse_str(&key_id)
        .map_err(|_| ApiError::not_found("key_not_found", "No such API key."))?;
    state.api_keys.revoke(user.id, ApiKeyId(key_id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
