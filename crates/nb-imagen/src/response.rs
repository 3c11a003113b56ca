//! Reading Google's answers: images, refusals and error envelopes.
//!
//! The answers are parsed into typed structs that borrow from the body where they can (the
//! base64 image, which is most of it, is never copied before decoding). Google answers in
//! camelCase; proxies and older SDK recordings use snake_case, so every field takes both.
//! Unknown fields are ignored.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use nb_domain::encoding::decode_base64_lenient;
use nb_domain::generation::{
    GeneratedImage, ImageData, ProvidedImage, ProviderError, ReturnedPart, TokenUsage,
};
use serde::Deserialize;

use crate::answer_scanner::{Extracted, ExtractedStrings, ScannedAnswer};
use crate::spool::Spools;

/// The longest piece of a model's text answer quoted back as the reason for no image.
const MAX_QUOTED_TEXT_CHARS: usize = 300;

/// A `:generateContent` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    #[serde(default, borrow)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(default, borrow, alias = "prompt_feedback")]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default, alias = "usage_metadata")]
    usage_metadata: Option<UsageMetadata>,
}

/// `usageMetadata`: what Google counted (and bills).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default, alias = "prompt_token_count")]
    prompt_token_count: Option<u64>,
    #[serde(default, alias = "prompt_tokens_details")]
    prompt_tokens_details: Option<Vec<ModalityTokenCount>>,
    #[serde(default, alias = "candidates_token_count")]
    candidates_token_count: Option<u64>,
    #[serde(default, alias = "candidates_tokens_details")]
    candidates_tokens_details: Option<Vec<ModalityTokenCount>>,
    #[serde(default, alias = "thoughts_token_count")]
    thoughts_token_count: Option<u64>,
    #[serde(default, alias = "total_token_count")]
    total_token_count: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModalityTokenCount {
    #[serde(default)]
    modality: Option<String>,
    #[serde(default, alias = "token_count")]
    token_count: Option<u64>,
}

impl UsageMetadata {
    /// Google leaves a count out when it is 0; the total, when missing, is the sum.
    fn token_usage(&self) -> TokenUsage {
        let by_modality = |details: &Option<Vec<ModalityTokenCount>>, wanted: &str| {
            details.as_ref().map(|details| {
                details
                    .iter()
                    .filter(|detail| detail.modality.as_deref() == Some(wanted))
                    .filter_map(|detail| detail.token_count)
                    .sum()
            })
        };
        let input_tokens = self.prompt_token_count.unwrap_or(0);
        let output_tokens = self.candidates_token_count.unwrap_or(0);
        let thinking_tokens = self.thoughts_token_count.unwrap_or(0);
        TokenUsage {
            input_tokens,
            input_text_tokens: by_modality(&self.prompt_tokens_details, "TEXT"),
            input_image_tokens: by_modality(&self.prompt_tokens_details, "IMAGE"),
            output_tokens,
            output_image_tokens: by_modality(&self.candidates_tokens_details, "IMAGE"),
            output_text_tokens: by_modality(&self.candidates_tokens_details, "TEXT"),
            thinking_tokens,
            total_tokens: self
                .total_token_count
                .unwrap_or(input_tokens + output_tokens + thinking_tokens),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
    #[serde(default, borrow, alias = "finish_reason")]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow, alias = "finish_message")]
    finish_message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default, borrow)]
    parts: Option<Vec<Part<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow, alias = "inline_data")]
    inline_data: Option<InlineData<'a>>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default, borrow, alias = "thought_signature")]
    thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InlineData<'a> {
    #[serde(default, borrow, alias = "mime_type")]
    mime_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(default, borrow, alias = "block_reason")]
    block_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow, alias = "block_reason_message")]
    block_reason_message: Option<Cow<'a, str>>,
}

/// A `:predict` (Imagen) answer.
#[derive(Deserialize)]
struct PredictResponse<'a> {
    #[serde(default, borrow)]
    predictions: Option<Vec<Prediction<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prediction<'a> {
    #[serde(default, borrow, alias = "bytes_base64_encoded")]
    bytes_base64_encoded: Option<Cow<'a, str>>,
    #[serde(default, borrow, alias = "rai_filtered_reason")]
    rai_filtered_reason: Option<Cow<'a, str>>,
}

/// Google's error envelope: `{"error": {"code", "message", "status", "details"}}`.
#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Option<Vec<ErrorDetail>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, alias = "retry_delay")]
    retry_delay: Option<String>,
}

/// The image a `data`/`bytesBase64Encoded` value stands for: decoded while the answer
/// streamed in (and spooled to `spools` when large), or read here from its JSON and base64
/// (any spelling).
fn image_from_data(
    data: &str,
    extracted: &mut ExtractedStrings,
    spools: Option<&mut Spools>,
) -> Result<ImageData, ProviderError> {
    let not_base64 = || ProviderError::Upstream("the image data is not valid base64".into());
    let lenient = |json: &[u8]| -> Result<Vec<u8>, ProviderError> {
        let text: Cow<'_, str> = serde_json::from_slice(json).map_err(|_| not_base64())?;
        decode_base64_lenient(&text).ok_or_else(not_base64)
    };
    let (index, tail) = match extracted.take(data) {
        Some((_, Extracted::Decoded(bytes))) => return in_memory(bytes),
        Some((_, Extracted::Raw(json))) => return in_memory(lenient(&json)?),
        None => return in_memory(decode_base64_lenient(data).ok_or_else(not_base64)?),
        Some((index, Extracted::SpilledTail(tail))) => (index, tail),
        Some((index, Extracted::RawAfterSpill(json))) => (index, lenient(&json)?),
    };
    spools
        .and_then(|spools| spools.finish(index, &tail))
        .unwrap_or_else(|| {
            Err(ProviderError::Upstream(
                "a spilled image has no spool".into(),
            ))
        })
        .map(ImageData::Spooled)
}

fn in_memory(bytes: Vec<u8>) -> Result<ImageData, ProviderError> {
    GeneratedImage::from_bytes(Bytes::from(bytes))
        .map(ImageData::InMemory)
        .map_err(|not_an_image| ProviderError::Upstream(not_an_image.to_string()))
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|_| {
        ProviderError::Upstream("the provider's answer is not the JSON we expect".into())
    })
}

fn quote(text: &str) -> String {
    let mut quoted: String = text.trim().chars().take(MAX_QUOTED_TEXT_CHARS).collect();
    if text.trim().chars().count() > MAX_QUOTED_TEXT_CHARS {
        quoted.push('…');
    }
    quoted
}

/// A `:generateContent` answer with HTTP 200: the first non-thought image part, or why
/// there is none.
pub(crate) fn parse_generate_content(
    scanned: ScannedAnswer,
    mut spools: Option<&mut Spools>,
) -> Result<ProvidedImage, ProviderError> {
    let ScannedAnswer {
        skeleton,
        mut extracted,
    } = scanned;
    let answer: GenerateContentResponse<'_> = parse_json(&skeleton)?;
    let mut finish_reasons = Vec::new();
    let mut texts = Vec::new();
    for candidate in answer.candidates.iter().flatten() {
        let parts = candidate
            .content
            .as_ref()
            .and_then(|content| content.parts.as_ref());
        // The model's turn as returned (thoughts left out), kept to be sent back: its text
        // parts and its first image, with their signatures.
        let mut image_data = None;
        let mut turn = Vec::new();
        for part in parts.into_iter().flatten() {
            if part.thought == Some(true) {
                continue;
            }
            let signature = part.thought_signature.as_deref().map(str::to_owned);
            if let Some(inline) = &part.inline_data {
                let is_image = inline
                    .mime_type
                    .as_deref()
                    .is_none_or(|mime| mime.starts_with("image/"));
                if let (true, Some(data), None) = (is_image, inline.data.as_deref(), image_data) {
                    image_data = Some(data);
                    turn.push(ReturnedPart {
                        text: None,
                        thought_signature: signature,
                    });
                    continue;
                }
            }
            if let Some(text) = part.text.as_deref() {
                texts.push(text);
                turn.push(ReturnedPart {
                    text: Some(text.to_owned()),
                    thought_signature: signature,
                });
            }
        }
        if let Some(data) = image_data {
            return Ok(ProvidedImage {
                image: image_from_data(data, &mut extracted, spools.take())?,
                usage: answer
                    .usage_metadata
                    .as_ref()
                    .map(UsageMetadata::token_usage),
                parts: turn,
                encoded_as_asked: false,
            });
        }
        if let Some(reason) = candidate.finish_reason.as_deref() {
            finish_reasons.push((reason, candidate.finish_message.as_deref()));
        }
    }
    let blocked = answer
        .prompt_feedback
        .as_ref()
        .and_then(|feedback| Some((feedback.block_reason.as_deref()?, feedback)));
    let reason = if let Some((block, feedback)) = blocked {
        match feedback.block_reason_message.as_deref() {
            Some(message) => format!("the prompt was blocked ({block}): {}", quote(message)),
            None => format!("the prompt was blocked ({block})"),
        }
    } else if let Some((reason, message)) =
        finish_reasons.iter().find(|(reason, _)| *reason != "STOP")
    {
        match message {
            Some(message) => format!("generation stopped ({reason}): {}", quote(message)),
            None => format!("generation stopped ({reason})"),
        }
    } else if !texts.is_empty() {
        format!(
            "the model answered without an image: {}",
            quote(&texts.join(" "))
        )
    } else {
        "the model returned no image".to_owned()
    };
    Err(ProviderError::ContentRejected { reason })
}

/// A `:predict` (Imagen) answer with HTTP 200.
pub(crate) fn parse_predict(scanned: ScannedAnswer) -> Result<GeneratedImage, ProviderError> {
    let ScannedAnswer {
        skeleton,
        mut extracted,
    } = scanned;
    let answer: PredictResponse<'_> = parse_json(&skeleton)?;
    let mut filtered = Vec::new();
    for prediction in answer.predictions.iter().flatten() {
        if let Some(data) = prediction.bytes_base64_encoded.as_deref() {
            return match image_from_data(data, &mut extracted, None)? {
                ImageData::InMemory(image) => Ok(image),
                ImageData::Spooled(_) => Err(ProviderError::Upstream(
                    "an Imagen image was spooled".into(),
                )),
            };
        }
        if let Some(reason) = prediction.rai_filtered_reason.as_deref() {
            filtered.push(quote(reason));
        }
    }
    let reason = if filtered.is_empty() {
        "every image was filtered by the provider's safety system".to_owned()
    } else {
        format!("the image was filtered: {}", filtered.join("; "))
    };
    Err(ProviderError::ContentRejected { reason })
}

/// What Google's error envelope says, for the log and for the choice of answer.
#[derive(Debug, Default)]
pub(crate) struct ErrorEnvelope {
    pub status: Option<String>,
    pub message: Option<String>,
    pub reasons: Vec<String>,
    pub retry_delay: Option<Duration>,
}

impl ErrorEnvelope {
    /// Never fails: a proxy's HTML page or a truncated body gives an empty envelope.
    pub fn parse(body: &[u8]) -> Self {
        let Ok(ErrorResponse { error: Some(error) }) = serde_json::from_slice(body) else {
            return Self::default();
        };
        let mut envelope = Self {
            status: error.status,
            message: error.message,
            ..Self::default()
        };
        for detail in error.details.into_iter().flatten() {
            if let Some(reason) = detail.reason {
                envelope.reasons.push(reason);
            }
            if let Some(delay) = detail.retry_delay.as_deref().and_then(parse_retry_delay) {
                envelope.retry_delay = Some(delay);
            }
        }
        envelope
    }

    pub fn has_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|r| r == reason)
    }
}

/// `"7s"`, `"2.500s"` (protobuf Duration in JSON).
pub(crate) fn parse_retry_delay(raw: &str) -> Option<Duration> {
    let seconds: f64 = raw.trim().strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4f4IBiBggFAA1zgcdmk6h0gAAAABJRU5ErkJggg==";

    #[test]
    fn retry_delays_are_protobuf_durations() {
        assert_eq!(parse_retry_delay("7s"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_delay("2.500s"),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_delay("soon"), None);
        assert_eq!(parse_retry_delay("-1s"), None);
    }

    #[test]
    fn snake_case_answers_are_read_like_camel_case_ones() {
        let snake = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"inline_data": {{"mime_type": "image/png", "data": "{PNG_BASE64}"}}}}]}}, "finish_reason": "STOP"}}]}}"#
        );
        assert!(parse_generate_content(ScannedAnswer::scan(snake.as_bytes()), None).is_ok());
        let blocked =
            br#"{"prompt_feedback": {"block_reason": "SAFETY", "block_reason_message": "no"}}"#;
        let Err(ProviderError::ContentRejected { reason }) =
            parse_generate_content(ScannedAnswer::scan(blocked), None)
        else {
            panic!("a blocked prompt gave an image")
        };
        assert_eq!(reason, "the prompt was blocked (SAFETY): no");
    }

    #[test]
    fn usage_metadata_is_read_with_its_split_by_modality() {
        let answer = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"inlineData": {{"mimeType": "image/png", "data": "{PNG_BASE64}"}}, "thoughtSignature": "c2ln"}}]}}}}],
            "usageMetadata": {{"promptTokenCount": 1130, "promptTokensDetails": [{{"modality": "TEXT", "tokenCount": 10}}, {{"modality": "IMAGE", "tokenCount": 1120}}],
            "candidatesTokenCount": 1690, "candidatesTokensDetails": [{{"modality": "IMAGE", "tokenCount": 1680}}, {{"modality": "TEXT", "tokenCount": 10}}],
            "thoughtsTokenCount": 200, "totalTokenCount": 3020}}}}"#
        );
        let provided =
            parse_generate_content(ScannedAnswer::scan(answer.as_bytes()), None).unwrap();
        assert_eq!(
            provided.parts,
            [ReturnedPart {
                text: None,
                thought_signature: Some("c2ln".into())
            }]
        );
        assert_eq!(
            provided.usage,
            Some(TokenUsage {
                input_tokens: 1130,
                input_text_tokens: Some(10),
                input_image_tokens: Some(1120),
                output_tokens: 1690,
                output_image_tokens: Some(1680),
                output_text_tokens: Some(10),
                thinking_tokens: 200,
                total_tokens: 3020,
            })
        );
        // Snake case, counts left out, no details: what is missing is 0 or unknown.
        let sparse = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"inline_data": {{"data": "{PNG_BASE64}"}}}}]}}}}], "usage_metadata": {{"prompt_token_count": 7, "candidates_token_count": 1120}}}}"#
        );
        let usage = parse_generate_content(ScannedAnswer::scan(sparse.as_bytes()), None)
            .unwrap()
            .usage
            .unwrap();
        assert_eq!(
            (
                usage.input_image_tokens,
                usage.thinking_tokens,
                usage.total_tokens
            ),
            (None, 0, 1127)
        );
        let none = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"inlineData": {{"data": "{PNG_BASE64}"}}}}]}}}}]}}"#
        );
        assert_eq!(
            parse_generate_content(ScannedAnswer::scan(none.as_bytes()), None)
                .unwrap()
                .usage,
            None
        );
    }

    #[test]
    fn an_escaped_image_string_is_still_read() {
        // JSON may escape `/` as `\/`: the string cannot be borrowed, and must still decode.
        let escaped = PNG_BASE64.replace('/', "\\/");
        let body = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"inlineData": {{"data": "{escaped}"}}}}]}}}}]}}"#
        );
        let image = parse_generate_content(ScannedAnswer::scan(body.as_bytes()), None).unwrap();
        let expected = base64::engine::general_purpose::STANDARD
            .decode(PNG_BASE64)
            .unwrap();
        assert_eq!(image.image.in_memory().unwrap().bytes().as_ref(), expected);
    }

    #[test]
    fn answers_of_the_wrong_shape_are_upstream_failures() {
        for body in [&b"<html>"[..], br#"{"candidates": "many"}"#, b"[1, 2]"] {
            assert!(
                matches!(
                    parse_generate_content(ScannedAnswer::scan(body), None),
                    Err(ProviderError::Upstream(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn error_envelopes_give_status_reasons_and_retry_delay() {
        let body =
            br#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
                        {"reason": "RATE_LIMIT_EXCEEDED"}]}}"#;
        let envelope = ErrorEnvelope::parse(body);
        assert_eq!(envelope.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(envelope.retry_delay, Some(Duration::from_secs(7)));
        assert!(envelope.has_reason("RATE_LIMIT_EXCEEDED"));
        assert!(ErrorEnvelope::parse(b"<html>oops</html>").status.is_none());
    }
}
