//! The image provider behind test-mode keys (`nb_test_…`): no network, no Google key, no
//! cost. It answers a real PNG computed from the request alone, so the same prompt, size,
//! model and input images always give the same bytes, in the requested aspect ratio.
//!
//! Magic markers in the prompt produce each failure a live key can meet, as the live
//! provider reports it (the HTTP answer is then the one a live key would get):
//!
//! | marker | failure | answer |
//! | --- | --- | --- |
//! | `nb-test:content_rejected` | the model refused the prompt | 422 `content_rejected` |
//! | `nb-test:upstream_busy` | too many generations waiting | 503 `upstream_busy`, `Retry-After: 5` |
//! | `nb-test:upstream_rate_limited` | Google's quota is spent | 503 `upstream_rate_limited`, `Retry-After: 30` |
//! | `nb-test:upstream_failed` | Google failed | 502 `upstream_failed` |
//! | `nb-test:upstream_timeout` | Google did not answer in time | 504 `upstream_timeout` |
//! | `nb-test:model_unavailable` | the model was retired | 502 `model_unavailable` |

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nb_domain::generation::{
    GeneratedImage, ImageRequest, ProvidedImage, ProviderError, image_dimensions,
};
use nb_domain::ports::ImageProvider;
use sha2::{Digest, Sha256};

/// The long side of a test image, in pixels.
const LONG_SIDE: u32 = 128;

/// Each marker and the failure it stands for.
pub const MAGIC_MARKERS: [&str; 6] = [
    "nb-test:content_rejected",
    "nb-test:upstream_busy",
    "nb-test:upstream_rate_limited",
    "nb-test:upstream_failed",
    "nb-test:upstream_timeout",
    "nb-test:model_unavailable",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct TestModeImages;

#[async_trait]
impl ImageProvider for TestModeImages {
    async fn generate(&self, request: &ImageRequest) -> Result<ProvidedImage, ProviderError> {
        if let Some(failure) = magic_failure(request) {
            return Err(failure);
        }
        let bytes = render(request).map_err(|error| ProviderError::Upstream(error.to_string()))?;
        GeneratedImage::from_bytes(Bytes::from(bytes))
            .map(ProvidedImage::from)
            .map_err(|_| ProviderError::Upstream("the test image is not a PNG".into()))
    }
}

fn magic_failure(request: &ImageRequest) -> Option<ProviderError> {
    let text = &request.text;
    let marker = MAGIC_MARKERS.iter().find(|marker| text.contains(*marker))?;
    Some(match *marker {
        "nb-test:content_rejected" => ProviderError::ContentRejected {
            reason: "blocked: SAFETY (test mode)".into(),
        },
        "nb-test:upstream_busy" => ProviderError::Busy {
            retry_after: Duration::from_secs(5),
        },
        "nb-test:upstream_rate_limited" => ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        },
        "nb-test:upstream_timeout" => ProviderError::Timeout,
        "nb-test:model_unavailable" => ProviderError::ModelNotFound {
            model: request.model.as_str().to_owned(),
        },
        _ => ProviderError::Upstream("503 UNAVAILABLE (test mode)".into()),
    })
}

/// Width and height for the request: its aspect ratio, else the first input image's, else
/// square; the long side `LONG_SIDE`.
fn dimensions(request: &ImageRequest) -> (u32, u32) {
    let ratio = request
        .aspect_ratio
        .and_then(|ratio| {
            let ratio = ratio.to_string();
            let (w, h) = ratio.split_once(':')?;
            Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?))
        })
        .or_else(|| {
            let first = request.images.first()?;
            image_dimensions(first.bytes())
        })
        .filter(|(w, h)| *w > 0 && *h > 0)
        .unwrap_or((1, 1));
    let (w, h) = ratio;
    if w >= h {
        (LONG_SIDE, (LONG_SIDE * h / w).max(1))
    } else {
        ((LONG_SIDE * w / h).max(1), LONG_SIDE)
    }
}

/// Everything the image depends on, hashed: the same request, the same picture.
fn seed(request: &ImageRequest) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    part(request.model.as_str().as_bytes());
    part(request.text.as_bytes());
    part(
        request
            .aspect_ratio
            .map(|ratio| ratio.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    part(
        request
            .image_size
            .map_or("", |size| size.as_str())
            .as_bytes(),
    );
    for image in &request.images {
        part(image.bytes());
    }
    hasher.finalize().into()
}

/// A diagonal gradient between two colours taken from the request's hash, with a square of a
/// third in the middle: plain enough to encode in microseconds, distinct per request.
fn render(request: &ImageRequest) -> Result<Vec<u8>, png::EncodingError> {
    let (width, height) = dimensions(request);
    let seed = seed(request);
    let colour = |at: usize| [seed[at], seed[at + 1], seed[at + 2]];
    let (from, to, middle) = (colour(0), colour(3), colour(6));
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    let span = width + height - 2;
    for y in 0..height {
        for x in 0..width {
            let in_middle =
                x.abs_diff(width / 2) < width / 6 && y.abs_diff(height / 2) < height / 6;
            let pixel = if in_middle {
                middle
            } else {
                let t = (x + y) * 255 / span.max(1);
                std::array::from_fn(|c| {
                    let (a, b) = (u32::from(from[c]), u32::from(to[c]));
                    ((a * (255 - t) + b * t) / 255) as u8
                })
            };
            pixels.extend_from_slice(&pixel);
        }
    }
    let mut out = Vec::with_capacity(pixels.len() / 4);
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nb_domain::generation::{AllowedModels, AspectRatio};

    fn request(text: &str, aspect_ratio: Option<&'static str>) -> ImageRequest {
        let models = AllowedModels::new(["gemini-3.1-flash-image".to_owned()]).unwrap();
        ImageRequest {
            model: models.default_model().clone(),
            text: text.to_owned(),
            aspect_ratio: aspect_ratio.map(|ratio| AspectRatio::parse(ratio).unwrap()),
            image_size: None,
            images: Vec::new(),
            history: Vec::new(),
            output: None,
            may_spool: false,
        }
    }

    /// The image test mode makes for `request`.
    async fn made(request: &ImageRequest) -> GeneratedImage {
        let provided = TestModeImages.generate(request).await.unwrap();
        provided.image.in_memory().unwrap().clone()
    }

    #[tokio::test]
    async fn the_same_request_gives_the_same_png_in_its_aspect_ratio() {
        let wide = request("a banana", Some("16:9"));
        let first = made(&wide).await;
        let again = made(&wide).await;
        assert_eq!(first.bytes(), again.bytes());
        assert_eq!(image_dimensions(first.bytes()), Some((128, 72)));
        let tall = made(&request("a banana", Some("2:3"))).await;
        assert_eq!(image_dimensions(tall.bytes()), Some((85, 128)));
        let other = made(&request("a pear", Some("16:9"))).await;
        assert_ne!(first.bytes(), other.bytes());
        let square = made(&request("x", None)).await;
        assert_eq!(image_dimensions(square.bytes()), Some((128, 128)));
        let banner = made(&request("x", Some("8:1"))).await;
        assert_eq!(image_dimensions(banner.bytes()), Some((128, 16)));
    }

    #[tokio::test]
    async fn an_edit_keeps_its_inputs_ratio_and_depends_on_its_bytes() {
        let input = made(&request("input", Some("3:2"))).await;
        let mut edit = request("make it blue", None);
        edit.images = vec![input.clone()];
        let edited = made(&edit).await;
        assert_eq!(image_dimensions(edited.bytes()), Some((128, 85)));
        edit.images = vec![made(&request("another input", Some("3:2"))).await];
        let other = made(&edit).await;
        assert_ne!(edited.bytes(), other.bytes());
    }

    #[tokio::test]
    async fn each_marker_fails_as_the_live_provider_would() {
        let codes: Vec<&str> = marker_codes().await;
        assert_eq!(
            codes,
            [
                "content_rejected",
                "upstream_busy",
                "upstream_rate_limited",
                "upstream_failed",
                "upstream_timeout",
                "model_unavailable",
            ]
        );
        let busy = TestModeImages
            .generate(&request("x nb-test:upstream_busy", None))
            .await
            .unwrap_err();
        assert!(
            matches!(busy, ProviderError::Busy { retry_after } if retry_after == Duration::from_secs(5))
        );
    }

    async fn marker_codes() -> Vec<&'static str> {
        let mut codes = Vec::new();
        for marker in MAGIC_MARKERS {
            let error = TestModeImages
                .generate(&request(&format!("a banana, {marker}"), None))
                .await
                .unwrap_err();
            codes.push(error.code());
        }
        codes
    }
}
