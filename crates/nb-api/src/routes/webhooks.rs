//! `/v1/webhooks`: the signed-in user's webhook endpoints, their secrets (shown once, at
//! creation and at each rotation) and their delivery attempts.

use actix_web::{HttpResponse, web};
use nb_domain::webhooks::{
    AttemptRecord, AttemptResult, Endpoint, EndpointChange, EndpointWithSecret, EventBodies,
    EventType, WebhookId,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::SignedInUser;
use crate::extract::json::{JsonBody, present};
use crate::extract::query::PageQuery;
use crate::routes::history::GenerationResponse;
use crate::state::AppState;
use crate::views::NO_STORE;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhookRequest {
    /// `https://…` (plain `http` only when the operator allows it); not a private,
    /// loopback, link-local or metadata address.
    url: String,
    /// Which events it receives: `generation.succeeded`, `generation.failed`,
    /// `generation.canceled` (default: all).
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// `PATCH`: a field left out keeps its value; `description: null` clears it.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateWebhookRequest {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
}

/// An endpoint (never its secret, but at creation and rotation).
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookResponse {
    /// `wh_<uuid>`.
    id: String,
    url: String,
    events: Vec<&'static str>,
    description: Option<String>,
    /// `active`, or `failing` once an event's last attempt failed (back to `active` at the
    /// next delivery).
    status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// After a rotation: until when the previous secret still signs beside the new one.
    #[serde(with = "time::serde::rfc3339::option")]
    previous_secret_expires_at: Option<OffsetDateTime>,
}

impl From<Endpoint> for WebhookResponse {
    fn from(endpoint: Endpoint) -> Self {
        Self {
            id: endpoint.id.to_string(),
            url: endpoint.url.as_str().to_owned(),
            events: endpoint.events.names(),
            description: endpoint.description,
            status: endpoint.status.as_str(),
            created_at: endpoint.created_at,
            previous_secret_expires_at: endpoint.previous_secret_expires_at,
        }
    }
}

/// An endpoint with its new secret, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookWithSecretResponse {
    /// `whsec_<base64>`: verify each delivery's `webhook-signature` with it (Standard
    /// Webhooks). Not shown again.
    secret: String,
    #[serde(flatten)]
    endpoint: WebhookResponse,
}

impl From<EndpointWithSecret> for WebhookWithSecretResponse {
    fn from(created: EndpointWithSecret) -> Self {
        Self {
            secret: created.secret.reveal(),
            endpoint: created.endpoint.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookListResponse {
    webhooks: Vec<WebhookResponse>,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryAttemptResponse {
    /// The event's `webhook-id` (the same on every attempt).
    webhook_id: String,
    /// `generation.succeeded`, `generation.failed` or `generation.canceled`.
    event: &'static str,
    generation_id: String,
    /// 1 for the first attempt.
    attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    attempted_at: OffsetDateTime,
    /// The receiver's status, when it answered.
    status_code: Option<u16>,
    /// Why it failed when it did not answer 2xx: `timeout`, `connection_failed`,
    /// `blocked_address`, `dns_failed`, `redirect`, …
    error: Option<String>,
    delivered: bool,
    duration_ms: u64,
}

impl From<AttemptRecord> for DeliveryAttemptResponse {
    fn from(attempt: AttemptRecord) -> Self {
        let delivered = attempt.error.is_none()
            && attempt
                .status_code
                .is_some_and(|code| (200..300).contains(&code));
        Self {
            webhook_id: format!("msg_{}", attempt.generation_id.0.simple()),
            event: attempt.event.as_str(),
            generation_id: attempt.generation_id.to_string(),
            attempt: attempt.attempt,
            attempted_at: attempt.attempted_at,
            status_code: attempt.status_code,
            error: attempt.error,
            delivered,
            duration_ms: u64::try_from(attempt.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryListResponse {
    deliveries: Vec<DeliveryAttemptResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

fn webhook_id(raw: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(raw)
        .ok_or_else(|| ApiError::not_found("webhook_not_found", "No such webhook endpoint."))
}

#[utoipa::path(post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "webhooks", security(("access_token" = [])),
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Created: the secret is shown this once", body = WebhookWithSecretResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 422, description = "Invalid `url` (not https, a private address), `events` or `description`", body = ErrorBody),
        (status = 503, description = "Webhooks are not configured on this server (`webhooks_not_configured`: no NB_ENCRYPTION_KEY)", body = ErrorBody),
    ))]
pub(crate) async fn create(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    body: JsonBody<CreateWebhookRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    let created = state
        .webhooks
        .create(user.id, request.url, request.events, request.description)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(NO_STORE)
        .json(WebhookWithSecretResponse::from(created)))
}

#[utoipa::path(get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks", security(("access_token" = [])),
    responses(
        (status = 200, description = "The user's endpoints, oldest first", body = WebhookListResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
    ))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
) -> Result<web::Json<WebhookListResponse>, ApiError> {
    let endpoints = state.webhooks.list(user.id).await?;
    Ok(web::Json(WebhookListResponse {
        webhooks: endpoints.into_iter().map(WebhookResponse::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/{webhook_id}", operation_id = "get_webhook", tag = "webhooks", security(("access_token" = [])),
    params(("webhook_id" = String, Path, description = "`wh_<uuid>`")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such endpoint of the user's (`webhook_not_found`)", body = ErrorBody),
    ))]
pub(crate) async fn get(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
) -> Result<web::Json<WebhookResponse>, ApiError> {
    let endpoint = state.webhooks.get(user.id, webhook_id(&path)?).await?;
    Ok(web::Json(endpoint.into()))
}

#[utoipa::path(patch, path = "/v1/webhooks/{webhook_id}", operation_id = "update_webhook", tag = "webhooks", security(("access_token" = [])),
    params(("webhook_id" = String, Path, description = "`wh_<uuid>`")),
    request_body = UpdateWebhookRequest,
    responses(
        (status = 200, description = "The endpoint as it now is", body = WebhookResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such endpoint of the user's (`webhook_not_found`)", body = ErrorBody),
        (status = 422, description = "Invalid `url`, `events` or `description`", body = ErrorBody),
    ))]
pub(crate) async fn update(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
    body: JsonBody<UpdateWebhookRequest>,
) -> Result<web::Json<WebhookResponse>, ApiError> {
    let request = body.0;
    let change = EndpointChange {
        url: request.url,
        events: request.events,
        description: request.description,
    };
    let endpoint = state
        .webhooks
        .update(user.id, webhook_id(&path)?, change)
        .await?;
    Ok(web::Json(endpoint.into()))
}

#[utoipa::path(delete, path = "/v1/webhooks/{webhook_id}", operation_id = "delete_webhook", tag = "webhooks", security(("access_token" = [])),
    params(("webhook_id" = String, Path, description = "`wh_<uuid>`")),
    responses(
        (status = 204, description = "Deleted, with its pending deliveries"),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such endpoint of the user's (`webhook_not_found`)", body = ErrorBody),
    ))]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.webhooks.delete(user.id, webhook_id(&path)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/rotate", operation_id = "rotate_webhook_secret", tag = "webhooks", security(("access_token" = [])),
    params(("webhook_id" = String, Path, description = "`wh_<uuid>`")),
    responses(
        (status = 200, description = "A new secret, shown this once; the old one keeps signing beside it for 24 hours", body = WebhookWithSecretResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such endpoint of the user's (`webhook_not_found`)", body = ErrorBody),
        (status = 503, description = "Webhooks are not configured on this server (`webhooks_not_configured`)", body = ErrorBody),
    ))]
pub(crate) async fn rotate(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rotated = state.webhooks.rotate(user.id, webhook_id(&path)?).await?;
    Ok(HttpResponse::Ok()
        .insert_header(NO_STORE)
        .json(WebhookWithSecretResponse::from(rotated)))
}

/// How a test event went.
#[derive(Serialize, ToSchema)]
pub(crate) struct TestEventResponse {
    /// The endpoint answered 2xx in time.
    delivered: bool,
    /// Its HTTP status, when it answered.
    status_code: Option<u16>,
    /// Why it could not be delivered when the endpoint did not answer (or answered with a
    /// redirect): `timeout`, `connection_failed`, `blocked_address`, `redirect`,
    /// `dns_failed`, `invalid_url`; `null` when it answered (see `status_code`).
    error: Option<&'static str>,
    duration_ms: u64,
}

impl From<AttemptResult> for TestEventResponse {
    fn from(result: AttemptResult) -> Self {
        Self {
            delivered: result.delivered(),
            status_code: result.status_code,
            error: result.error,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Sends a signed `webhook.test` event (`{"type": "webhook.test", "timestamp", "data":
/// {"webhook_id"}}`) to the endpoint now, whatever events it takes, and answers how it went.
/// It is not retried and not listed among the deliveries.
#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/test", operation_id = "send_webhook_test_event", tag = "webhooks", security(("access_token" = [])),
    params(("webhook_id" = String, Path, description = "`wh_<uuid>`")),
    responses(
        (status = 200, description = "Sent (or tried): whether the endpoint took it", body = TestEventResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such endpoint of the user's (`webhook_not_found`)", body = ErrorBody),
        (status = 503, description = "Webhooks are not configured on this server (`webhooks_not_configured`)", body = ErrorBody),
    ))]
pub(crate) async fn send_test(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
) -> Result<web::Json<TestEventResponse>, ApiError> {
    let result = state
        .webhooks
        .send_test(user.id, webhook_id(&path)?)
        .await?;
    Ok(web::Json(result.into()))
}

#[utoipa::path(get, path = "/v1/webhooks/{webhook_id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks", security(("access_token" = [])),
    params(("webhook_id" = String, Path, description = "`wh_<uuid>`"), PageQuery),
    responses(
        (status = 200, description = "Its delivery attempts, newest first", body = DeliveryListResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such endpoint of the user's (`webhook_not_found`)", body = ErrorBody),
        (status = 422, description = "Invalid `limit` or `cursor`", body = ErrorBody),
    ))]
pub(crate) async fn deliveries(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<DeliveryListResponse>, ApiError> {
    let page = state
        .webhooks
        .attempts(user.id, webhook_id(&path)?, query.page()?)
        .await?;
    Ok(web::Json(DeliveryListResponse {
        deliveries: page
            .items
            .into_iter()
            .map(DeliveryAttemptResponse::from)
            .collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}

/// Event bodies as JSON: `{"type", "timestamp", "data": <the generation object>}`, the
/// generation as `GET /v1/generations/{id}` shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonEventBodies;

#[derive(Serialize)]
struct EventBody<Data> {
    #[serde(rename = "type")]
    event: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    data: Data,
}

/// A test event's `data`.
#[derive(Serialize)]
struct TestEventData {
    webhook_id: String,
}

impl EventBodies for JsonEventBodies {
    fn body(
        &self,
        event: EventType,
        occurred_at: OffsetDateTime,
        generation: &nb_domain::generation::GenerationView,
    ) -> Vec<u8> {
        let body = EventBody {
            event: event.as_str(),
            timestamp: occurred_at,
            data: GenerationResponse::from(generation.clone()),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    fn test_body(&self, endpoint: &Endpoint, occurred_at: OffsetDateTime) -> Vec<u8> {
        let body = EventBody {
            event: "webhook.test",
            timestamp: occurred_at,
            data: TestEventData {
                webhook_id: endpoint.id.to_string(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}
