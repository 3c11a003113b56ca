//! What the OpenAI image answers and events say about what was made: the format's name and
//! the token usage, shared by the plain answers and the streamed events.

use nb_domain::generation::{Generation, ImageFormat};
use serde::Serialize;
use utoipa::ToSchema;

/// OpenAI's name for an image format.
pub(crate) fn output_format(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Webp => "webp",
    }
}

/// OpenAI's `usage` of an images answer, from Google's `usageMetadata` summed over the images
/// (0 where Google counted nothing: test-mode keys).
#[derive(Serialize, ToSchema, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenAiUsage {
    pub input_tokens: u64,
    pub input_tokens_details: OpenAiInputDetails,
    /// Google's `candidatesTokenCount`.
    pub output_tokens: u64,
    pub output_tokens_details: OpenAiOutputDetails,
    /// Google's `totalTokenCount`.
    pub total_tokens: u64,
}

#[derive(Serialize, ToSchema, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenAiInputDetails {
    pub text_tokens: u64,
    pub image_tokens: u64,
}

#[derive(Serialize, ToSchema, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenAiOutputDetails {
    pub image_tokens: u64,
    pub text_tokens: u64,
    /// Google's `thoughtsTokenCount`.
    pub thinking_tokens: u64,
}

impl OpenAiUsage {
    /// The usage of `generations`, summed.
    pub(crate) fn of<'a>(generations: impl IntoIterator<Item = &'a Generation>) -> Self {
        let mut sum = Self::default();
        for usage in generations
            .into_iter()
            .filter_map(|generation| generation.usage)
        {
            sum.input_tokens += usage.input_tokens;
            sum.input_tokens_details.text_tokens += usage.input_text_tokens.unwrap_or(0);
            sum.input_tokens_details.image_tokens += usage.input_image_tokens.unwrap_or(0);
            sum.output_tokens += usage.output_tokens;
            sum.output_tokens_details.image_tokens += usage.output_image_tokens.unwrap_or(0);
            sum.output_tokens_details.text_tokens += usage.output_text_tokens.unwrap_or(0);
            sum.output_tokens_details.thinking_tokens += usage.thinking_tokens;
            sum.total_tokens += usage.total_tokens;
        }
        sum
    }
}

/// The image of a generation whose answer carries it (`GenerationRequest::image_in_answer`
/// keeps it in memory).
pub(crate) fn image_bytes(generation: &Generation) -> &[u8] {
    generation
        .image
        .in_memory()
        .map_or(&[], |image| image.bytes().as_ref())
}
