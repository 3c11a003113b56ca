//! What Google counts, for the fakes of Google (the API tests' and the benchmark's): the
//! output image tokens of each model at each resolution, from Google's price list (see
//! docs/models.md).

use nb_domain::generation::Resolution;

/// Output image tokens of one image of `model` at `resolution`.
pub fn output_image_tokens(model: &str, resolution: Resolution) -> u64 {
    match (model, resolution) {
        ("gemini-3.1-flash-image", Resolution::Px512) => 747,
        ("gemini-3.1-flash-image", Resolution::K2) => 1680,
        ("gemini-3.1-flash-image", Resolution::K4) => 2520,
        ("gemini-3-pro-image", Resolution::K4) => 2000,
        ("gemini-2.5-flash-image", _) => 1290,
        _ => 1120,
    }
}
