//! What Google counted for a call: its `usageMetadata`. A leaf: the catalog's prices and the
//! generation model both read it.

/// The tokens Google counted for one call (`usageMetadata`), as it reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// `promptTokenCount`.
    pub input_tokens: u64,
    /// `promptTokensDetails` by modality (`TEXT`, `IMAGE`), when reported.
    pub input_text_tokens: Option<u64>,
    pub input_image_tokens: Option<u64>,
    /// `candidatesTokenCount`.
    pub output_tokens: u64,
    /// `candidatesTokensDetails` by modality, when reported.
    pub output_image_tokens: Option<u64>,
    pub output_text_tokens: Option<u64>,
    /// `thoughtsTokenCount`: billed as output, reported apart.
    pub thinking_tokens: u64,
    /// `totalTokenCount`.
    pub total_tokens: u64,
}
