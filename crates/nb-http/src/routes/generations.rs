//! `POST /v1/generate` (API key) and `GET /v1/usage` (access token).

use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::api_keys::KeyMode;
use nb_domain::encoding::decode_data_url_or_base64;
use nb_domain::generation::{
    GenerateError, Generation, GenerationRequest, ImageCount, InputImageLimits, InputImages,
    RawGenerationRequest, size_label,
};
use nb_domain::rate_limit::ThrottleError;
use nb_domain::usage::{UsageDimension, UsageQuery};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{ApiKeyCaller, SignedInUser};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{self, idempotent};
use crate::json::GenerationJsonWithImages;
use crate::quota_headers;
use crate::rate_limit::add_rate_limit_headers;
use crate::request_context::RequestStarted;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub(crate) struct GenerateRequest {
    prompt: Option<String>,
    /// `auto` or `WxH` (see the README); `1024x1024` when left out.
    size: Option<String>,
    style: Option<String>,
    model: Option<String>,
    /// Images to edit or combine, in order: base64 or `data:image/…;base64,…` URLs.
    images: Option<Vec<String>>,
    /// A mask for the first image (transparent where it may change), base64 or a data URL.
    mask: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct GenerateResponse {
    id: String,
    url: String,
    prompt: String,
    size: &'static str,
    style: &'static str,
    model: String,
    mime_type: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// Rate limited per key and per account; every answer after the key is known carries the
/// key's `x-ratelimit-*` headers.
#[utoipa::path(post, path = "/v1/generate", tag = "generation", security(("api_key" = [])),
    request_body = GenerateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters, scoped to the API key: a repeat of the same request gets the first answer again (`Idempotent-Replayed: true`) without a new image or a new count; see the README for what is kept")),
    responses(
        (status = 200, description = "The image's URL", body = GenerateResponse,
            headers(("x-ratelimit-limit" = u32), ("x-ratelimit-remaining" = u32), ("x-ratelimit-reset" = u64))),
        (status = 400, description = "A malformed `Idempotency-Key` (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still running (`idempotency_in_progress`); retry after `Retry-After`", body = ErrorBody),
        (status = 413, description = "Body too large, or an input image over its limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid field, the provider returned no image (`content_rejected`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 429, description = "Over a per-minute rate limit (`rate_limited`), or a day or month quota (`quota_exceeded`, `Retry-After` to its reset)", body = ErrorBody),
        (status = 502, description = "The provider or the storage failed", body = ErrorBody),
        (status = 503, description = "Not configured, provider busy or rate limited, or database unavailable", body = ErrorBody),
        (status = 504, description = "The provider did not answer in time", body = ErrorBody),
    ))]
pub(crate) async fn generate(
    request: HttpRequest,
    state: web::Data<AppState>,
    ApiKeyCaller(caller): ApiKeyCaller,
    body: Result<GenerationJsonWithImages<GenerateRequest>, actix_web::Error>,
) -> HttpResponse {
    let render = |error: ApiError| error.error_response();
    throttled(&state, caller, render, async {
        let GenerationJsonWithImages { body, fingerprint } = body.map_err(|error| {
            error.as_error::<ApiError>().map_or_else(
                || ApiError::internal(error.to_string()),
                ApiError::public_copy,
            )
        })?;
        let idempotency_key = idempotency::key_of(&request)?;
        let wanted = checked(body, &state)?;
        let work = run_generation(&request, &state, caller, wanted);
        idempotent(&state, &caller, idempotency_key, fingerprint, render, work).await
    })
    .await
}

/// Runs `work` when the caller is within its rate limits; either way the answer carries the
/// key's `x-ratelimit-*` headers, and errors are rendered by `render` (each API its own way).
pub(crate) async fn throttled(
    state: &AppState,
    caller: AuthenticatedApiKey,
    render: impl Fn(ApiError) -> HttpResponse,
    work: impl Future<Output = Result<HttpResponse, ApiError>>,
) -> HttpResponse {
    let standing = state.throttle.generation(&caller).await;
    let key_standing = match &standing {
        Ok(decision) | Err(ThrottleError::Limited { decision, .. }) => Some(*decision),
        Err(ThrottleError::Repository(_)) => None,
    };
    let mut response = match standing {
        Err(refused) => render(ApiError::from(refused)),
        Ok(_) => work.await.unwrap_or_else(render),
    };
    if let Some(decision) = key_standing {
        add_rate_limit_headers(response.headers_mut(), &decision);
    }
    response
}

/// Decodes images sent as base64 or data URLs, and checks them.
fn decoded_images(
    images: Option<Vec<String>>,
    mask: Option<String>,
    limits: InputImageLimits,
) -> Result<InputImages, ApiError> {
    let decode = |field: &'static str, text: &str| {
        decode_data_url_or_base64(text)
            .map(Bytes::from)
            .ok_or_else(|| {
                ApiError::invalid_field(field, format!("{field} must be base64 or a data: URL"))
            })
    };
    let images = images
        .unwrap_or_default()
        .iter()
        .map(|text| decode("images", text))
        .collect::<Result<Vec<_>, _>>()?;
    let mask = mask
        .as_deref()
        .map(|text| decode("mask", text))
        .transpose()?;
    Ok(InputImages::parse(images, mask, limits)?)
}

/// The request, checked: everything a client can get wrong is refused here, before any
/// work (and before an `Idempotency-Key` is claimed).
fn checked(body: GenerateRequest, state: &AppState) -> Result<GenerationRequest, ApiError> {
    let inputs = decoded_images(body.images, body.mask, state.input_images)?;
    let raw = RawGenerationRequest {
        prompt: body.prompt,
        size: body.size,
        style: body.style,
        model: body.model,
    };
    Ok(GenerationRequest::parse(
        raw,
        state.generations.models(),
        inputs,
    )?)
}

async fn run_generation(
    request: &HttpRequest,
    state: &AppState,
    caller: AuthenticatedApiKey,
    wanted: GenerationRequest,
) -> Result<HttpResponse, ApiError> {
    let batch = state
        .generations
        .generate_images(caller, &wanted, ImageCount::ONE)
        .await;
    let mut response = match record_outcomes(&wanted, batch.result) {
        Ok(mut generations) => match generations.pop() {
            Some(generation) => HttpResponse::Ok()
                .insert_header(server_timing(request, &generation))
                .json(GenerateResponse {
                    id: generation.id.to_string(),
                    url: generation.url,
                    prompt: generation.prompt.as_str().to_owned(),
                    size: size_label(generation.size),
                    style: generation.style.as_str(),
                    model: generation.model.as_str().to_owned(),
                    mime_type: generation.image.format().mime_type(),
                    created_at: generation.created_at,
                }),
            None => ApiError::internal("a generation succeeded without an image").error_response(),
        },
        Err(error) => error.error_response(),
    };
    quota_headers::insert(response.headers_mut(), batch.quota.as_ref());
    Ok(response)
}

/// Counts each image made (and a failure) in the metrics; the error as an `ApiError`.
pub(crate) fn record_outcomes(
    request: &GenerationRequest,
    result: Result<Vec<Generation>, GenerateError>,
) -> Result<Vec<Generation>, ApiError> {
    let model = request.model.as_str();
    match result {
        Ok(generations) => {
            for _ in &generations {
                crate::metrics::record_generation(model, "succeeded");
            }
            Ok(generations)
        }
        Err(error) => {
            let error = ApiError::from(error);
            crate::metrics::record_generation(model, error.code());
            Err(error)
        }
    }
}

/// `Server-Timing` of a generation (milliseconds; `total` from the request's arrival), and
/// the gateway overhead metric.
pub(crate) fn server_timing(
    request: &HttpRequest,
    generation: &Generation,
) -> (&'static str, String) {
    let started = request
        .extensions()
        .get::<RequestStarted>()
        .map(|started| started.0);
    let total = started.map_or(Duration::ZERO, |started| started.elapsed());
    let timings = generation.timings;
    crate::metrics::record_gateway_overhead(
        total.saturating_sub(timings.upstream),
        timings.database,
    );
    let milliseconds = |duration: Duration| duration.as_secs_f64() * 1e3;
    let value = format!(
        "upstream;dur={:.1}, storage;dur={:.1}, db;dur={:.1}, total;dur={:.1}",
        milliseconds(timings.upstream),
        milliseconds(timings.storage),
        milliseconds(timings.database),
        milliseconds(total),
    );
    ("server-timing", value)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageParams {
    /// UTC days to cover, ending `to` (default 30); ignored when `from` is given.
    #[param(value_type = u16, required = false, minimum = 1, maximum = 366)]
    days: Option<u16>,
    /// First UTC day, `YYYY-MM-DD` (included).
    #[param(value_type = String, format = Date, required = false)]
    from: Option<String>,
    /// Last UTC day, `YYYY-MM-DD` (included; default today).
    #[param(value_type = String, format = Date, required = false)]
    to: Option<String>,
    /// Comma-separated: `day`, `key`, `model`, `mode` (default `day,key`).
    #[param(value_type = String, required = false, example = "day,model")]
    group_by: Option<String>,
}

/// The count for one combination of the dimensions grouped by; the others are left out.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// `live` or `test`.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    /// Images made (successes; deleted ones still count).
    count: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UsageResponse {
    usage: Vec<UsageLine>,
    from: String,
    to: String,
    group_by: Vec<&'static str>,
}

fn iso_date(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

fn dimension_name(dimension: UsageDimension) -> &'static str {
    match dimension {
        UsageDimension::Day => "day",
        UsageDimension::Key => "key",
        UsageDimension::Model => "model",
        UsageDimension::Mode => "mode",
    }
}

/// Images made by the user's keys, per UTC day and key by default, over the last `days` days
/// or from `from` to `to` (at most 366 days), grouped by any of day, key, model and mode;
/// newest day first.
#[utoipa::path(get, path = "/v1/usage", tag = "generation", security(("access_token" = [])),
    params(UsageParams),
    responses(
        (status = 200, description = "Counts, newest day first", body = UsageResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 422, description = "`days`, `from`, `to` or `group_by` invalid", body = ErrorBody),
    ))]
pub(crate) async fn usage(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    params: web::Query<UsageParams>,
) -> Result<web::Json<UsageResponse>, ApiError> {
    let query = UsageQuery::parse(
        params.days,
        params.from.as_deref(),
        params.to.as_deref(),
        params.group_by.as_deref(),
        state.generations.now(),
    )
    .map_err(|error| ApiError::invalid_field(error.field(), error.to_string()))?;
    let rows = state.generations.usage(user.id, &query).await?;
    Ok(web::Json(UsageResponse {
        usage: rows
            .into_iter()
            .map(|row| UsageLine {
                day: row.day.map(iso_date),
                api_key_id: row.api_key_id.map(|id| id.0),
                model: row.model,
                mode: row.mode.map(KeyMode::as_str),
                count: row.count,
            })
            .collect(),
        from: iso_date(query.from),
        to: iso_date(query.to),
        group_by: query.group_by.iter().copied().map(dimension_name).collect(),
    }))
}
