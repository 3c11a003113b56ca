//! Request bodies, exactly as the official SDKs send them.

use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentRequest<'a> {
    pub contents: [Content<'a>; 1],
    pub generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
pub(crate) struct Content<'a> {
    pub parts: [TextPart<'a>; 1],
    pub role: &'static str,
}

#[derive(Serialize)]
pub(crate) struct TextPart<'a> {
    pub text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfig<'a> {
    pub response_modalities: [&'static str; 1],
    pub image_config: ImageConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageConfig<'a> {
    pub aspect_ratio: &'a str,
}

impl<'a> GenerateContentRequest<'a> {
    pub fn new(prompt: &'a str, aspect_ratio: &'a str) -> Self {
        Self {
            contents: [Content {
                parts: [TextPart { text: prompt }],
                role: "user",
            }],
            generation_config: GenerationConfig {
                response_modalities: ["IMAGE"],
                image_config: ImageConfig { aspect_ratio },
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
    pub aspect_ratio: &'a str,
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
    pub fn new(prompt: &'a str, aspect_ratio: &'a str) -> Self {
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
