//! A fake of Google's `:generateContent` that knows the model catalog's facts, as Google
//! behaves (see `../shared/reference/UPSTREAMS.md` and docs/models.md):
//! - an `imageSize` or `aspectRatio` the model lacks is a 400 `INVALID_ARGUMENT`;
//! - the image is a PNG whose header has Google's pixel size for the ratio and resolution
//!   (a flat colour at one bit per pixel: a 5504x3072 image is a few KB);
//! - `usageMetadata` counts the prompt's text and image tokens, the output image tokens of
//!   the model at that resolution, and thinking tokens on the 3.x models;
//! - every returned part carries a `thoughtSignature`.

use base64::Engine as _;
use nb_domain::generation::{AspectRatio, ModelCatalog, Resolution};
use nb_testkit::google_facts::{flat_png, google_pixel_size};
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::TestApp;

/// Input tokens Google counts per input image.
pub const TOKENS_PER_INPUT_IMAGE: u64 = 1120;
/// Thinking tokens the fake reports on the 3.x models.
pub const THINKING_TOKENS: u64 = 150;

fn invalid_argument(message: String) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(
        json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}),
    )
}

/// The signature the fake issues for a model turn's part.
pub fn signature_for(text: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Mounted by [`TestApp::use_fake_gemini`].
pub struct FakeGemini;

impl TestApp {
    /// Google from now on is the catalog-aware fake.
    pub async fn use_fake_gemini(&self) {
        Mock::given(method("POST"))
            .and(path_regex(r":generateContent$"))
            .respond_with(FakeGemini)
            .with_priority(1)
            .mount(&self.google)
            .await;
    }
}

impl Respond for FakeGemini {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let model = request
            .url
            .path()
            .trim_start_matches("/v1beta/models/")
            .trim_end_matches(":generateContent")
            .to_owned();
        let catalog = ModelCatalog::built_in();
        let Some(spec) = catalog.find(&model).filter(|spec| spec.id == model) else {
            return ResponseTemplate::new(404).set_body_json(
                json!({"error": {"code": 404, "message": format!("models/{model} is not found"), "status": "NOT_FOUND"}}),
            );
        };
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let config = &body["generationConfig"]["imageConfig"];
        let resolution = match config["imageSize"].as_str() {
            None => Resolution::K1,
            Some(raw) => match Resolution::parse(raw)
                .ok()
                .filter(|resolution| spec.resolutions.contains(resolution))
            {
                Some(resolution) => resolution,
                None => return invalid_argument(format!("Unsupported image size: {raw}")),
            },
        };
        let ratio = match config["aspectRatio"].as_str() {
            None => "1:1".to_owned(),
            Some(raw) => match AspectRatio::parse(raw)
                .ok()
                .filter(|ratio| spec.aspect_ratios.contains(ratio))
            {
                Some(ratio) => ratio.to_string(),
                None => return invalid_argument(format!("Unsupported aspect ratio: {raw}")),
            },
        };
        let contents = body["contents"].as_array().unwrap();
        let text_of = |content: &Value| -> String {
            content["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|part| part["text"].as_str())
                .collect()
        };
        // A model turn sent back must carry, on its image, the signature issued for it.
        for (at, content) in contents.iter().enumerate() {
            if content["role"] != "model" {
                continue;
            }
            let issued = signature_for(&text_of(&contents[at - 1]));
            for part in content["parts"].as_array().into_iter().flatten() {
                if part.get("inlineData").is_some() && part["thoughtSignature"] != issued.as_str() {
                    return invalid_argument(
                        "Image part is missing a thought_signature in content position 2, part position 1.".into(),
                    );
                }
            }
        }
        let text = text_of(contents.last().unwrap());
        let images = contents
            .iter()
            .flat_map(|content| content["parts"].as_array().into_iter().flatten())
            .filter(|part| part.get("inlineData").is_some())
            .count() as u64;
        let (width, height) = google_pixel_size(&ratio, resolution);
        let png = base64::engine::general_purpose::STANDARD.encode(flat_png(width, height));
        let text_tokens = (text.len() as u64).div_ceil(4);
        let image_input_tokens = images * TOKENS_PER_INPUT_IMAGE;
        let output_tokens = nb_testkit::google_facts::output_image_tokens(&spec.id, resolution);
        let thinking = if spec.id.starts_with("gemini-3") {
            THINKING_TOKENS
        } else {
            0
        };
        let mut prompt_details = vec![json!({"modality": "TEXT", "tokenCount": text_tokens})];
        if images > 0 {
            prompt_details.push(json!({"modality": "IMAGE", "tokenCount": image_input_tokens}));
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"inlineData": {"mimeType": "image/png", "data": png}, "thoughtSignature": signature_for(&text)}
                ]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {
                "promptTokenCount": text_tokens + image_input_tokens,
                "promptTokensDetails": prompt_details,
                "candidatesTokenCount": output_tokens,
                "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": output_tokens}],
                "thoughtsTokenCount": thinking,
                "totalTokenCount": text_tokens + image_input_tokens + output_tokens + thinking
            },
            "modelVersion": spec.id,
        }))
    }
}
