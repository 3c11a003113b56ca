//! What a generation request may ask for, what the provider returns, and what is recorded.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api_keys::model::AuthenticatedApiKey;

pub const MAX_PROMPT_CHARS: usize = 10_000;

/// A prompt: at most 10,000 characters, with at least one visible character. Kept exactly as
/// sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPrompt {
    #[error("prompt is required")]
    Missing,
    #[error("prompt must not be blank")]
    Blank,
    #[error("prompt must be at most {MAX_PROMPT_CHARS} characters long")]
    TooLong,
}

impl Prompt {
    pub fn parse(raw: String) -> Result<Self, InvalidPrompt> {
        if !raw.chars().any(is_visible) {
            Err(InvalidPrompt::Blank)
        } else if raw.chars().count() > MAX_PROMPT_CHARS {
            Err(InvalidPrompt::TooLong)
        } else {
            Ok(Self(raw))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a character shows: not white space, not a control character (NUL included), not
/// one of the zero-width or bidirectional formatting characters.
pub(crate) fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !crate::text::is_invisible_format(c)
}

/// The sizes a client may ask for (OpenAI's `WxH` convention), each an aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageSize {
    #[default]
    Square,
    Landscape16x9,
    Portrait9x16,
    Landscape3x2,
    Portrait2x3,
    Landscape4x3,
    Portrait3x4,
}

pub const ACCEPTED_SIZES: &str =
    "auto, 1024x1024, 1792x1024, 1024x1792, 1536x1024, 1024x1536, 1024x768, 768x1024";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("size must be one of {ACCEPTED_SIZES}")]
pub struct InvalidSize;

impl ImageSize {
    pub const ALL: [Self; 7] = [
        Self::Square,
        Self::Landscape16x9,
        Self::Portrait9x16,
        Self::Landscape3x2,
        Self::Portrait2x3,
        Self::Landscape4x3,
        Self::Portrait3x4,
    ];

    pub fn parse(raw: &str) -> Result<Self, InvalidSize> {
        Self::ALL
            .into_iter()
            .find(|size| size.as_str() == raw)
            .ok_or(InvalidSize)
    }

    /// `auto` (`Ok(None)`: the model chooses; with input images it keeps theirs) or a size.
    pub fn parse_or_auto(raw: &str) -> Result<Option<Self>, InvalidSize> {
        if raw == "auto" {
            Ok(None)
        } else {
            Self::parse(raw).map(Some)
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Square => "1024x1024",
            Self::Landscape16x9 => "1792x1024",
            Self::Portrait9x16 => "1024x1792",
            Self::Landscape3x2 => "1536x1024",
            Self::Portrait2x3 => "1024x1536",
            Self::Landscape4x3 => "1024x768",
            Self::Portrait3x4 => "768x1024",
        }
    }

    /// The aspect ratio in Google's notation.
    pub fn aspect_ratio(self) -> &'static str {
        match self {
            Self::Square => "1:1",
            Self::Landscape16x9 => "16:9",
            Self::Portrait9x16 => "9:16",
            Self::Landscape3x2 => "3:2",
            Self::Portrait2x3 => "2:3",
            Self::Landscape4x3 => "4:3",
            Self::Portrait3x4 => "3:4",
        }
    }

    /// Width over height.
    pub fn ratio(self) -> f64 {
        let (width, height) = self.dimensions();
        f64::from(width) / f64::from(height)
    }

    /// The nominal pixel size (`as_str`), as numbers.
    pub fn dimensions(self) -> (u32, u32) {
        match self {
            Self::Square => (1024, 1024),
            Self::Landscape16x9 => (1792, 1024),
            Self::Portrait9x16 => (1024, 1792),
            Self::Landscape3x2 => (1536, 1024),
            Self::Portrait2x3 => (1024, 1536),
            Self::Landscape4x3 => (1024, 768),
            Self::Portrait3x4 => (768, 1024),
        }
    }

    /// The size whose aspect ratio is closest to `width`×`height` (compared on a log scale,
    /// so 2:1 is as far from 1:1 as 1:2 is).
    pub fn nearest(width: u32, height: u32) -> Self {
        let wanted = (f64::from(width.max(1)) / f64::from(height.max(1))).ln();
        let distance = |size: &Self| (size.ratio().ln() - wanted).abs();
        Self::ALL
            .into_iter()
            .min_by(|a, b| distance(a).total_cmp(&distance(b)))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageStyle {
    #[default]
    Natural,
    Artistic,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("style must be natural or artistic")]
pub struct InvalidStyle;

impl ImageStyle {
    pub fn parse(raw: &str) -> Result<Self, InvalidStyle> {
        match raw {
            "natural" => Ok(Self::Natural),
            "artistic" => Ok(Self::Artistic),
            _ => Err(InvalidStyle),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Natural => "natural",
            Self::Artistic => "artistic",
        }
    }

    /// The sentence appended to the prompt.
    pub fn instruction(self) -> &'static str {
        match self {
            Self::Natural => "Style: photorealistic, natural lighting and true-to-life colours.",
            Self::Artistic => {
                "Style: artistic illustration, expressive colours and visible brushwork."
            }
        }
    }
}

/// A model id the operator allows (`NB_IMAGE_MODELS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageModel(String);

impl ImageModel {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Imagen models (`imagen-*`) are called through `:predict`; they neither edit nor take
    /// input images.
    pub fn is_imagen(&self) -> bool {
        self.0.starts_with("imagen-")
    }
}

impl fmt::Display for ImageModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The models this deployment offers; the first is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedModels(Vec<ImageModel>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model must be one of {allowed}")]
pub struct UnknownModel {
    pub allowed: String,
}

impl AllowedModels {
    /// `None` when the list is empty.
    pub fn new(models: impl IntoIterator<Item = String>) -> Option<Self> {
        let mut unique: Vec<ImageModel> = Vec::new();
        for model in models {
            let model = model.trim();
            if !model.is_empty() && !unique.iter().any(|known| known.0 == model) {
                unique.push(ImageModel(model.to_owned()));
            }
        }
        (!unique.is_empty()).then_some(Self(unique))
    }

    pub fn default_model(&self) -> &ImageModel {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &ImageModel> {
        self.0.iter()
    }

    /// The requested model, or the default when none is named.
    pub fn choose(&self, requested: Option<&str>) -> Result<ImageModel, UnknownModel> {
        match requested {
            None => Ok(self.default_model().clone()),
            Some(name) => self
                .0
                .iter()
                .find(|model| model.0 == name)
                .cloned()
                .ok_or_else(|| UnknownModel {
                    allowed: self
                        .0
                        .iter()
                        .map(|m| m.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
        }
    }
}

/// `gen_<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GenerationId(pub Uuid);

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gen_{}", self.0)
    }
}

/// The image formats accepted from the provider, recognised by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
}

impl ImageFormat {
    /// The format the bytes really are, whatever a `mimeType` field claimed.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    pub fn from_extension(extension: &str) -> Option<Self> {
        [Self::Png, Self::Jpeg, Self::Webp]
            .into_iter()
            .find(|format| format.extension() == extension)
    }

    pub fn from_mime_type(mime_type: &str) -> Option<Self> {
        [Self::Png, Self::Jpeg, Self::Webp]
            .into_iter()
            .find(|format| format.mime_type() == mime_type)
    }
}

/// The pixel size written in an image's header, when it can be read: PNG's IHDR, JPEG's
/// first start-of-frame, WebP's VP8/VP8L/VP8X header.
pub fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    match ImageFormat::sniff(bytes)? {
        ImageFormat::Png => {
            let be = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
            (bytes.get(12..16)? == b"IHDR").then_some(())?;
            Some((be(16)?, be(20)?))
        }
        ImageFormat::Jpeg => jpeg_dimensions(bytes),
        ImageFormat::Webp => webp_dimensions(bytes),
    }
}

fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    loop {
        while *bytes.get(at)? != 0xFF {
            at += 1;
        }
        while *bytes.get(at)? == 0xFF {
            at += 1;
        }
        let marker = *bytes.get(at)?;
        at += 1;
        if matches!(marker, 0xD8 | 0x01 | 0xD0..=0xD7) {
            continue;
        }
        let length = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
        // Start of frame: every SOFn but DHT (C4), JPG (C8) and DAC (CC).
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let height = u16::from_be_bytes([*bytes.get(at + 3)?, *bytes.get(at + 4)?]);
            let width = u16::from_be_bytes([*bytes.get(at + 5)?, *bytes.get(at + 6)?]);
            return Some((u32::from(width), u32::from(height)));
        }
        at += length;
    }
}

fn webp_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let le24 = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at + 3)?;
        Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
    };
    match bytes.get(12..16)? {
        b"VP8 " => {
            let w = u16::from_le_bytes([*bytes.get(26)?, *bytes.get(27)?]) & 0x3FFF;
            let h = u16::from_le_bytes([*bytes.get(28)?, *bytes.get(29)?]) & 0x3FFF;
            Some((u32::from(w), u32::from(h)))
        }
        b"VP8L" => {
            let bits = u32::from_le_bytes(bytes.get(21..25)?.try_into().ok()?);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
        _ => None,
    }
}

/// Image bytes whose format has been checked.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    bytes: Bytes,
    format: ImageFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the data is not a PNG, JPEG or WebP image")]
pub struct NotAnImage;

impl GeneratedImage {
    pub fn from_bytes(bytes: Bytes) -> Result<Self, NotAnImage> {
        let format = ImageFormat::sniff(&bytes).ok_or(NotAnImage)?;
        Ok(Self { bytes, format })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn format(&self) -> ImageFormat {
        self.format
    }
}

impl fmt::Debug for GeneratedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedImage")
            .field("format", &self.format)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// An image a client sent to be edited or combined: a PNG, JPEG or WebP by its bytes,
/// whatever it was called or declared to be. (The same check as a generated image's.)
pub type InputImage = GeneratedImage;

/// How much clients may send to edit: the deployment's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputImageLimits {
    /// Images in one request (the mask not included).
    pub max_images: usize,
    /// Bytes of any one image (or mask).
    pub max_image_bytes: usize,
    /// Bytes of all images and the mask together.
    pub max_total_bytes: usize,
}

impl Default for InputImageLimits {
    /// Google takes at most 20 MB of request, and base64 adds a third: 14 MiB of images.
    fn default() -> Self {
        Self {
            max_images: 16,
            max_image_bytes: 10 * 1024 * 1024,
            max_total_bytes: 14 * 1024 * 1024,
        }
    }
}

/// Why the images sent cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInputImages {
    #[error("image {index} is not a PNG, JPEG or WebP image")]
    NotAnImage { index: usize },
    #[error("the mask is not a PNG, JPEG or WebP image")]
    MaskNotAnImage,
    #[error("at most {max} images may be sent")]
    TooMany { max: usize },
    #[error("image {index} is larger than {max} bytes")]
    ImageTooLarge { index: usize, max: usize },
    #[error("the images together are larger than {max} bytes")]
    TotalTooLarge { max: usize },
}

impl InvalidInputImages {
    /// Whether the refusal is about size (413) rather than content (400/422).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::ImageTooLarge { .. } | Self::TotalTooLarge { .. }
        )
    }

    pub fn field(&self) -> &'static str {
        match self {
            Self::MaskNotAnImage => "mask",
            _ => "image",
        }
    }
}

/// Checked input images (and an optional mask), in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputImages {
    images: Vec<InputImage>,
    mask: Option<InputImage>,
}

impl InputImages {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn parse(
        images: Vec<Bytes>,
        mask: Option<Bytes>,
        limits: InputImageLimits,
    ) -> Result<Self, InvalidInputImages> {
        if images.len() > limits.max_images {
            return Err(InvalidInputImages::TooMany {
                max: limits.max_images,
            });
        }
        let mut total = 0usize;
        let mut checked = Vec::with_capacity(images.len());
        for (index, bytes) in images.into_iter().enumerate() {
            if bytes.len() > limits.max_image_bytes {
                return Err(InvalidInputImages::ImageTooLarge {
                    index,
                    max: limits.max_image_bytes,
                });
            }
            total += bytes.len();
            checked.push(
                InputImage::from_bytes(bytes)
                    .map_err(|_| InvalidInputImages::NotAnImage { index })?,
            );
        }
        let mask = match mask {
            Some(bytes) if bytes.len() > limits.max_image_bytes => {
                return Err(InvalidInputImages::ImageTooLarge {
                    index: checked.len(),
                    max: limits.max_image_bytes,
                });
            }
            Some(bytes) => {
                total += bytes.len();
                Some(
                    InputImage::from_bytes(bytes)
                        .map_err(|_| InvalidInputImages::MaskNotAnImage)?,
                )
            }
            None => None,
        };
        if total > limits.max_total_bytes {
            return Err(InvalidInputImages::TotalTooLarge {
                max: limits.max_total_bytes,
            });
        }
        Ok(Self {
            images: checked,
            mask,
        })
    }

    pub fn images(&self) -> &[InputImage] {
        &self.images
    }

    pub fn mask(&self) -> Option<&InputImage> {
        self.mask.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.mask.is_none()
    }
}

/// The sentence that tells the model what the mask (sent after the images) means, the way
/// OpenAI's edits define it.
pub const MASK_INSTRUCTION: &str = "The last image is a mask for the first one: change only \
     the areas where the mask is transparent, and keep everything else exactly as it is.";

/// What the provider is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub model: ImageModel,
    /// The prompt with the style (and mask) instructions appended.
    pub text: String,
    /// `None`: the model's own choice (for edits, the input's).
    pub aspect_ratio: Option<&'static str>,
    /// Sent after the text, in order, byte for byte (the mask last).
    pub images: Vec<InputImage>,
}

/// Where a stored image lives. Keys look like `images/2026/11/25/gen_<uuid>.png`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn for_generation(id: GenerationId, at: OffsetDateTime, format: ImageFormat) -> Self {
        let day = at.to_offset(time::UtcOffset::UTC).date();
        Self(format!(
            "images/{:04}/{:02}/{:02}/{id}.{}",
            day.year(),
            u8::from(day.month()),
            day.day(),
            format.extension()
        ))
    }

    /// The key of an image path as handed out in URLs (`2026/11/25/gen_<uuid>.png`, after
    /// `images/`): exactly the shape `for_generation` makes, nothing else.
    pub fn parse_image_path(path: &str) -> Option<(Self, ImageFormat)> {
        let mut segments = path.split('/');
        let (year, month, day, file) = (
            segments.next()?,
            segments.next()?,
            segments.next()?,
            segments.next()?,
        );
        if segments.next().is_some() {
            return None;
        }
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(year, 4) && digits(month, 2) && digits(day, 2)) {
            return None;
        }
        let (stem, extension) = file.rsplit_once('.')?;
        let format = ImageFormat::from_extension(extension)?;
        let uuid = stem.strip_prefix("gen_")?;
        // Only the canonical hyphenated lower-case form, the one `GenerationId` displays.
        let parsed = Uuid::try_parse(uuid).ok()?;
        if parsed.hyphenated().to_string() != uuid {
            return None;
        }
        Some((Self(format!("images/{path}")), format))
    }

    /// A key read back from storage or the database, trusted as written.
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored image's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub url: String,
    /// Whether `url` stays valid (a public or local URL), as opposed to a presigned URL that
    /// expires or a `data:` URL that holds the image itself. Only lasting URLs are recorded.
    pub url_is_lasting: bool,
}

/// A stored image read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedImage {
    pub bytes: Bytes,
    /// The content type the storage keeps with the object.
    pub content_type: String,
    pub last_modified: OffsetDateTime,
}

/// How a generation ended, with what each ending has: there is no half-filled state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationOutcome {
    Succeeded {
        object_key: ObjectKey,
        /// Recorded only when it lasts (see `StoredImage::url_is_lasting`).
        url: Option<String>,
        format: ImageFormat,
        bytes: u64,
    },
    Failed {
        /// Stable and snake_case, e.g. `content_rejected`, `storage_failed`.
        code: &'static str,
    },
}

impl GenerationOutcome {
    pub fn status(&self) -> &'static str {
        match self {
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
        }
    }
}

/// One row of the generation history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRecord {
    pub id: GenerationId,
    pub caller: AuthenticatedApiKey,
    pub prompt: Prompt,
    /// `None`: `auto`.
    pub size: Option<ImageSize>,
    pub style: ImageStyle,
    pub model: ImageModel,
    pub latency: Duration,
    pub created_at: OffsetDateTime,
    pub outcome: GenerationOutcome,
}

/// The size's label as stored and shown: `auto` or `WxH`.
pub fn size_label(size: Option<ImageSize>) -> &'static str {
    size.map_or("auto", ImageSize::as_str)
}

/// A parsed generation request.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    /// `None`: `auto`.
    pub size: Option<ImageSize>,
    pub style: ImageStyle,
    pub model: ImageModel,
    /// Images to edit or combine, and a mask; none for a plain generation.
    pub inputs: InputImages,
}

impl GenerationRequest {
    /// What the provider is asked for: the prompt, the style's sentence (and the mask's, when
    /// there is one), the aspect ratio, then the images and the mask.
    pub fn image_request(&self) -> ImageRequest {
        let mut text = format!("{}\n\n{}", self.prompt.as_str(), self.style.instruction());
        let mut images = self.inputs.images().to_vec();
        if let Some(mask) = self.inputs.mask() {
            text.push_str("\n\n");
            text.push_str(MASK_INSTRUCTION);
            images.push(mask.clone());
        }
        ImageRequest {
            model: self.model.clone(),
            text,
            aspect_ratio: self.size.map(ImageSize::aspect_ratio),
            images,
        }
    }
}

/// A generation request's fields as a client sent them, before any check.
#[derive(Debug, Clone, Default)]
pub struct RawGenerationRequest {
    pub prompt: Option<String>,
    pub size: Option<String>,
    pub style: Option<String>,
    pub model: Option<String>,
}

/// How many images one request asks for: 1 to 4, each its own provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCount(u8);

pub const MAX_IMAGES_PER_REQUEST: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("n must be between 1 and {MAX_IMAGES_PER_REQUEST}")]
pub struct InvalidImageCount;

impl ImageCount {
    pub const ONE: Self = Self(1);

    pub fn new(n: i64) -> Result<Self, InvalidImageCount> {
        u8::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_IMAGES_PER_REQUEST).contains(n))
            .map(Self)
            .ok_or(InvalidImageCount)
    }

    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// Which field of a generation request is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGenerationRequest {
    #[error(transparent)]
    Prompt(#[from] InvalidPrompt),
    #[error(transparent)]
    Size(#[from] InvalidSize),
    #[error(transparent)]
    Style(#[from] InvalidStyle),
    #[error(transparent)]
    Model(#[from] UnknownModel),
    #[error("{model} cannot edit images: pick a Gemini model")]
    ModelCannotEdit { model: String },
}

impl InvalidGenerationRequest {
    /// The request field, as clients name it.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Prompt(_) => "prompt",
            Self::Size(_) => "size",
            Self::Style(_) => "style",
            Self::Model(_) | Self::ModelCannotEdit { .. } => "model",
        }
    }
}

impl GenerationRequest {
    /// Checks every field; an absent size or style takes its default (`1024x1024`,
    /// `natural`), an absent model the deployment's default. Imagen models cannot take
    /// input images.
    pub fn parse(
        raw: RawGenerationRequest,
        models: &AllowedModels,
        inputs: InputImages,
    ) -> Result<Self, InvalidGenerationRequest> {
        let prompt = Prompt::parse(raw.prompt.ok_or(InvalidPrompt::Missing)?)?;
        let size = raw
            .size
            .as_deref()
            .map_or(Ok(Some(ImageSize::default())), ImageSize::parse_or_auto)?;
        let style = raw
            .style
            .as_deref()
            .map_or(Ok(ImageStyle::default()), ImageStyle::parse)?;
        let model = models.choose(raw.model.as_deref())?;
        Self::with_checked_fields(prompt, size, style, model, inputs)
    }

    /// A request from fields already parsed (another API's mapping of its own fields).
    pub fn with_checked_fields(
        prompt: Prompt,
        size: Option<ImageSize>,
        style: ImageStyle,
        model: ImageModel,
        inputs: InputImages,
    ) -> Result<Self, InvalidGenerationRequest> {
        if model.is_imagen() && !inputs.is_empty() {
            return Err(InvalidGenerationRequest::ModelCannotEdit {
                model: model.as_str().to_owned(),
            });
        }
        Ok(Self {
            prompt,
            size,
            style,
            model,
            inputs,
        })
    }
}

/// Where a generation's time went, for the `Server-Timing` header and the overhead metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerationTimings {
    /// The provider's call, retries and waits included.
    pub upstream: Duration,
    pub storage: Duration,
    /// Recording the generation and its usage.
    pub database: Duration,
}

/// A finished generation, as returned to the client.
#[derive(Debug, Clone)]
pub struct Generation {
    pub id: GenerationId,
    pub url: String,
    pub prompt: Prompt,
    /// What the provider was sent: the prompt with the style's sentence.
    pub sent_text: String,
    pub size: Option<ImageSize>,
    pub style: ImageStyle,
    pub model: ImageModel,
    pub image: GeneratedImage,
    /// Read from the image's header, when it can be.
    pub dimensions: Option<(u32, u32)>,
    pub created_at: OffsetDateTime,
    pub timings: GenerationTimings,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const GEN: Uuid = Uuid::from_u128(0xabc);
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n rest of a png";

    #[test]
    fn prompts_must_have_a_visible_character_and_not_be_too_long() {
        for blank in ["  \n ", "\0\0\0", "\u{200b}\u{200b}", "\u{202e} \u{feff}"] {
            assert_eq!(
                Prompt::parse(blank.into()),
                Err(InvalidPrompt::Blank),
                "{blank:?}"
            );
        }
        assert_eq!(
            Prompt::parse("é".repeat(10_001)),
            Err(InvalidPrompt::TooLong)
        );
        assert!(Prompt::parse("é".repeat(10_000)).is_ok());
        assert_eq!(
            Prompt::parse(" a banana ".into()).unwrap().as_str(),
            " a banana "
        );
    }

    #[test]
    fn sizes_map_to_aspect_ratios() {
        let pairs = [
            ("1024x1024", "1:1"),
            ("1792x1024", "16:9"),
            ("1024x1792", "9:16"),
            ("1536x1024", "3:2"),
            ("1024x1536", "2:3"),
            ("1024x768", "4:3"),
            ("768x1024", "3:4"),
        ];
        for (size, ratio) in pairs {
            assert_eq!(ImageSize::parse(size).unwrap().aspect_ratio(), ratio);
        }
        assert!(ImageSize::parse("512x512").is_err());
        assert!(InvalidSize.to_string().contains("1024x768"));
    }

    #[test]
    fn the_nearest_size_is_by_aspect_ratio() {
        assert_eq!(ImageSize::nearest(256, 256), ImageSize::Square);
        assert_eq!(ImageSize::nearest(1792, 1024), ImageSize::Landscape16x9);
        assert_eq!(ImageSize::nearest(1024, 1536), ImageSize::Portrait2x3);
        assert_eq!(ImageSize::nearest(4000, 1000), ImageSize::Landscape16x9);
        assert_eq!(ImageSize::nearest(1000, 1100), ImageSize::Square);
        assert_eq!(ImageSize::nearest(0, 0), ImageSize::Square);
    }

    #[test]
    fn requests_take_defaults_and_name_the_field_at_fault() {
        let models = AllowedModels::new(["m1".to_owned(), "m2".to_owned()]).unwrap();
        let parsed = GenerationRequest::parse(
            RawGenerationRequest {
                prompt: Some("a banana".into()),
                ..RawGenerationRequest::default()
            },
            &models,
            InputImages::none(),
        )
        .unwrap();
        assert_eq!(parsed.size, Some(ImageSize::Square));
        assert_eq!(parsed.style, ImageStyle::Natural);
        assert_eq!(parsed.model.as_str(), "m1");
        let fields = [
            (RawGenerationRequest::default(), "prompt"),
            (
                RawGenerationRequest {
                    prompt: Some("x".into()),
                    size: Some("1x1".into()),
                    ..RawGenerationRequest::default()
                },
                "size",
            ),
            (
                RawGenerationRequest {
                    prompt: Some("x".into()),
                    style: Some("cubist".into()),
                    ..RawGenerationRequest::default()
                },
                "style",
            ),
            (
                RawGenerationRequest {
                    prompt: Some("x".into()),
                    model: Some("m3".into()),
                    ..RawGenerationRequest::default()
                },
                "model",
            ),
        ];
        for (raw, field) in fields {
            assert_eq!(
                GenerationRequest::parse(raw, &models, InputImages::none())
                    .unwrap_err()
                    .field(),
                field
            );
        }
    }

    fn png_of(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(width.to_be_bytes());
        png.extend(height.to_be_bytes());
        png.extend([8, 2, 0, 0, 0]);
        png
    }

    #[test]
    fn dimensions_are_read_from_image_headers() {
        assert_eq!(image_dimensions(&png_of(1264, 848)), Some((1264, 848)));
        // A baseline JPEG: SOI, an APP0 segment, then SOF0 with height 600, width 800.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0];
        jpeg.extend([0xFF, 0xC0, 0x00, 0x11, 8, 0x02, 0x58, 0x03, 0x20, 3]);
        assert_eq!(image_dimensions(&jpeg), Some((800, 600)));
        // A lossless WebP (VP8L): 14-bit width and height less one.
        let mut webp = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        let bits: u32 = (640 - 1) | ((480 - 1) << 14);
        webp.extend(bits.to_le_bytes());
        assert_eq!(image_dimensions(&webp), Some((640, 480)));
        assert_eq!(image_dimensions(b"\x89PNG\r\n\x1a\n short"), None);
        assert_eq!(image_dimensions(&[0xFF, 0xD8, 0xFF]), None);
    }

    #[test]
    fn input_images_are_checked_by_their_bytes_and_limits() {
        let limits = InputImageLimits {
            max_images: 2,
            max_image_bytes: 100,
            max_total_bytes: 150,
        };
        let png = || Bytes::from(png_of(1, 1));
        let inputs = InputImages::parse(vec![png(), png()], Some(png()), limits).unwrap();
        assert_eq!(inputs.images().len(), 2);
        assert!(inputs.mask().is_some());
        let html = Bytes::from_static(b"<html>");
        for (images, mask, expected) in [
            (
                vec![png(), html.clone()],
                None,
                InvalidInputImages::NotAnImage { index: 1 },
            ),
            (vec![png()], Some(html), InvalidInputImages::MaskNotAnImage),
            (
                vec![png(), png(), png()],
                None,
                InvalidInputImages::TooMany { max: 2 },
            ),
            (
                vec![Bytes::from(vec![0x89; 101])],
                None,
                InvalidInputImages::ImageTooLarge { index: 0, max: 100 },
            ),
        ] {
            assert_eq!(InputImages::parse(images, mask, limits), Err(expected));
        }
        let mut big = png_of(1, 1);
        big.resize(80, 0);
        let two_big = vec![Bytes::from(big.clone()), Bytes::from(big)];
        let too_much = InputImages::parse(two_big, None, limits).unwrap_err();
        assert_eq!(too_much, InvalidInputImages::TotalTooLarge { max: 150 });
        assert!(too_much.is_too_large());
    }

    #[test]
    fn the_provider_gets_the_text_then_the_images_then_the_mask() {
        let models = AllowedModels::new(["gemini-x".to_owned(), "imagen-4".to_owned()]).unwrap();
        let image = Bytes::from(png_of(2, 2));
        let mask = Bytes::from(png_of(2, 2));
        let inputs = InputImages::parse(
            vec![image.clone()],
            Some(mask.clone()),
            InputImageLimits::default(),
        )
        .unwrap();
        let raw = RawGenerationRequest {
            prompt: Some("a hat".into()),
            size: Some("auto".into()),
            ..RawGenerationRequest::default()
        };
        let request = GenerationRequest::parse(raw.clone(), &models, inputs.clone()).unwrap();
        let sent = request.image_request();
        assert_eq!(sent.aspect_ratio, None);
        assert!(sent.text.starts_with("a hat\n\n"));
        assert!(sent.text.ends_with(MASK_INSTRUCTION));
        let sent_bytes: Vec<&[u8]> = sent.images.iter().map(|i| i.bytes().as_ref()).collect();
        assert_eq!(sent_bytes, [image.as_ref(), mask.as_ref()]);
        let imagen = RawGenerationRequest {
            model: Some("imagen-4".into()),
            ..raw
        };
        let refused = GenerationRequest::parse(imagen, &models, inputs).unwrap_err();
        assert_eq!(refused.field(), "model");
    }

    #[test]
    fn image_counts_are_one_to_four() {
        assert_eq!(ImageCount::new(3).unwrap().get(), 3);
        for bad in [0, 5, -1, 1_000_000_000_000] {
            assert!(ImageCount::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn models_default_to_the_first_and_unknown_ones_are_refused() {
        let models =
            AllowedModels::new(["a".to_owned(), " b ".to_owned(), "a".to_owned()]).unwrap();
        assert_eq!(models.choose(None).unwrap().as_str(), "a");
        assert_eq!(models.choose(Some("b")).unwrap().as_str(), "b");
        assert_eq!(models.choose(Some("c")).unwrap_err().allowed, "a, b");
        assert!(AllowedModels::new([" ".to_owned()]).is_none());
    }

    #[test]
    fn image_formats_are_sniffed_not_trusted() {
        assert_eq!(ImageFormat::sniff(PNG), Some(ImageFormat::Png));
        assert_eq!(
            ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            ImageFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert!(GeneratedImage::from_bytes(Bytes::from_static(b"<html>")).is_err());
    }

    #[test]
    fn object_keys_are_dated_and_carry_the_extension() {
        let key = ObjectKey::for_generation(
            GenerationId(GEN),
            datetime!(2026-01-05 23:30:00 -02:00),
            ImageFormat::Jpeg,
        );
        assert_eq!(key.as_str(), format!("images/2026/01/06/gen_{GEN}.jpg"));
    }

    #[test]
    fn only_generated_image_paths_name_an_object() {
        let good = format!("2026/01/06/gen_{GEN}.jpg");
        let (key, format) = ObjectKey::parse_image_path(&good).unwrap();
        assert_eq!(key.as_str(), format!("images/{good}"));
        assert_eq!(format, ImageFormat::Jpeg);
        for bad in [
            "evil.html".to_owned(),
            format!("2026/01/06/gen_{GEN}.html"),
            format!("2026/01/06/gen_{GEN}.png/x"),
            format!("2026/1/06/gen_{GEN}.png"),
            format!("../01/06/gen_{GEN}.png"),
            format!("2026/01/06/x_{GEN}.png"),
            format!("2026/01/06/gen_{}.png", GEN.simple()),
            format!("2026/01/06/gen_{}.png", GEN.to_string().to_uppercase()),
            format!("2026/01/06/.gen_{GEN}.png"),
            "2026/01/06/gen_.png".to_owned(),
        ] {
            assert!(ObjectKey::parse_image_path(&bad).is_none(), "{bad}");
        }
    }
}
