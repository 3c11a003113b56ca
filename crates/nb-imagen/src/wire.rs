//! Request bodies, exactly as the official SDKs send them (google-genai 3.x: camelCase,
//! but `mime_type` in snake_case inside `inlineData`, and image bytes in URL-safe base64
//! with padding; no `imageConfig` when no aspect ratio is asked for).

use base64::Engine as _;
use nb_domain::generation::InputImage;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentRequest<'a> {
    pub contents: [Content<'a>; 1],
    pub generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
pub(crate) struct Content<'a> {
    pub parts: Vec<Part<'a>>,
    pub role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Part<'a> {
    Text {
        text: &'a str,
    },
    Image {
        #[serde(rename = "inlineData")]
        inline_data: InlineData,
    },
}

#[derive(Serialize)]
pub(crate) struct InlineData {
    pub data: String,
    pub mime_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfig<'a> {
    pub response_modalities: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfig<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageConfig<'a> {
    pub aspect_ratio: &'a str,
}

impl<'a> GenerateContentRequest<'a> {
    /// The prompt, then each image in order.
    pub fn new(prompt: &'a str, aspect_ratio: Option<&'a str>, images: &[InputImage]) -> Self {
        let mut parts = Vec::with_capacity(1 + images.len());
        parts.push(Part::Text { text: prompt });
        parts.extend(images.iter().map(|image| Part::Image {
            inline_data: InlineData {
                data: base64::engine::general_purpose::URL_SAFE.encode(image.bytes()),
                mime_type: image.format().mime_type(),
            },
        }));
        Self {
            contents: [Content {
                parts,
                role: "user",
            }],
            generation_config: GenerationConfig {
                response_modalities: ["IMAGE"],
                image_config: aspect_ratio.map(|aspect_ratio| ImageConfig { aspect_ratio }),
            },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct PredictRequest<'a> {
    pub instances: [PredictInstance<'a>; 1],
    pub parameters: PredictParameters<'a>,
}

#[derive(Serialize)]
pub(crate) struct PredictInstance<'a> {
    pub prompt: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PredictParameters<'a> {
    /// Imagen defaults to 4 images (4 times the cost): always ask for one.
    pub sample_count: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<&'a str>,
    pub output_options: OutputOptions,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutputOptions {
    pub mime_type: &'static str,
}

/// The aspect ratios Imagen accepts.
pub(crate) const IMAGEN_ASPECT_RATIOS: [&str; 5] = ["1:1", "3:4", "4:3", "9:16", "16:9"];

impl<'a> PredictRequest<'a> {
    pub fn new(prompt: &'a str, aspect_ratio: Option<&'a str>) -> Self {
        Self {
            instances: [PredictInstance { prompt }],
            parameters: PredictParameters {
                sample_count: 1,
                aspect_ratio,
                output_options: OutputOptions {
                    mime_type: "image/png",
                },
            },
        }
    }
}
