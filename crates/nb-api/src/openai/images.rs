//! `POST /v1/images/generations` and `POST /v1/images/edits`, as the SDKs send them.

use actix_web::{HttpRequest, HttpResponse, web};
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::generation::{
    Generation, GenerationRequest, ImageCount, ImageShape, ImageStyle, InputImages,
    InvalidGenerationRequest, OutputEncoding, PixelSize, Prompt, Quality,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body_budget::{BodyReservation, largest_form_body};
use crate::error::ApiError;
use crate::extract::credentials::ApiKeyCaller;
use crate::extract::json::GenerationJson;
use crate::generation_flow::dry_run;
use crate::generation_flow::idempotency::{self, idempotent};
use crate::generation_flow::outcome::{record_outcomes, server_timing};
use crate::generation_flow::throttle::throttled;
use crate::headers::{insert_cost, insert_standings};
use crate::openai::answer::{OpenAiUsage, image_bytes, output_format};
use crate::openai::error::{OpenAiError, OpenAiErrorBody, render};
use crate::openai::multipart::{EditForm, read_edit_form};
use crate::openai::stream::{StreamKind, respond_streaming};
use crate::state::AppState;

/// The sizes OpenAI's SDKs offer; each becomes the nearest aspect ratio.
pub const OPENAI_SIZES: [&str; 7] = [
    "256x256",
    "512x512",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "1792x1024",
    "1024x1792",
];

/// `POST /v1/images/generations`, as the SDKs send it. Every field the current SDKs send is
/// accepted; those this server does not use are ignored (see the README).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[allow(dead_code)] // Fields marked "Ignored" are accepted and read by nothing.
#[serde(deny_unknown_fields)]
pub(crate) struct ImageGenerationRequest {
    /// Required.
    prompt: Option<String>,
    /// Any of `NB_IMAGE_MODELS`, or an OpenAI name (`gpt-image-1`, `dall-e-3`: the default
    /// model unless `NB_OPENAI_MODEL_MAP` says otherwise).
    model: Option<String>,
    /// 1 to 4 images, each its own generation.
    n: Option<i64>,
    /// `auto` (default) or one of OpenAI's sizes: the nearest aspect ratio.
    size: Option<String>,
    /// `url` (default) or `b64_json`.
    response_format: Option<String>,
    /// `vivid` (an artistic illustration) or `natural` (photorealistic, the default).
    style: Option<String>,
    /// `false` or left out: streaming is not offered.
    stream: Option<bool>,
    /// `png`, `jpeg` or `webp`: the image is converted when the model made another format;
    /// `gif` and `svg` cannot be made.
    output_format: Option<String>,
    /// Ignored.
    quality: Option<String>,
    /// 0–100: the quality of a JPEG or WebP (100 when left out).
    output_compression: Option<i64>,
    /// Ignored (the models draw opaque images).
    background: Option<String>,
    /// Ignored.
    moderation: Option<String>,
    /// Ignored (never sent to Google).
    user: Option<String>,
    /// Ignored (never sent to Google).
    safety_identifier: Option<String>,
    /// Ignored (only meaningful with streaming).
    partial_images: Option<i64>,
    /// Ignored.
    complexity: Option<String>,
    /// Ignored (GIF output is not offered).
    frame_count: Option<i64>,
    /// Ignored.
    frame_duration_ms: Option<i64>,
    /// Ignored.
    input_fidelity: Option<String>,
    /// Ignored (SVG output is not offered).
    #[schema(value_type = Option<Object>)]
    svg: Option<serde_json::Value>,
}

impl ImageGenerationRequest {
    /// The same fields from an edit's form, where every value is text.
    fn from_form(fields: &std::collections::HashMap<String, String>) -> Result<Self, ApiError> {
        let text = |name: &str| fields.get(name).cloned();
        let number = |name: &'static str| {
            fields
                .get(name)
                .map(|raw| {
                    raw.trim().parse::<i64>().map_err(|_| {
                        ApiError::invalid_field(name, format!("{name} must be an integer"))
                    })
                })
                .transpose()
        };
        let stream = match fields.get("stream").map(|raw| raw.trim()) {
            None | Some("false" | "False" | "0" | "") => None,
            Some("true" | "True" | "1") => Some(true),
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "stream",
                    "stream must be true or false",
                ));
            }
        };
        Ok(Self {
            prompt: text("prompt"),
            model: text("model"),
            n: number("n")?,
            size: text("size"),
            response_format: text("response_format"),
            style: text("style"),
            stream,
            output_format: text("output_format"),
            quality: text("quality"),
            output_compression: number("output_compression")?,
            background: text("background"),
            moderation: text("moderation"),
            user: text("user"),
            safety_identifier: text("safety_identifier"),
            partial_images: number("partial_images")?,
            complexity: text("complexity"),
            frame_count: number("frame_count")?,
            frame_duration_ms: number("frame_duration_ms")?,
            input_fidelity: text("input_fidelity"),
            svg: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFormat {
    Url,
    Base64Json,
}

/// What an OpenAI request asks of the domain.
struct Wanted {
    request: GenerationRequest,
    count: ImageCount,
    format: ResponseFormat,
    /// `stream: true`: server-sent events (see [`crate::openai::stream`]).
    stream: bool,
}

/// gpt-image-2's limits on a custom size (OpenAI's documentation): sides multiples of 16, the
/// long side at most 3840, the ratio between 1:3 and 3:1.
const MAX_LONG_SIDE: u32 = 3840;

/// `auto` (or none): the model's choice; one of the classic sizes, or any size within
/// gpt-image-2's limits: the model's nearest aspect ratio and the smallest of its resolutions
/// big enough.
fn openai_size(raw: Option<&str>) -> Result<Option<PixelSize>, ApiError> {
    let Some(raw) = raw.filter(|raw| *raw != "auto") else {
        return Ok(None);
    };
    let refused = || {
        ApiError::invalid_field(
            "size",
            format!(
                "size must be auto, one of {}, or WxH with sides multiples of 16, the long side \
                 at most {MAX_LONG_SIDE} and a ratio between 1:3 and 3:1 (e.g. 2560x1440)",
                OPENAI_SIZES.join(", ")
            ),
        )
    };
    let size = PixelSize::parse(raw).map_err(|_| refused())?;
    let (long, short) = (size.width.max(size.height), size.width.min(size.height));
    let custom_fits =
        size.width % 16 == 0 && size.height % 16 == 0 && long <= MAX_LONG_SIDE && long <= 3 * short;
    if OPENAI_SIZES.contains(&raw) || custom_fits {
        Ok(Some(size))
    } else {
        Err(refused())
    }
}

fn checked(
    options: ImageGenerationRequest,
    inputs: InputImages,
    state: &AppState,
) -> Result<Wanted, ApiError> {
    let stream = options.stream == Some(true);
    if let Some(partial) = options.partial_images
        && !(0..=3).contains(&partial)
    {
        return Err(ApiError::invalid_field(
            "partial_images",
            "partial_images must be from 0 to 3",
        ));
    }
    let quality = options
        .quality
        .as_deref()
        .map(Quality::parse)
        .transpose()
        .map_err(|error| ApiError::invalid_field("quality", error.to_string()))?
        .unwrap_or_default();
    match options.background.as_deref() {
        None | Some("auto" | "opaque") => {}
        Some("transparent") => {
            return Err(ApiError::invalid_field(
                "background",
                "the models draw opaque images: background must be auto or opaque",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "background",
                "background must be auto, opaque or transparent",
            ));
        }
    }
    let output =
        OutputEncoding::parse(options.output_format.as_deref(), options.output_compression)?;
    let format = match options.response_format.as_deref() {
        None | Some("url") => ResponseFormat::Url,
        Some("b64_json") => ResponseFormat::Base64Json,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "response_format",
                "response_format must be url or b64_json",
            ));
        }
    };
    let style = match options.style.as_deref() {
        None | Some("natural") => ImageStyle::Natural,
        Some("vivid") => ImageStyle::Artistic,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "style",
                "style must be vivid or natural",
            ));
        }
    };
    let count = ImageCount::new(options.n.unwrap_or(1), state.max_images_per_request)?;
    let prompt = options
        .prompt
        .ok_or_else(|| ApiError::invalid_field("prompt", "prompt is required"))
        .and_then(|raw| {
            Prompt::parse(raw).map_err(|error| ApiError::invalid_field("prompt", error.to_string()))
        })?;
    let model = state
        .openai_models
        .resolve(options.model.as_deref(), state.generations.models())
        .map_err(|error| ApiError::invalid_field("model", error.to_string()))?;
    let size = openai_size(options.size.as_deref())?;
    let shape = ImageShape::for_size(&model, size).at_quality(&model, quality);
    let label = size.map_or_else(|| "auto".to_owned(), |size| size.to_string());
    let today = state.generations.now().date();
    let request =
        GenerationRequest::with_checked_fields(prompt, label, shape, style, model, inputs, today)
            .map_err(|error| match error {
            // OpenAI's edits name their images `image`.
            InvalidGenerationRequest::TooManyImages { .. } => {
                ApiError::invalid_field("image", error.to_string())
            }
            error => error.into(),
        })?;
    let mut request = request;
    request.output = output;
    request.image_in_answer = stream || format == ResponseFormat::Base64Json;
    request.fallbacks =
        GenerationRequest::catalog_fallbacks(&request.model, state.generations.models());
    Ok(Wanted {
        request,
        count,
        format,
        stream,
    })
}

/// One image of an answer: `url` or `b64_json`, and the text the model was given.
#[derive(Serialize, ToSchema)]
pub(crate) struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    // Always `None` when serialized: `b64_json` answers are written by `base64_json_body`,
    // in this shape, without building this struct. The field documents them in the schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    b64_json: Option<String>,
    revised_prompt: String,
}

/// OpenAI's `ImagesResponse`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ImagesResponse {
    /// Unix seconds.
    created: i64,
    data: Vec<ImageData>,
    /// The first image's pixel size, `WxH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<String>,
    /// `png`, `jpeg` or `webp`: what the first image is.
    output_format: &'static str,
    /// `low`, `medium` or `high`: where the resolution made stands among the model's.
    quality: &'static str,
    /// Always `opaque`: the models draw no transparency.
    background: &'static str,
    /// The tokens Google counted, summed over the images.
    usage: OpenAiUsage,
}

/// `stream: true`: server-sent events (an `Idempotency-Key` cannot replay a stream).
async fn streamed(
    state: &AppState,
    caller: AuthenticatedApiKey,
    with_idempotency_key: bool,
    wanted: Wanted,
    kind: StreamKind,
    held_body: Option<BodyReservation>,
) -> Result<HttpResponse, ApiError> {
    if with_idempotency_key {
        return Err(ApiError::invalid_field(
            "stream",
            "a streamed answer cannot be replayed: send stream without an Idempotency-Key",
        ));
    }
    Ok(respond_streaming(
        state.generations.clone(),
        caller,
        wanted.request,
        wanted.count,
        kind,
        held_body,
    )
    .await)
}

async fn run(
    request: &HttpRequest,
    state: &AppState,
    caller: AuthenticatedApiKey,
    wanted: Wanted,
) -> Result<HttpResponse, ApiError> {
    let batch = state
        .generations
        .generate_images(caller, &wanted.request, wanted.count)
        .await;
    let mut response = match record_outcomes(&wanted.request, batch.result) {
        Ok(generations) => {
            let cost = generations.iter().map(|generation| generation.cost).sum();
            let mut response = answer(request, generations, wanted.format);
            insert_cost(response.headers_mut(), cost);
            response
        }
        Err(error) => render(error),
    };
    insert_standings(response.headers_mut(), &batch.standings);
    Ok(response)
}

fn answer(
    request: &HttpRequest,
    generations: Vec<Generation>,
    format: ResponseFormat,
) -> HttpResponse {
    let Some(first) = generations.first() else {
        return render(ApiError::internal(
            "a generation succeeded without an image",
        ));
    };
    let timing = server_timing(request, first);
    let created = first.created_at.unix_timestamp();
    let size = first.dimensions.map(|(w, h)| format!("{w}x{h}"));
    let output_format = output_format(first.image.format());
    let quality = first.shape.quality_label(&first.model);
    let usage = OpenAiUsage::of(&generations);
    let tail = AnswerTail {
        size: size.as_deref(),
        output_format,
        quality,
        usage,
    };
    if format == ResponseFormat::Base64Json {
        let body = base64_json_body(created, &generations, &tail);
        return HttpResponse::Ok()
            .insert_header(timing)
            .content_type("application/json")
            .body(body);
    }
    let body = ImagesResponse {
        created,
        size,
        output_format,
        quality,
        background: "opaque",
        usage,
        data: generations
            .into_iter()
            .map(|generation| ImageData {
                url: Some(generation.url),
                b64_json: None,
                revised_prompt: generation.sent_text,
            })
            .collect(),
    };
    HttpResponse::Ok().insert_header(timing).json(body)
}

/// The `b64_json` answer, written by hand: each image is base64-encoded once (SIMD), straight
/// into the body — no `String` per image for serde to scan for escapes and copy again (base64
/// needs none). The same JSON as [`ImagesResponse`] with `b64_json` set.
/// What an answer says after its images.
struct AnswerTail<'a> {
    size: Option<&'a str>,
    output_format: &'static str,
    quality: &'static str,
    usage: OpenAiUsage,
}

fn base64_json_body(created: i64, generations: &[Generation], tail: &AnswerTail<'_>) -> Vec<u8> {
    let encoded: usize = generations
        .iter()
        .map(|generation| (generation.image.len() as usize).div_ceil(3) * 4)
        .sum();
    let mut body = Vec::with_capacity(encoded + 256 * (generations.len() + 1));
    body.extend_from_slice(format!(r#"{{"created":{created},"data":["#).as_bytes());
    for (at, generation) in generations.iter().enumerate() {
        if at > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"b64_json":""#);
        base64_simd::STANDARD.encode_append(image_bytes(generation), &mut body);
        body.extend_from_slice(br#"","revised_prompt":"#);
        json_string(&mut body, &generation.sent_text);
        body.push(b'}');
    }
    body.push(b']');
    if let Some(size) = tail.size {
        body.extend_from_slice(br#","size":"#);
        json_string(&mut body, size);
    }
    body.extend_from_slice(br#","output_format":"#);
    json_string(&mut body, tail.output_format);
    body.extend_from_slice(br#","quality":"#);
    json_string(&mut body, tail.quality);
    body.extend_from_slice(br#","background":"opaque","usage":"#);
    let _ = serde_json::to_writer(&mut body, &tail.usage);
    body.push(b'}');
    body
}

/// `text` as a JSON string, appended.
fn json_string(body: &mut Vec<u8>, text: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *body, text);
}

/// Create images from a prompt (OpenAI's `images.generate`).
#[utoipa::path(post, path = "/v1/images/generations", tag = "openai", security(("api_key" = [])),
    request_body = ImageGenerationRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters, scoped to the API key: a repeat of the same request gets the first answer again (`Idempotent-Replayed: true`) without a new image or a new count; see the README for what is kept")),
    responses(
        (status = 200, description = "The images (fewer than `n` when some failed)", body = ImagesResponse),
        (status = 400, description = "A parameter is invalid (`param` names it), the prompt was refused (`content_policy_violation`), or the `Idempotency-Key` is malformed or was used for another request (`idempotency_key_reused`)", body = OpenAiErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still running (`idempotency_in_progress`); the SDKs retry it", body = OpenAiErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = OpenAiErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = OpenAiErrorBody),
        (status = 413, description = "Body too large", body = OpenAiErrorBody),
        (status = 415, description = "The body is not `application/json`", body = OpenAiErrorBody),
        (status = 429, description = "Over a per-minute rate limit (type `requests`), or a day or month quota or budget (type `insufficient_quota`, code `quota_exceeded` or `budget_exceeded`, `Retry-After` to its reset)", body = OpenAiErrorBody),
        (status = 502, description = "The provider or the storage failed", body = OpenAiErrorBody),
        (status = 503, description = "Not configured, provider busy, or database unavailable", body = OpenAiErrorBody),
        (status = 504, description = "The provider did not answer in time", body = OpenAiErrorBody),
    ))]
pub(crate) async fn generations(
    request: HttpRequest,
    state: web::Data<AppState>,
    caller: Result<ApiKeyCaller, ApiError>,
    body: Result<GenerationJson<ImageGenerationRequest>, actix_web::Error>,
) -> HttpResponse {
    let caller = match caller {
        Ok(ApiKeyCaller(caller)) => caller,
        Err(error) => return render(error),
    };
    throttled(&state, caller, render, async {
        let GenerationJson {
            body: options,
            fingerprint,
        } = body.map_err(|error| OpenAiError::from(error).0)?;
        let dry_run = dry_run::in_header(&request)?;
        let idempotency_key = idempotency::key_of(&request)?;
        let wanted = checked(options, InputImages::none(), &state)?;
        if dry_run {
            return dry_run::respond(&state, caller, &wanted.request, wanted.count).await;
        }
        if wanted.stream {
            return streamed(
                &state,
                caller,
                idempotency_key.is_some(),
                wanted,
                StreamKind::Generation,
                None,
            )
            .await;
        }
        let work = run(&request, &state, caller, wanted);
        idempotent(&state, &caller, idempotency_key, fingerprint, render, work).await
    })
    .await
}

/// Edit or combine images (OpenAI's `images.edit`): `multipart/form-data` with one `image`
/// part or several `image[]` parts (PNG, JPEG or WebP by their bytes), an optional `mask`,
/// and the same fields as a generation.
#[utoipa::path(post, path = "/v1/images/edits", tag = "openai", security(("api_key" = [])),
    request_body(content_type = "multipart/form-data", content = ImageGenerationRequest,
        description = "The fields of a generation as form fields, plus `image` (or `image[]`, repeated) and `mask` files"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters, scoped to the API key: a repeat of the same request gets the first answer again (`Idempotent-Replayed: true`) without a new image or a new count; see the README for what is kept")),
    responses(
        (status = 200, description = "The images", body = ImagesResponse),
        (status = 400, description = "A parameter or image is invalid (`param` names it), the form is malformed, the request was refused (`content_policy_violation`), or the `Idempotency-Key` is malformed or was used for another request (`idempotency_key_reused`)", body = OpenAiErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still running (`idempotency_in_progress`); the SDKs retry it", body = OpenAiErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = OpenAiErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = OpenAiErrorBody),
        (status = 413, description = "An image, or all of them, over the limit", body = OpenAiErrorBody),
        (status = 415, description = "Not `multipart/form-data`", body = OpenAiErrorBody),
        (status = 429, description = "Over a per-minute rate limit (type `requests`), or a day or month quota or budget (type `insufficient_quota`, code `quota_exceeded` or `budget_exceeded`, `Retry-After` to its reset)", body = OpenAiErrorBody),
        (status = 502, description = "The provider or the storage failed", body = OpenAiErrorBody),
        (status = 503, description = "Not configured, provider busy, database unavailable, or too many large bodies in flight (`server_busy`, before the body is read; `Retry-After`)", body = OpenAiErrorBody),
        (status = 504, description = "The provider did not answer in time", body = OpenAiErrorBody),
    ))]
pub(crate) async fn edits(
    request: HttpRequest,
    state: web::Data<AppState>,
    caller: Result<ApiKeyCaller, ApiError>,
    payload: web::Payload,
) -> HttpResponse {
    let caller = match caller {
        Ok(ApiKeyCaller(caller)) => caller,
        Err(error) => return render(error),
    };
    // Before the rate limits count it: a refused body costs the client nothing.
    let mut held_body = match state
        .body_budget
        .reserve(&request, largest_form_body(state.input_images))
    {
        Ok(reservation) => Some(reservation),
        Err(busy) => return render(busy),
    };
    throttled(&state, caller, render, async {
        let payload = payload.into_inner();
        let EditForm {
            fields,
            images,
            mask,
        } = read_edit_form(&request, payload, state.input_images).await?;
        if images.is_empty() {
            return Err(ApiError::invalid_field(
                "image",
                "send at least one image (`image`, or `image[]` for several)",
            ));
        }
        let idempotency_key = idempotency::key_of(&request)?;
        let fingerprint = idempotency_key
            .is_some()
            .then(|| idempotency::form_fingerprint(&request, &fields, &images, mask.as_ref()));
        let options = ImageGenerationRequest::from_form(&fields)?;
        let inputs = InputImages::parse(images, mask, state.input_images)?;
        let wanted = checked(options, inputs, &state)?;
        if dry_run::in_header(&request)? {
            return dry_run::respond(&state, caller, &wanted.request, wanted.count).await;
        }
        if wanted.stream {
            // The images are held until the batch is over, not until the stream starts.
            return streamed(
                &state,
                caller,
                idempotency_key.is_some(),
                wanted,
                StreamKind::Edit,
                held_body.take(),
            )
            .await;
        }
        let work = run(&request, &state, caller, wanted);
        idempotent(&state, &caller, idempotency_key, fingerprint, render, work).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_sizes_are_the_sdks_sizes() {
        assert_eq!(openai_size(None).unwrap(), None);
        assert_eq!(openai_size(Some("auto")).unwrap(), None);
        for size in OPENAI_SIZES {
            assert_eq!(openai_size(Some(size)).unwrap().unwrap().to_string(), size);
        }
        // Custom sizes within gpt-image-2's limits, and outside them.
        for good in ["1024x768", "2560x1440", "3840x2160", "1280x3840"] {
            assert_eq!(openai_size(Some(good)).unwrap().unwrap().to_string(), good);
        }
        for bad in ["1000x1000", "3840x1024", "4096x2304", "big", "0x0", ""] {
            assert_eq!(
                openai_size(Some(bad)).unwrap_err().field(),
                Some("size"),
                "{bad}"
            );
        }
    }

    #[test]
    fn form_fields_are_read_as_their_types() {
        let fields = [
            ("prompt", "x"),
            ("n", "3"),
            ("stream", "false"),
            ("size", "auto"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into_iter()
        .collect();
        let options = ImageGenerationRequest::from_form(&fields).unwrap();
        assert_eq!(options.n, Some(3));
        assert_eq!(options.stream, None);
        let bad = [("n", "three")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into_iter()
            .collect();
        assert_eq!(
            ImageGenerationRequest::from_form(&bad).unwrap_err().field(),
            Some("n")
        );
    }
}
