//! The image converter: the format a client asked for (`output_format`, `output_compression`)
//! when the model made another. Decoding and PNG/JPEG encoding with the `image` crate; lossy
//! WebP with libwebp (the `webp` crate), which `image` does not encode. A conversion is CPU
//! work of tens of milliseconds (hundreds at 4K): it runs on tokio's blocking pool, at most as
//! many at once as the machine has cores, so a burst of 4K conversions waits its turn instead
//! of starving the async workers.

use std::io::Cursor;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder};
use nb_domain::generation::{
    ConversionError, GeneratedImage, ImageConverter, ImageFormat, OutputEncoding,
};
use tokio::sync::Semaphore;

/// Converts with the `image` crate and libwebp; see the module's documentation.
#[derive(Debug, Clone)]
pub struct ImageCrateConverter {
    permits: Arc<Semaphore>,
}

impl ImageCrateConverter {
    /// At most `at_once` conversions run together.
    pub fn new(at_once: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
        }
    }

    /// As many at once as the machine has cores.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    }
}

#[async_trait]
impl ImageConverter for ImageCrateConverter {
    #[tracing::instrument(skip_all, fields(to = to.format.extension(), quality = to.quality))]
    async fn convert(
        &self,
        image: &GeneratedImage,
        to: OutputEncoding,
    ) -> Result<GeneratedImage, ConversionError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|closed| ConversionError(closed.to_string()))?;
        let bytes = image.bytes().clone();
        let converted = tokio::task::spawn_blocking(move || convert(&bytes, to))
            .await
            .map_err(|crashed| ConversionError(crashed.to_string()))??;
        GeneratedImage::from_bytes(Bytes::from(converted))
            .map_err(|not_an_image| ConversionError(not_an_image.to_string()))
    }
}

/// `bytes` (PNG, JPEG or WebP) re-encoded as `to` asks.
pub fn convert(bytes: &[u8], to: OutputEncoding) -> Result<Vec<u8>, ConversionError> {
    let failed = |error: &dyn std::fmt::Display| ConversionError(error.to_string());
    let decoded = image::load_from_memory(bytes).map_err(|error| failed(&error))?;
    let (width, height) = (decoded.width(), decoded.height());
    let mut out = Vec::with_capacity(bytes.len());
    match to.format {
        ImageFormat::Png => {
            let rgba = decoded.to_rgba8();
            PngEncoder::new_with_quality(
                Cursor::new(&mut out),
                CompressionType::Fast,
                FilterType::Adaptive,
            )
            .write_image(&rgba, width, height, image::ExtendedColorType::Rgba8)
            .map_err(|error| failed(&error))?;
        }
        ImageFormat::Jpeg => {
            // JPEG has no alpha: the models' images are opaque.
            let rgb = DynamicImage::ImageRgb8(decoded.to_rgb8());
            JpegEncoder::new_with_quality(Cursor::new(&mut out), to.quality.max(1))
                .write_image(
                    rgb.as_bytes(),
                    width,
                    height,
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|error| failed(&error))?;
        }
        ImageFormat::Webp => {
            let rgba = decoded.to_rgba8();
            let encoded = webp::Encoder::from_rgba(&rgba, width, height)
                .encode_simple(false, f32::from(to.quality))
                .map_err(|error| failed(&format!("{error:?}")))?;
            out.extend_from_slice(&encoded);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nb_domain::generation::image_dimensions;

    /// A 96x64 PNG with a gradient (something to compress).
    fn png() -> Vec<u8> {
        let image =
            image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([x as u8 * 2, y as u8 * 3, 128]));
        let mut out = Vec::new();
        PngEncoder::new(Cursor::new(&mut out))
            .write_image(image.as_raw(), 96, 64, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn to(format: ImageFormat, quality: u8) -> OutputEncoding {
        OutputEncoding {
            format,
            quality,
            quality_asked: true,
        }
    }

    #[tokio::test]
    async fn every_format_is_made_with_the_same_pixel_size() {
        let converter = ImageCrateConverter::new(2);
        let source = GeneratedImage::from_bytes(Bytes::from(png())).unwrap();
        for format in [ImageFormat::Jpeg, ImageFormat::Webp, ImageFormat::Png] {
            let converted = converter.convert(&source, to(format, 80)).await.unwrap();
            assert_eq!(converted.format(), format, "sniffed from the bytes");
            assert_eq!(image_dimensions(converted.bytes()), Some((96, 64)));
            // And back: what was made decodes.
            let back = converter
                .convert(&converted, to(ImageFormat::Png, 100))
                .await
                .unwrap();
            assert_eq!(image_dimensions(back.bytes()), Some((96, 64)));
        }
    }

    #[tokio::test]
    async fn a_lower_quality_makes_a_smaller_lossy_image() {
        let converter = ImageCrateConverter::new(1);
        let source = GeneratedImage::from_bytes(Bytes::from(png())).unwrap();
        for format in [ImageFormat::Jpeg, ImageFormat::Webp] {
            let high = converter.convert(&source, to(format, 100)).await.unwrap();
            let low = converter.convert(&source, to(format, 10)).await.unwrap();
            assert!(low.bytes().len() < high.bytes().len(), "{format:?}");
        }
    }

    #[test]
    fn what_is_not_an_image_is_a_conversion_error() {
        assert!(convert(b"\x89PNG\r\n\x1a\nbroken", to(ImageFormat::Jpeg, 80)).is_err());
    }
}
