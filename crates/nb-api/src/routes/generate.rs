//! `POST /v1/generate`: the native generation route (API key).

use std::fmt;

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::encoding::decode_data_url_or_base64;
use nb_domain::generation::{
    GenerateError, GenerationRequest, HistoryScope, ImageCount, InputImages, OutputEncoding,
    RawGenerationRequest, Standings,
};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::ApiKeyCaller;
use crate::extract::json::GenerationJsonWithImages;
use crate::generation_flow::dry_run;
use crate::generation_flow::idempotency::{self, idempotent};
use crate::generation_flow::outcome::{record_outcomes, server_timing};
use crate::generation_flow::prefer::{PREFERENCE_APPLIED, Preferences};
use crate::generation_flow::throttle::throttled;
use crate::headers::insert_standings;
use crate::routes::history::GenerationResponse;
use crate::state::AppState;
use crate::views::TokenUsageResponse;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateRequest {
    prompt: Option<String>,
    /// `auto` or any `WxH` (each side 64–8192), mapped to the model's nearest aspect ratio and
    /// the smallest resolution big enough (see docs/models.md); `1024x1024` when neither it
    /// nor `aspect_ratio`/`resolution` is sent. Not with `aspect_ratio` or `resolution`.
    size: Option<String>,
    /// One of the model's aspect ratios (`GET /v1/models`), e.g. `16:9`.
    aspect_ratio: Option<String>,
    /// One of the model's resolutions: `512`, `1K`, `2K`, `4K`; the model's first when left
    /// out.
    resolution: Option<String>,
    style: Option<String>,
    model: Option<String>,
    /// Images to edit or combine, in order: base64 or `data:image/…;base64,…` URLs.
    #[schema(value_type = Option<Vec<String>>)]
    images: Option<Vec<Base64Image>>,
    /// A mask for the first image (transparent where it may change), base64 or a data URL.
    #[schema(value_type = Option<String>)]
    mask: Option<Base64Image>,
    /// `png`, `jpeg` or `webp`: the image is converted when the model made another format.
    output_format: Option<String>,
    /// 0–100: the quality of a JPEG or WebP (100 when left out).
    output_compression: Option<i64>,
    /// Continues a conversation: the id (`gen_…`) of an earlier generation of the account,
    /// whose turns (prompts, images and the model's answers) are sent before this prompt.
    previous_generation_id: Option<String>,
    /// Enabled models tried next, in order, when `model` is overloaded (503), rate limited
    /// (429 after retries), failing (500), slow or gone — never after a content refusal or
    /// another 4xx. Replaces the catalog's `fallbacks` of the model; `[]`: none.
    fallback_models: Option<Vec<String>>,
}

/// An image sent as base64 or a data URL, decoded as the body is read: the text is borrowed
/// from the body (never copied), and only the image's bytes are kept.
struct Base64Image(Bytes);

impl<'de> Deserialize<'de> for Base64Image {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Decoding;

        impl Visitor<'_> for Decoding {
            type Value = Base64Image;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("base64 or a data: URL")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Base64Image, E> {
                decode_data_url_or_base64(text)
                    .map(|bytes| Base64Image(Bytes::from(bytes)))
                    .ok_or_else(|| E::custom("must be base64 or a data: URL"))
            }
        }

        deserializer.deserialize_str(Decoding)
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct GenerateResponse {
    id: String,
    url: String,
    prompt: String,
    /// What was asked as a size: `WxH`, or `auto`.
    size: String,
    /// The aspect ratio asked of the model; `null`: the model's choice.
    aspect_ratio: Option<String>,
    /// The resolution asked of the model.
    resolution: &'static str,
    /// The image's pixel size, read from its header.
    width: Option<u32>,
    height: Option<u32>,
    /// The tokens Google counted; `null` when it sent none.
    usage: Option<TokenUsageResponse>,
    /// What it cost, in dollars with 6 decimals (see docs/pricing.md); `"0.000000"` for a
    /// test key's.
    #[schema(example = "0.067200")]
    cost_usd: String,
    /// The generation this one continued, if any.
    previous_generation_id: Option<String>,
    style: &'static str,
    /// The model that made the image.
    model: String,
    /// The model asked for, when a fallback made the image (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_model: Option<String>,
    mime_type: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// What `POST /v1/generate` answers with 200 (for the document only): the image made, or with
/// `dry_run=true` what it would make and cost.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // Never built: it documents the two answers.
pub(crate) enum GenerateAnswer {
    Made(GenerateResponse),
    DryRun(dry_run::DryRunResponse),
}

/// Rate limited per key and per account; every answer after the key is known carries the
/// key's `x-ratelimit-*` headers.
#[utoipa::path(post, path = "/v1/generate", tag = "generation", security(("api_key" = [])),
    request_body = GenerateRequest,
    params(("Prefer" = Option<String>, Header, description = "`respond-async` (RFC 7240): answer 202 once the job is committed, after every check; `respond-async, wait=N` (N ≤ 60): wait up to N seconds for it to finish"),
        ("dry_run" = Option<bool>, Query, description = "`true`: check everything (fields, key, quotas, budgets) and answer 200 with `estimated_cost_usd`, `model`, `resolution`, `aspect_ratio` and `images`, without calling Google or reserving anything"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters, scoped to the API key: a repeat of the same request gets the first answer again (`Idempotent-Replayed: true`) without a new image or a new count; see the README for what is kept")),
    responses(
        (status = 200, description = "The image's URL; with `dry_run=true`, what it would make and cost", body = GenerateAnswer,
            headers(("x-ratelimit-limit" = u32), ("x-ratelimit-remaining" = u32), ("x-ratelimit-reset" = u64))),
        (status = 202, description = "With `Prefer: respond-async`: the job is queued; the generation (`status: queued`), `Location: /v1/generations/{id}`, `Preference-Applied: respond-async`. With `wait=N`, 200 with the finished generation when it ends within N seconds", body = GenerationResponse),
        (status = 400, description = "A malformed `Idempotency-Key` (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "`previous_generation_id` names no generation of the account (`generation_not_found`)", body = ErrorBody),
        (status = 410, description = "The model was retired (`model_retired`; the message names its replacement)", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still running (`idempotency_in_progress`); retry after `Retry-After`", body = ErrorBody),
        (status = 413, description = "Body too large, or an input image over its limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid field, the provider returned no image (`content_rejected`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 429, description = "Over a per-minute rate limit (`rate_limited`), or a day or month quota (`quota_exceeded`) or budget (`budget_exceeded`, `x-budget-*`), `Retry-After` to its reset", body = ErrorBody),
        (status = 502, description = "The provider or the storage failed", body = ErrorBody),
        (status = 503, description = "Not configured, provider busy or rate limited, database unavailable, or too many large bodies in flight (`server_busy`, before the body is read; `Retry-After`)", body = ErrorBody),
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
        // The reservation is held while the decoded images are.
        let GenerationJsonWithImages {
            body,
            fingerprint,
            reservation: _held_body,
        } = body.map_err(|error| {
            error.as_error::<ApiError>().map_or_else(
                || ApiError::internal(error.to_string()),
                ApiError::public_copy,
            )
        })?;
        let dry_run = dry_run::in_query(&request)?;
        let idempotency_key = idempotency::key_of(&request)?;
        let wanted = checked(body, &state)?;
        if dry_run {
            return dry_run::respond(&state, caller, &wanted, ImageCount::ONE).await;
        }
        let preferences = Preferences::of(&request);
        if preferences.respond_async {
            let work = submit_job(&state, caller, wanted, preferences);
            return idempotent(&state, &caller, idempotency_key, fingerprint, render, work).await;
        }
        let work = run_generation(&request, &state, caller, wanted);
        idempotent(&state, &caller, idempotency_key, fingerprint, render, work).await
    })
    .await
}

/// The request, checked: everything a client can get wrong is refused here, before any
/// work (and before an `Idempotency-Key` is claimed).
fn checked(body: GenerateRequest, state: &AppState) -> Result<GenerationRequest, ApiError> {
    let images = body.images.unwrap_or_default().into_iter();
    let inputs = InputImages::parse(
        images.map(|Base64Image(bytes)| bytes).collect(),
        body.mask.map(|Base64Image(bytes)| bytes),
        state.input_images,
    )?;
    let output = OutputEncoding::parse(body.output_format.as_deref(), body.output_compression)?;
    let raw = RawGenerationRequest {
        prompt: body.prompt,
        size: body.size,
        aspect_ratio: body.aspect_ratio,
        resolution: body.resolution,
        style: body.style,
        model: body.model,
        previous_generation_id: body.previous_generation_id,
    };
    let mut request = GenerationRequest::parse(
        raw,
        state.generations.models(),
        inputs,
        state.generations.now().date(),
    )?;
    if let Some(fallbacks) = &body.fallback_models {
        request = request.with_fallbacks(fallbacks, state.generations.models())?;
    }
    request.output = output;
    Ok(request)
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
                .insert_header((crate::headers::COST, generation.cost.to_string()))
                .json(GenerateResponse {
                    id: generation.id.to_string(),
                    url: generation.url,
                    prompt: generation.prompt.as_str().to_owned(),
                    size: generation.size,
                    aspect_ratio: generation.shape.aspect_ratio.map(|ratio| ratio.to_string()),
                    resolution: generation.shape.resolution.as_str(),
                    width: generation.dimensions.map(|(width, _)| width),
                    height: generation.dimensions.map(|(_, height)| height),
                    usage: generation.usage.map(TokenUsageResponse::from),
                    cost_usd: generation.cost.to_string(),
                    previous_generation_id: generation.previous.map(|id| id.to_string()),
                    style: generation.style.as_str(),
                    model: generation.model.as_str().to_owned(),
                    requested_model: generation
                        .requested_model
                        .as_ref()
                        .map(|model| model.as_str().to_owned()),
                    mime_type: generation.image.format().mime_type(),
                    created_at: generation.created_at,
                }),
            None => ApiError::internal("a generation succeeded without an image").error_response(),
        },
        Err(error) => error.error_response(),
    };
    insert_standings(response.headers_mut(), &batch.standings);
    Ok(response)
}

/// `Prefer: respond-async`: the job is committed (after every check a synchronous request
/// gets), then answered 202 with its generation (`queued`) and `Location`; with `wait=N`, the
/// finished generation (200) when it ends within N seconds.
async fn submit_job(
    state: &AppState,
    caller: AuthenticatedApiKey,
    wanted: GenerationRequest,
    preferences: Preferences,
) -> Result<HttpResponse, ApiError> {
    let submitted = match state.jobs.submit(caller, wanted).await {
        Ok(submitted) => submitted,
        Err(error) => {
            let standings = match &error {
                GenerateError::Quota(refusal) => Standings::of_refusal(refusal),
                _ => Standings::default(),
            };
            let mut response = ApiError::from(error).error_response();
            insert_standings(response.headers_mut(), &standings);
            return Ok(response);
        }
    };
    let id = submitted.generation.generation.id;
    let mut generation = submitted.generation;
    if !preferences.wait.is_zero() {
        let scope = HistoryScope {
            user_id: caller.user_id,
            key_id: Some(caller.key_id),
        };
        match state.jobs.wait(scope, id, preferences.wait).await {
            Ok(now) => generation = now,
            Err(error) => tracing::warn!(%error, "could not read a job while waiting for it"),
        }
    }
    let finished = generation.generation.status.is_finished();
    let mut response = if finished {
        HttpResponse::Ok()
    } else {
        HttpResponse::Accepted()
    }
    .insert_header((LOCATION, format!("/v1/generations/{id}")))
    .insert_header((PREFERENCE_APPLIED, "respond-async"))
    .json(GenerationResponse::from(generation));
    insert_standings(response.headers_mut(), &submitted.standings);
    Ok(response)
}
