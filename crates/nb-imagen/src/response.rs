//! Reading Google's answers: images, refusals and error envelopes, leniently.

use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use nb_domain::generation::{GeneratedImage, ProviderError};
use serde_json::Value;

/// The longest piece of a model's text answer quoted back as the reason for no image.
const MAX_QUOTED_TEXT_CHARS: usize = 300;

/// `field(object, "inlineData")` also finds `inline_data`: the API answers in camelCase, but
/// proxies and older SDK recordings use snake_case.
fn field<'a>(object: &'a Value, camel_case: &str) -> Option<&'a Value> {
    object
        .get(camel_case)
        .or_else(|| object.get(snake_case(camel_case).as_str()))
}

fn snake_case(camel_case: &str) -> String {
    let mut snake = String::with_capacity(camel_case.len() + 4);
    for c in camel_case.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

fn text_field<'a>(object: &'a Value, camel_case: &str) -> Option<&'a str> {
    field(object, camel_case).and_then(Value::as_str)
}

/// Standard or URL-safe alphabet, padded or not, with any line breaks.
pub(crate) fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let alphabet = if compact.contains(['-', '_']) {
        &alphabet::URL_SAFE
    } else {
        &alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, config).decode(compact).ok()
}

fn image_from_base64(encoded: &str) -> Result<GeneratedImage, ProviderError> {
    let bytes = decode_base64(encoded)
        .ok_or_else(|| ProviderError::Upstream("the image data is not valid base64".into()))?;
    GeneratedImage::from_bytes(Bytes::from(bytes))
        .map_err(|not_an_image| ProviderError::Upstream(not_an_image.to_string()))
}

fn parse_json(body: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(body)
        .map_err(|_| ProviderError::Upstream("the provider's answer is not valid JSON".into()))
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
pub(crate) fn parse_generate_content(body: &[u8]) -> Result<GeneratedImage, ProviderError> {
    let answer = parse_json(body)?;
    let candidates = field(&answer, "candidates").and_then(Value::as_array);
    let mut finish_reasons = Vec::new();
    let mut texts = Vec::new();
    for candidate in candidates.into_iter().flatten() {
        let parts = field(candidate, "content")
            .and_then(|c| field(c, "parts"))
            .and_then(Value::as_array);
        for part in parts.into_iter().flatten() {
            if field(part, "thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(inline) = field(part, "inlineData") {
                let is_image =
                    text_field(inline, "mimeType").is_none_or(|m| m.starts_with("image/"));
                if let (true, Some(data)) = (is_image, text_field(inline, "data")) {
                    return image_from_base64(data);
                }
            }
            if let Some(text) = text_field(part, "text") {
                texts.push(text);
            }
        }
        if let Some(reason) = text_field(candidate, "finishReason") {
            let message = text_field(candidate, "finishMessage");
            finish_reasons.push((reason, message));
        }
    }
    let reason = if let Some(feedback) = field(&answer, "promptFeedback")
        && let Some(block) = text_field(feedback, "blockReason")
    {
        match text_field(feedback, "blockReasonMessage") {
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
pub(crate) fn parse_predict(body: &[u8]) -> Result<GeneratedImage, ProviderError> {
    let answer = parse_json(body)?;
    let predictions = field(&answer, "predictions").and_then(Value::as_array);
    let mut filtered = Vec::new();
    for prediction in predictions.into_iter().flatten() {
        if let Some(data) = text_field(prediction, "bytesBase64Encoded") {
            return image_from_base64(data);
        }
        if let Some(reason) = text_field(prediction, "raiFilteredReason") {
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

/// What Google's error envelope says: `{"error": {"code", "message", "status", "details"}}`.
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
        let Ok(answer) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let Some(error) = answer.get("error") else {
            return Self::default();
        };
        let details = error.get("details").and_then(Value::as_array);
        let mut envelope = Self {
            status: text_field(error, "status").map(str::to_owned),
            message: text_field(error, "message").map(str::to_owned),
            ..Self::default()
        };
        for detail in details.into_iter().flatten() {
            if let Some(reason) = text_field(detail, "reason") {
                envelope.reasons.push(reason.to_owned());
            }
            if let Some(delay) = text_field(detail, "retryDelay") {
                envelope.retry_delay = parse_retry_delay(delay);
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
    fn base64_is_decoded_leniently() {
        let png = b"\x89PNG\r\n\x1a\nabc";
        let standard = base64::engine::general_purpose::STANDARD.encode(png);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb, 0xff, 0xfe]);
        assert_eq!(decode_base64(&standard).unwrap(), png);
        assert_eq!(decode_base64(standard.trim_end_matches('=')).unwrap(), png);
        let wrapped = format!("{}\n{}", &standard[..8], &standard[8..]);
        assert_eq!(decode_base64(&wrapped).unwrap(), png);
        assert_eq!(decode_base64(&url_safe).unwrap(), [0xfb, 0xff, 0xfe]);
        assert!(decode_base64("not base64!").is_none());
    }

    #[test]
    fn snake_case_names_are_derived() {
        assert_eq!(snake_case("inlineData"), "inline_data");
        assert_eq!(snake_case("bytesBase64Encoded"), "bytes_base64_encoded");
    }
}
