//! What a generation request may ask for, what the provider returns, and what is recorded.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use std::sync::Arc;

use time::Date;

use super::catalog::{AspectRatio, ModelApi, ModelCatalog, ModelSpec, Resolution};
use super::tokens::TokenUsage;
use crate::api_keys::model::AuthenticatedApiKey;
use crate::money::Usd;

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

/// A size in pixels, `WxH` (OpenAI's convention), each side 64–8192. The model's catalog
/// entry turns it into an aspect ratio and a resolution (see `ModelSpec::shape_for_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelSize {
    pub width: u32,
    pub height: u32,
}

pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("size must be auto or WxH with each side from {MIN_SIDE} to {MAX_SIDE}, e.g. 1536x1024")]
pub struct InvalidSize;

impl PixelSize {
    pub const SQUARE_1K: Self = Self {
        width: 1024,
        height: 1024,
    };

    pub fn parse(raw: &str) -> Result<Self, InvalidSize> {
        let (width, height) = raw.split_once('x').ok_or(InvalidSize)?;
        let side = |text: &str| {
            text.parse::<u32>()
                .ok()
                .filter(|n| (MIN_SIDE..=MAX_SIDE).contains(n))
                .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        };
        match (side(width), side(height)) {
            (Some(width), Some(height)) => Ok(Self { width, height }),
            _ => Err(InvalidSize),
        }
    }

    /// `auto` (`Ok(None)`: the model chooses; with input images it keeps theirs) or a size.
    pub fn parse_or_auto(raw: &str) -> Result<Option<Self>, InvalidSize> {
        if raw == "auto" {
            Ok(None)
        } else {
            Self::parse(raw).map(Some)
        }
    }
}

impl fmt::Display for PixelSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// What shape of image is asked for: the ratio (none: the model's choice) and the resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    /// `None`: the model chooses (for edits, the input's ratio).
    pub aspect_ratio: Option<AspectRatio>,
    pub resolution: Resolution,
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

/// An enabled model, with what its catalog entry says it can do.
#[derive(Debug, Clone)]
pub struct ImageModel(Arc<ModelSpec>);

impl PartialEq for ImageModel {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ImageModel {}

impl ImageModel {
    pub fn new(spec: Arc<ModelSpec>) -> Self {
        Self(spec)
    }

    /// Google's id.
    pub fn as_str(&self) -> &str {
        &self.0.id
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.0
    }

    /// Imagen models are called through `:predict`; they neither edit nor take input images.
    pub fn is_imagen(&self) -> bool {
        self.0.api == ModelApi::Imagen
    }
}

impl fmt::Display for ImageModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.id)
    }
}

/// The models this deployment offers (`NB_IMAGE_MODELS`, among the catalog's); the first is
/// the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedModels(Vec<ImageModel>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model must be one of {allowed}")]
pub struct UnknownModel {
    pub allowed: String,
}

/// Why a list of enabled models cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEnabledModels {
    #[error("must name at least one model")]
    Empty,
    #[error(
        "{name:?} is not in the model catalog (it has {known}); describe it in the catalog file (NB_MODELS_FILE)"
    )]
    NotInCatalog { name: String, known: String },
}

/// A request for a model whose retirement day has come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{model} was retired on {retired_at}{}", replaced_by.as_ref().map(|r| format!(": use {r}")).unwrap_or_default())]
pub struct ModelRetired {
    pub model: String,
    pub retired_at: Date,
    pub replaced_by: Option<String>,
}

impl AllowedModels {
    /// The catalog's models named (by id or alias) in `names`, in order, each once.
    pub fn from_catalog(
        catalog: &ModelCatalog,
        names: impl IntoIterator<Item = String>,
    ) -> Result<Self, InvalidEnabledModels> {
        let mut enabled: Vec<ImageModel> = Vec::new();
        for name in names {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let spec = catalog
                .find(name)
                .ok_or_else(|| InvalidEnabledModels::NotInCatalog {
                    name: name.to_owned(),
                    known: catalog.ids(),
                })?;
            if !enabled.iter().any(|model| model.0.id == spec.id) {
                enabled.push(ImageModel(spec.clone()));
            }
        }
        if enabled.is_empty() {
            return Err(InvalidEnabledModels::Empty);
        }
        Ok(Self(enabled))
    }

    /// The built-in catalog's models named in `names`.
    pub fn new(names: impl IntoIterator<Item = String>) -> Result<Self, InvalidEnabledModels> {
        Self::from_catalog(&ModelCatalog::built_in(), names)
    }

    pub fn default_model(&self) -> &ImageModel {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &ImageModel> {
        self.0.iter()
    }

    /// The requested model (by id or alias), or the default when none is named.
    pub fn choose(&self, requested: Option<&str>) -> Result<ImageModel, UnknownModel> {
        match requested {
            None => Ok(self.default_model().clone()),
            Some(name) => self
                .0
                .iter()
                .find(|model| model.0.answers_to(name))
                .cloned()
                .ok_or_else(|| UnknownModel {
                    allowed: self
                        .0
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
        }
    }

    /// The enabled models that retire on or before `until` (retired ones included).
    /// The enabled model whose image at its default resolution costs least (by its
    /// per-image price), among those priced and not scheduled to retire; the default model
    /// when none is. Ties go to the earlier in the enabled list.
    pub fn cheapest(&self) -> &ImageModel {
        self.0
            .iter()
            .filter(|model| model.0.retired_at.is_none())
            .filter_map(|model| {
                let price = model.0.price.as_ref()?;
                Some((price.estimate(model.0.default_resolution(), 1), model))
            })
            .min_by_key(|(cost, _)| *cost)
            .map_or_else(|| self.default_model(), |(_, model)| model)
    }

    pub fn retiring_by(&self, until: Date) -> impl Iterator<Item = &ImageModel> {
        self.0
            .iter()
            .filter(move |model| model.0.retired_at.is_some_and(|at| at <= until))
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

/// A file holding an image the provider's answer was decoded into as it arrived, so that a
/// large image is never held whole in memory. The adapter that wrote it removes it when the
/// last handle is dropped.
#[async_trait::async_trait]
pub trait SpoolFile: Send + Sync + fmt::Debug + 'static {
    /// Where it is. Storage adapters read it from there, or link it into place.
    fn path(&self) -> &std::path::Path;

    /// The whole file, for an answer that needs the image in memory (read under the
    /// [`ImageMemoryBudget`](crate::generation::memory_budget::ImageMemoryBudget)).
    async fn read(&self) -> std::io::Result<Bytes>;
}

/// An image in a [`SpoolFile`]: its first bytes (enough to tell its format and size), and
/// how long it is.
#[derive(Debug, Clone)]
pub struct SpooledImage {
    head: Bytes,
    format: ImageFormat,
    len: u64,
    file: Arc<dyn SpoolFile>,
}

impl SpooledImage {
    /// `head`: the file's first bytes (at least the image's header).
    pub fn new(head: Bytes, len: u64, file: Arc<dyn SpoolFile>) -> Result<Self, NotAnImage> {
        let format = ImageFormat::sniff(&head).ok_or(NotAnImage)?;
        Ok(Self {
            head,
            format,
            len,
            file,
        })
    }

    pub fn format(&self) -> ImageFormat {
        self.format
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn head(&self) -> &[u8] {
        &self.head
    }

    pub fn file(&self) -> &Arc<dyn SpoolFile> {
        &self.file
    }
}

/// An image as the provider hands it over: in memory, or spooled to a file.
#[derive(Debug, Clone)]
pub enum ImageData {
    InMemory(GeneratedImage),
    Spooled(SpooledImage),
}

impl ImageData {
    pub fn format(&self) -> ImageFormat {
        match self {
            Self::InMemory(image) => image.format(),
            Self::Spooled(image) => image.format(),
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Self::InMemory(image) => image.bytes().len() as u64,
            Self::Spooled(image) => image.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The image's first bytes (all of it when in memory): enough for its dimensions.
    pub fn head(&self) -> &[u8] {
        match self {
            Self::InMemory(image) => image.bytes(),
            Self::Spooled(image) => image.head(),
        }
    }

    /// The image's bytes when it is held in memory.
    pub fn in_memory(&self) -> Option<&GeneratedImage> {
        match self {
            Self::InMemory(image) => Some(image),
            Self::Spooled(_) => None,
        }
    }
}

impl From<GeneratedImage> for ImageData {
    fn from(image: GeneratedImage) -> Self {
        Self::InMemory(image)
    }
}

/// The format a client asked the image in (`output_format`), and for JPEG and WebP its
/// quality (`output_compression`, 0–100; 100 when not said, as OpenAI's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputEncoding {
    pub format: ImageFormat,
    pub quality: u8,
    /// Whether the quality was asked for (then a JPEG or WebP is re-encoded at it even when
    /// the model made that format).
    pub quality_asked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOutputEncoding {
    #[error("output_format must be png, jpeg or webp")]
    Format,
    #[error("output_compression must be from 0 to 100")]
    Compression,
}

impl InvalidOutputEncoding {
    pub fn field(&self) -> &'static str {
        match self {
            Self::Format => "output_format",
            Self::Compression => "output_compression",
        }
    }
}

impl OutputEncoding {
    /// `None` when neither is sent: the image as the model made it.
    pub fn parse(
        format: Option<&str>,
        compression: Option<i64>,
    ) -> Result<Option<Self>, InvalidOutputEncoding> {
        let quality = compression
            .map(|n| u8::try_from(n).ok().filter(|n| *n <= 100))
            .map(|n| n.ok_or(InvalidOutputEncoding::Compression))
            .transpose()?;
        let Some(format) = format else {
            return Ok(None);
        };
        let format = match format {
            "png" => ImageFormat::Png,
            "jpeg" | "jpg" => ImageFormat::Jpeg,
            "webp" => ImageFormat::Webp,
            _ => return Err(InvalidOutputEncoding::Format),
        };
        Ok(Some(Self {
            format,
            quality: quality.unwrap_or(100),
            quality_asked: quality.is_some(),
        }))
    }

    /// Whether `made` must be converted to be what was asked.
    pub fn converts(self, made: ImageFormat) -> bool {
        made != self.format || (self.quality_asked && self.format != ImageFormat::Png)
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
    /// Google takes at most 7 MB inline per image and 20 MB of request, and base64 adds a
    /// third: 14 MiB of images. Each model's own limit on the number is its catalog entry's.
    fn default() -> Self {
        Self {
            max_images: 16,
            max_image_bytes: 7_000_000,
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

    /// Images checked before (a job's, kept since it was submitted).
    pub fn from_checked(images: Vec<InputImage>, mask: Option<InputImage>) -> Self {
        Self { images, mask }
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
    pub aspect_ratio: Option<AspectRatio>,
    /// `None`: the model's default resolution (sent as no `imageSize` at all, as google-genai
    /// does when it is not set).
    pub image_size: Option<Resolution>,
    /// Sent after the text, in order, byte for byte (the mask last).
    pub images: Vec<InputImage>,
    /// Earlier turns of a conversational edit, oldest first, sent before this one.
    pub history: Vec<ConversationTurn>,
    /// The format the client asked for: a provider that can make the image in it (Vertex
    /// AI's `imageOutputOptions`) is asked to; others leave it to the gateway's conversion.
    pub output: Option<OutputEncoding>,
    /// The image may be handed over spooled to a file ([`ImageData::Spooled`]) when it is
    /// large (every generation's: one needed whole is read back under the memory budget);
    /// otherwise it is held in memory.
    pub may_spool: bool,
}

/// One earlier turn of a conversation, as the provider is sent it again: the user's text and
/// images, then the model's parts as it returned them (with their signatures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTurn {
    pub text: String,
    pub images: Vec<InputImage>,
    pub model_parts: Vec<ModelTurnPart>,
}

/// A part of the model's turn, sent back as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTurnPart {
    pub content: ModelTurnContent,
    /// Google's `thoughtSignature`: required back on the next turn.
    pub thought_signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelTurnContent {
    Image(InputImage),
    Text(String),
}

/// A part the model returned (its thoughts left out), as kept for the next turn: the image
/// (whose bytes are the generation's image) or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedPart {
    /// `None`: the image.
    pub text: Option<String>,
    pub thought_signature: Option<String>,
}

/// What a succeeded generation keeps to be continued: the text it sent, where its input
/// images are stored, and the parts the model returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTurn {
    pub text: String,
    pub input_keys: Vec<ObjectKey>,
    pub parts: Vec<ReturnedPart>,
}

/// What the provider made for one call.
#[derive(Debug, Clone)]
pub struct ProvidedImage {
    pub image: ImageData,
    /// `None` when the provider reported none.
    pub usage: Option<TokenUsage>,
    /// The model's turn as returned (thoughts left out); empty when the provider has no
    /// turns (Imagen, test mode: then the image alone stands for it).
    pub parts: Vec<ReturnedPart>,
    /// The provider made it in the format (and quality) `ImageRequest::output` asked for
    /// (Vertex AI): nothing is left to convert.
    pub encoded_as_asked: bool,
}

impl From<GeneratedImage> for ProvidedImage {
    fn from(image: GeneratedImage) -> Self {
        Self {
            image: ImageData::InMemory(image),
            usage: None,
            parts: Vec::new(),
            encoded_as_asked: false,
        }
    }
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
    /// Where input image `index` of a generation is kept (for continuing it):
    /// `inputs/2026/11/25/gen_<uuid>/0.png`. Never served, never swept.
    pub fn for_input(
        id: GenerationId,
        at: OffsetDateTime,
        index: usize,
        format: ImageFormat,
    ) -> Self {
        let date = at.date();
        Self(format!(
            "inputs/{:04}/{:02}/{:02}/{id}/{index}.{}",
            date.year(),
            u8::from(date.month()),
            date.day(),
            format.extension()
        ))
    }

    /// The generation an input key (`inputs/…/gen_<uuid>/<n>.<ext>`) belongs to.
    pub fn input_owner(&self) -> Option<GenerationId> {
        let rest = self.0.strip_prefix("inputs/")?;
        let mut segments = rest.split('/');
        let owner = segments.nth(3)?;
        segments.next()?;
        GenerationId::parse(owner).ok()
    }

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
        /// Read from the image's header, when it can be.
        dimensions: Option<(u32, u32)>,
        /// What it cost (see `ModelPrice::cost`); a failure costs nothing.
        cost: Usd,
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
    /// What was asked as a size: `WxH` or `auto`.
    pub size: String,
    pub shape: ImageShape,
    pub style: ImageStyle,
    pub model: ImageModel,
    pub latency: Duration,
    pub created_at: OffsetDateTime,
    /// What Google counted, when it said.
    pub usage: Option<TokenUsage>,
    /// The generation this one continues.
    pub previous: Option<GenerationId>,
    /// What continuing this one needs (succeeded ones only).
    pub turn: Option<StoredTurn>,
    pub outcome: GenerationOutcome,
}

/// A parsed generation request.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    /// What was asked as a size: `WxH` (the default `1024x1024` when nothing about the shape
    /// was asked), or `auto` (the model's choice, or the shape asked by ratio and resolution).
    pub size: String,
    pub shape: ImageShape,
    pub style: ImageStyle,
    pub model: ImageModel,
    /// Images to edit or combine, and a mask; none for a plain generation.
    pub inputs: InputImages,
    /// The earlier generation this one continues (a conversational edit).
    pub previous: Option<GenerationId>,
    /// The format asked for, when it was (else the model's own).
    pub output: Option<OutputEncoding>,
    /// The enabled models tried next, in order, when `model` is overloaded, rate limited,
    /// failing, slow or gone: the request's `fallback_models`, else the catalog's.
    pub fallbacks: Vec<ImageModel>,
    /// The answer carries the image itself (`b64_json`, streams): it is held in memory.
    /// Otherwise a large image goes from the provider's answer to the store through a file.
    pub image_in_answer: bool,
}

impl GenerationRequest {
    /// The catalog's fallbacks of `model` that are enabled, in order.
    pub fn catalog_fallbacks(model: &ImageModel, models: &AllowedModels) -> Vec<ImageModel> {
        model
            .spec()
            .fallbacks
            .iter()
            .filter_map(|name| models.choose(Some(name)).ok())
            .filter(|fallback| fallback.as_str() != model.as_str())
            .collect()
    }

    /// The request's own fallback chain, each an enabled model.
    pub fn with_fallbacks(
        mut self,
        names: &[String],
        models: &AllowedModels,
    ) -> Result<Self, InvalidGenerationRequest> {
        self.fallbacks = names
            .iter()
            .map(|name| {
                models
                    .choose(Some(name))
                    .map_err(|_| InvalidGenerationRequest::Fallback { name: name.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|fallback| fallback.as_str() != self.model.as_str())
            .collect();
        Ok(self)
    }

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
        let image_size = Some(self.shape.resolution)
            .filter(|resolution| *resolution != self.model.spec().default_resolution());
        ImageRequest {
            model: self.model.clone(),
            text,
            aspect_ratio: self.shape.aspect_ratio,
            image_size,
            images,
            history: Vec::new(),
            output: self.output,
            // Read back under the memory budget when the answer needs it whole.
            may_spool: true,
        }
    }
}

/// A generation request's fields as a client sent them, before any check.
#[derive(Debug, Clone, Default)]
pub struct RawGenerationRequest {
    pub prompt: Option<String>,
    pub size: Option<String>,
    pub aspect_ratio: Option<String>,
    pub resolution: Option<String>,
    pub style: Option<String>,
    pub model: Option<String>,
    /// `gen_<uuid>` of the generation this one continues.
    pub previous_generation_id: Option<String>,
}

/// How many images one request asks for: 1 to the deployment's cap, each its own provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCount(u8);

/// OpenAI allows 10 images per request; so do we unless the operator lowers it
/// (`NB_MAX_IMAGES_PER_REQUEST`).
pub const DEFAULT_MAX_IMAGES_PER_REQUEST: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("n must be between 1 and {max}")]
pub struct InvalidImageCount {
    pub max: u8,
}

impl ImageCount {
    pub const ONE: Self = Self(1);

    /// `n`, when it is from 1 to `max`.
    pub fn new(n: i64, max: u8) -> Result<Self, InvalidImageCount> {
        u8::try_from(n)
            .ok()
            .filter(|n| (1..=max).contains(n))
            .map(Self)
            .ok_or(InvalidImageCount { max })
    }

    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// OpenAI's `quality`, as a change of resolution on the model: `low` its smallest, `medium`
/// (and `standard`, `auto`) what the size gives, `high` (and `hd`) one above, `xhigh` (and
/// `max`) its largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quality {
    Low,
    #[default]
    Medium,
    High,
    Highest,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quality must be auto, low, medium, high, xhigh (or standard, hd, max)")]
pub struct InvalidQuality;

impl Quality {
    pub fn parse(raw: &str) -> Result<Self, InvalidQuality> {
        match raw {
            "low" => Ok(Self::Low),
            "medium" | "standard" | "auto" => Ok(Self::Medium),
            "high" | "hd" => Ok(Self::High),
            "xhigh" | "max" => Ok(Self::Highest),
            _ => Err(InvalidQuality),
        }
    }
}

impl ImageShape {
    /// The shape with its resolution moved as `quality` asks, within the model's.
    pub fn at_quality(self, model: &ImageModel, quality: Quality) -> Self {
        let mut resolutions = model.spec().resolutions.clone();
        resolutions.sort();
        let (Some(&smallest), Some(&largest)) = (resolutions.first(), resolutions.last()) else {
            return self;
        };
        let resolution = match quality {
            Quality::Low => smallest,
            Quality::Medium => self.resolution,
            Quality::High => resolutions
                .iter()
                .copied()
                .find(|resolution| *resolution > self.resolution)
                .unwrap_or(largest),
            Quality::Highest => largest,
        };
        Self { resolution, ..self }
    }

    /// The OpenAI `quality` word for what was made: `low` at the model's smallest resolution,
    /// `high` at its largest, else `medium`.
    pub fn quality_label(self, model: &ImageModel) -> &'static str {
        let resolutions = &model.spec().resolutions;
        let smallest = resolutions.iter().min();
        let largest = resolutions.iter().max();
        if resolutions.len() > 1 && largest == Some(&self.resolution) {
            "high"
        } else if resolutions.len() > 1 && smallest == Some(&self.resolution) {
            "low"
        } else {
            "medium"
        }
    }
}

/// Which field of a generation request is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGenerationRequest {
    #[error(transparent)]
    Prompt(#[from] InvalidPrompt),
    #[error(transparent)]
    Size(#[from] InvalidSize),
    #[error("send either size or aspect_ratio and resolution, not both")]
    SizeWithShape,
    #[error("{model} makes the aspect ratios {offered}")]
    AspectRatio { model: String, offered: String },
    #[error("{model} makes the resolutions {offered}")]
    Resolution { model: String, offered: String },
    #[error(transparent)]
    Style(#[from] InvalidStyle),
    #[error(transparent)]
    Model(#[from] UnknownModel),
    #[error(transparent)]
    Retired(#[from] ModelRetired),
    #[error("{model} cannot edit images: pick a model that can")]
    ModelCannotEdit { model: String },
    #[error("{model} takes at most {max} images")]
    TooManyImages { model: String, max: usize },
    #[error("previous_generation_id must be a generation id (gen_…)")]
    Previous,
    #[error("fallback_models must name enabled models: {name:?} is not one (see GET /v1/models)")]
    Fallback { name: String },
}

impl InvalidGenerationRequest {
    /// The request field, as clients name it.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Prompt(_) => "prompt",
            Self::Size(_) | Self::SizeWithShape => "size",
            Self::AspectRatio { .. } => "aspect_ratio",
            Self::Resolution { .. } => "resolution",
            Self::Style(_) => "style",
            Self::Model(_) | Self::Retired(_) | Self::ModelCannotEdit { .. } => "model",
            Self::TooManyImages { .. } => "images",
            Self::Previous => "previous_generation_id",
            Self::Fallback { .. } => "fallback_models",
        }
    }
}

impl ImageShape {
    /// The shape of `size` on `model` (`None`: `auto`, the model's choice of ratio at its
    /// default resolution).
    pub fn for_size(model: &ImageModel, size: Option<PixelSize>) -> Self {
        let spec = model.spec();
        match size {
            None => Self {
                aspect_ratio: None,
                resolution: spec.default_resolution(),
            },
            Some(size) => {
                let (ratio, resolution) = spec.shape_for_size(size.width, size.height);
                Self {
                    aspect_ratio: Some(ratio),
                    resolution,
                }
            }
        }
    }

    /// A ratio and resolution named by the client, checked against the model's.
    pub fn named(
        model: &ImageModel,
        aspect_ratio: Option<&str>,
        resolution: Option<&str>,
    ) -> Result<Self, InvalidGenerationRequest> {
        let spec = model.spec();
        let aspect_ratio = aspect_ratio
            .map(|raw| {
                AspectRatio::parse(raw)
                    .ok()
                    .filter(|ratio| spec.aspect_ratios.contains(ratio))
                    .ok_or_else(|| InvalidGenerationRequest::AspectRatio {
                        model: spec.id.clone(),
                        offered: spec.aspect_ratio_list(),
                    })
            })
            .transpose()?;
        let resolution = resolution
            .map(|raw| {
                Resolution::parse(raw)
                    .ok()
                    .filter(|resolution| spec.resolutions.contains(resolution))
                    .ok_or_else(|| InvalidGenerationRequest::Resolution {
                        model: spec.id.clone(),
                        offered: spec.resolution_list(),
                    })
            })
            .transpose()?
            .unwrap_or_else(|| spec.default_resolution());
        Ok(Self {
            aspect_ratio,
            resolution,
        })
    }
}

impl GenerationRequest {
    /// Checks every field; an absent style takes its default (`natural`), an absent model the
    /// deployment's default. The shape comes from `size` or from `aspect_ratio` and
    /// `resolution` (never both); when none is sent, `1024x1024`.
    pub fn parse(
        raw: RawGenerationRequest,
        models: &AllowedModels,
        inputs: InputImages,
        today: Date,
    ) -> Result<Self, InvalidGenerationRequest> {
        let prompt = Prompt::parse(raw.prompt.ok_or(InvalidPrompt::Missing)?)?;
        let style = raw
            .style
            .as_deref()
            .map_or(Ok(ImageStyle::default()), ImageStyle::parse)?;
        let model = models.choose(raw.model.as_deref())?;
        let names_shape = raw.aspect_ratio.is_some() || raw.resolution.is_some();
        let (size, shape) = match raw.size {
            Some(_) if names_shape => return Err(InvalidGenerationRequest::SizeWithShape),
            Some(size) => {
                let parsed = PixelSize::parse_or_auto(&size)?;
                (size, ImageShape::for_size(&model, parsed))
            }
            None if names_shape => (
                "auto".to_owned(),
                ImageShape::named(
                    &model,
                    raw.aspect_ratio.as_deref(),
                    raw.resolution.as_deref(),
                )?,
            ),
            None => (
                PixelSize::SQUARE_1K.to_string(),
                ImageShape::for_size(&model, Some(PixelSize::SQUARE_1K)),
            ),
        };
        let previous = raw
            .previous_generation_id
            .as_deref()
            .map(|raw| GenerationId::parse(raw).map_err(|_| InvalidGenerationRequest::Previous))
            .transpose()?;
        let mut request =
            Self::with_checked_fields(prompt, size, shape, style, model, inputs, today)?;
        request.previous = previous;
        request.fallbacks = Self::catalog_fallbacks(&request.model, models);
        Ok(request)
    }

    /// A request from fields already parsed (another API's mapping of its own fields): the
    /// model must not be retired, and must take as many images as sent.
    pub fn with_checked_fields(
        prompt: Prompt,
        size: String,
        shape: ImageShape,
        style: ImageStyle,
        model: ImageModel,
        inputs: InputImages,
        today: Date,
    ) -> Result<Self, InvalidGenerationRequest> {
        let spec = model.spec();
        if let Some(retired_at) = spec.retired_at.filter(|_| spec.is_retired_on(today)) {
            return Err(ModelRetired {
                model: spec.id.clone(),
                retired_at,
                replaced_by: spec.replaced_by.clone(),
            }
            .into());
        }
        if !inputs.is_empty() && spec.max_input_images == 0 {
            return Err(InvalidGenerationRequest::ModelCannotEdit {
                model: spec.id.clone(),
            });
        }
        if inputs.images().len() > spec.max_input_images {
            return Err(InvalidGenerationRequest::TooManyImages {
                model: spec.id.clone(),
                max: spec.max_input_images,
            });
        }
        Ok(Self {
            prompt,
            size,
            shape,
            style,
            fallbacks: Vec::new(),
            image_in_answer: false,
            model,
            inputs,
            previous: None,
            output: None,
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
    pub size: String,
    pub shape: ImageShape,
    pub style: ImageStyle,
    /// The model that made it (a fallback, when the one asked for could not).
    pub model: ImageModel,
    /// The model asked for, when a fallback made the image.
    pub requested_model: Option<ImageModel>,
    /// In memory when the request said the answer carries it; large ones may be spooled.
    pub image: ImageData,
    /// What the image holds of the memory budget while it is in memory for the answer (see
    /// [`ImageMemoryBudget`](crate::generation::memory_budget::ImageMemoryBudget)); given back when the last
    /// clone of this generation is dropped, once its answer is written.
    pub held_memory: Option<Arc<crate::generation::memory_budget::HeldImageBytes>>,
    /// Read from the image's header, when it can be.
    pub dimensions: Option<(u32, u32)>,
    pub usage: Option<TokenUsage>,
    /// What it cost (0 for a test key's).
    pub cost: Usd,
    pub previous: Option<GenerationId>,
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

    const TODAY: Date = time::macros::date!(2026 - 12 - 07);

    fn prompt_only() -> RawGenerationRequest {
        RawGenerationRequest {
            prompt: Some("a banana".into()),
            ..RawGenerationRequest::default()
        }
    }

    #[test]
    fn sizes_are_any_w_x_h_with_sides_from_64_to_8192() {
        assert_eq!(
            PixelSize::parse("3840x2160").unwrap(),
            PixelSize {
                width: 3840,
                height: 2160
            }
        );
        assert_eq!(PixelSize::parse_or_auto("auto").unwrap(), None);
        for bad in [
            "63x64",
            "64x8193",
            "1024",
            "1024x",
            "x1024",
            "+1024x1024",
            "1024X1024",
            "",
        ] {
            assert!(PixelSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_take_defaults_and_name_the_field_at_fault() {
        let models = AllowedModels::new([
            "gemini-3.1-flash-image".to_owned(),
            "gemini-3-pro-image".to_owned(),
        ])
        .unwrap();
        let parsed =
            GenerationRequest::parse(prompt_only(), &models, InputImages::none(), TODAY).unwrap();
        assert_eq!(parsed.size, "1024x1024");
        assert_eq!(
            parsed.shape,
            ImageShape {
                aspect_ratio: Some(AspectRatio::SQUARE),
                resolution: Resolution::K1
            }
        );
        assert_eq!(
            parsed.image_request().image_size,
            None,
            "the default is not sent"
        );
        assert_eq!(parsed.style, ImageStyle::Natural);
        assert_eq!(parsed.model.as_str(), "gemini-3.1-flash-image");
        let with = |change: fn(&mut RawGenerationRequest)| {
            let mut raw = prompt_only();
            change(&mut raw);
            raw
        };
        let fields = [
            (RawGenerationRequest::default(), "prompt"),
            (with(|raw| raw.size = Some("1x1".into())), "size"),
            (
                with(|raw| {
                    raw.size = Some("1024x1024".into());
                    raw.resolution = Some("2K".into());
                }),
                "size",
            ),
            (
                with(|raw| raw.aspect_ratio = Some("7:3".into())),
                "aspect_ratio",
            ),
            (
                with(|raw| {
                    raw.model = Some("nano-banana-pro".into());
                    raw.aspect_ratio = Some("8:1".into());
                }),
                "aspect_ratio",
            ),
            (
                with(|raw| {
                    raw.model = Some("gemini-3-pro-image".into());
                    raw.resolution = Some("512".into());
                }),
                "resolution",
            ),
            (with(|raw| raw.resolution = Some("4k".into())), "resolution"),
            (with(|raw| raw.style = Some("cubist".into())), "style"),
            (with(|raw| raw.model = Some("m3".into())), "model"),
        ];
        for (raw, field) in fields {
            assert_eq!(
                GenerationRequest::parse(raw.clone(), &models, InputImages::none(), TODAY)
                    .unwrap_err()
                    .field(),
                field,
                "{raw:?}"
            );
        }
        let refused = GenerationRequest::parse(
            with(|raw| {
                raw.model = Some("nano-banana-pro".into());
                raw.resolution = Some("512".into());
            }),
            &models,
            InputImages::none(),
            TODAY,
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "gemini-3-pro-image makes the resolutions 1K, 2K, 4K"
        );
    }

    #[test]
    fn shapes_come_from_the_size_or_from_ratio_and_resolution() {
        let models = AllowedModels::new(["gemini-3.1-flash-image".to_owned()]).unwrap();
        let parse =
            |raw| GenerationRequest::parse(raw, &models, InputImages::none(), TODAY).unwrap();
        let wide = parse(RawGenerationRequest {
            size: Some("3840x2160".into()),
            ..prompt_only()
        });
        assert_eq!(
            (wide.size.as_str(), wide.shape.resolution),
            ("3840x2160", Resolution::K4)
        );
        let sent = wide.image_request();
        assert_eq!(sent.aspect_ratio.unwrap().to_string(), "16:9");
        assert_eq!(sent.image_size, Some(Resolution::K4));
        let named = parse(RawGenerationRequest {
            aspect_ratio: Some("8:1".into()),
            resolution: Some("2K".into()),
            ..prompt_only()
        });
        assert_eq!(named.size, "auto");
        assert_eq!(named.shape.aspect_ratio.unwrap().to_string(), "8:1");
        assert_eq!(named.image_request().image_size, Some(Resolution::K2));
        let resolution_only = parse(RawGenerationRequest {
            resolution: Some("512".into()),
            ..prompt_only()
        });
        assert_eq!(
            resolution_only.shape.aspect_ratio, None,
            "the model's choice"
        );
        let auto = parse(RawGenerationRequest {
            size: Some("auto".into()),
            ..prompt_only()
        });
        assert_eq!(auto.image_request().aspect_ratio, None);
        assert_eq!(auto.image_request().image_size, None);
    }

    #[test]
    fn retired_models_are_refused_from_their_day_on_naming_the_replacement() {
        let models = AllowedModels::new(["nano-banana".to_owned()]).unwrap();
        let before = time::macros::date!(2026 - 10 - 01);
        assert!(
            GenerationRequest::parse(prompt_only(), &models, InputImages::none(), before).is_ok()
        );
        let refused = GenerationRequest::parse(prompt_only(), &models, InputImages::none(), TODAY)
            .unwrap_err();
        assert_eq!(
            refused,
            InvalidGenerationRequest::Retired(ModelRetired {
                model: "gemini-2.5-flash-image".into(),
                retired_at: time::macros::date!(2026 - 10 - 02),
                replaced_by: Some("gemini-3.1-flash-image".into()),
            })
        );
        assert_eq!(refused.field(), "model");
        assert_eq!(models.retiring_by(TODAY).count(), 1);
    }

    #[test]
    fn each_model_takes_as_many_references_as_its_catalog_entry_says() {
        let catalog = ModelCatalog::with_patches(vec![crate::generation::ModelPatch {
            id: "gemini-2.5-flash-image".into(),
            aliases: Some(vec![]),
            retired_at: None,
            ..crate::generation::ModelPatch::default()
        }])
        .unwrap();
        let models = AllowedModels::from_catalog(
            &catalog,
            [
                "gemini-3-pro-image".to_owned(),
                "gemini-2.5-flash-image".to_owned(),
            ],
        )
        .unwrap();
        let images = |n| {
            InputImages::parse(
                vec![Bytes::from(png_of(2, 2)); n],
                None,
                InputImageLimits::default(),
            )
            .unwrap()
        };
        let on = |model: &str, n| {
            GenerationRequest::parse(
                RawGenerationRequest {
                    model: Some(model.into()),
                    ..prompt_only()
                },
                &models,
                images(n),
                time::macros::date!(2026 - 01 - 01),
            )
        };
        assert!(on("gemini-3-pro-image", 14).is_ok());
        let too_many = on("gemini-3-pro-image", 15).unwrap_err();
        assert_eq!(too_many.field(), "images");
        assert_eq!(
            too_many.to_string(),
            "gemini-3-pro-image takes at most 14 images"
        );
        assert!(on("gemini-2.5-flash-image", 3).is_ok());
        assert_eq!(
            on("gemini-2.5-flash-image", 4).unwrap_err().field(),
            "images"
        );
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
        let catalog = ModelCatalog::with_patches(vec![crate::generation::ModelPatch {
            id: "imagen-4.0-generate-001".into(),
            retired_at: Some(time::macros::date!(2030 - 01 - 01)),
            ..crate::generation::ModelPatch::default()
        }])
        .unwrap();
        let models = AllowedModels::from_catalog(
            &catalog,
            [
                "gemini-3.1-flash-image".to_owned(),
                "imagen-4.0-generate-001".to_owned(),
            ],
        )
        .unwrap();
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
        let request =
            GenerationRequest::parse(raw.clone(), &models, inputs.clone(), TODAY).unwrap();
        let sent = request.image_request();
        assert_eq!(sent.aspect_ratio, None);
        assert!(sent.text.starts_with("a hat\n\n"));
        assert!(sent.text.ends_with(MASK_INSTRUCTION));
        let sent_bytes: Vec<&[u8]> = sent.images.iter().map(|i| i.bytes().as_ref()).collect();
        assert_eq!(sent_bytes, [image.as_ref(), mask.as_ref()]);
        let imagen = RawGenerationRequest {
            model: Some("imagen-4.0-generate-001".into()),
            ..raw
        };
        let refused = GenerationRequest::parse(imagen, &models, inputs, TODAY).unwrap_err();
        assert_eq!(refused.field(), "model");
    }

    #[test]
    fn image_counts_are_one_to_the_cap() {
        assert_eq!(ImageCount::new(10, 10).unwrap().get(), 10);
        for bad in [0, 11, -1, 1_000_000_000_000] {
            assert!(ImageCount::new(bad, 10).is_err(), "{bad}");
        }
        assert_eq!(ImageCount::new(5, 4), Err(InvalidImageCount { max: 4 }));
    }

    #[test]
    fn quality_moves_the_resolution_within_the_models() {
        let models = AllowedModels::new([
            "gemini-3.1-flash-image".to_owned(),
            "gemini-3-pro-image".to_owned(),
            "gemini-3.1-flash-lite-image".to_owned(),
        ])
        .unwrap();
        let shape = |model: &ImageModel, size: &str, quality: &str| {
            let shape = ImageShape::for_size(model, Some(PixelSize::parse(size).unwrap()))
                .at_quality(model, Quality::parse(quality).unwrap());
            (shape.resolution.as_str(), shape.quality_label(model))
        };
        let flash = models.choose(Some("gemini-3.1-flash-image")).unwrap();
        let pro = models.choose(Some("gemini-3-pro-image")).unwrap();
        let lite = models.choose(Some("gemini-3.1-flash-lite-image")).unwrap();
        assert_eq!(shape(&flash, "1024x1024", "low"), ("512", "low"));
        assert_eq!(shape(&flash, "1024x1024", "auto"), ("1K", "medium"));
        assert_eq!(shape(&flash, "1024x1024", "hd"), ("2K", "medium"));
        assert_eq!(shape(&flash, "2560x1440", "high"), ("4K", "high"));
        assert_eq!(shape(&flash, "3840x2160", "high"), ("4K", "high"), "capped");
        assert_eq!(shape(&flash, "1024x1024", "xhigh"), ("4K", "high"));
        assert_eq!(shape(&pro, "1024x1024", "low"), ("1K", "low"));
        assert_eq!(shape(&lite, "1024x1024", "max"), ("1K", "medium"));
        assert!(Quality::parse("ultra").is_err());
    }

    #[test]
    fn models_default_to_the_first_and_unknown_ones_are_refused() {
        let models = AllowedModels::new([
            "gemini-3-pro-image".to_owned(),
            " nano-banana-2 ".to_owned(),
            "nano-banana-pro".to_owned(),
        ])
        .unwrap();
        assert_eq!(models.choose(None).unwrap().as_str(), "gemini-3-pro-image");
        assert_eq!(
            models.choose(Some("nano-banana-2")).unwrap().as_str(),
            "gemini-3.1-flash-image",
            "an alias names the model"
        );
        assert_eq!(
            models
                .choose(Some("gemini-3.1-flash-lite-image"))
                .unwrap_err()
                .allowed,
            "gemini-3-pro-image, gemini-3.1-flash-image",
            "a catalog model that is not enabled is refused"
        );
        assert_eq!(
            AllowedModels::new([" ".to_owned()]),
            Err(InvalidEnabledModels::Empty)
        );
        assert!(matches!(
            AllowedModels::new(["gemini-9".to_owned()]),
            Err(InvalidEnabledModels::NotInCatalog { .. })
        ));
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
