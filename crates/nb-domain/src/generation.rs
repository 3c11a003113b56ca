//! Image generation: what a request may ask for, what the provider and storage must do, and
//! the service that runs one generation and records it.
//!
//! A generation that returns an image is stored, recorded as `succeeded` and counted as usage
//! in one transaction. One that returns no image is recorded as `failed` and never counted.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::RepositoryError;
use crate::api_keys::AuthenticatedApiKey;
use crate::ports::{
    Clock, DailyUsage, GenerationRepository, IdGenerator, ImageProvider, ObjectStorage,
};
use crate::user::UserId;

pub const MAX_PROMPT_CHARS: usize = 10_000;

/// A prompt: not blank, at most 10,000 characters. Kept exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPrompt {
    #[error("prompt must not be blank")]
    Blank,
    #[error("prompt must be at most {MAX_PROMPT_CHARS} characters long")]
    TooLong,
}

impl Prompt {
    pub fn parse(raw: String) -> Result<Self, InvalidPrompt> {
        if raw.trim().is_empty() {
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

/// The sizes a client may ask for (OpenAI's `WxH` convention), each an aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSize {
    Square,
    Landscape16x9,
    Portrait9x16,
    Landscape3x2,
    Portrait2x3,
    Landscape4x3,
    Portrait3x4,
}

pub const ACCEPTED_SIZES: &str =
    "1024x1024, 1792x1024, 1024x1792, 1536x1024, 1024x1536, 1024x768, 768x1024";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("size must be one of {ACCEPTED_SIZES}")]
pub struct InvalidSize;

impl ImageSize {
    const ALL: [Self; 7] = [
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStyle {
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
}

/// Image bytes whose format has been checked.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    bytes: Bytes,
    format: ImageFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider returned data that is not a PNG, JPEG or WebP image")]
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

/// What the provider is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub model: ImageModel,
    /// The prompt with the style instruction appended.
    pub text: String,
    pub aspect_ratio: &'static str,
}

/// Why the provider gave no image. Each maps to one HTTP answer in `nb-http`.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No upstream key is configured: nothing was sent.
    #[error("image generation is not configured")]
    NotConfigured,
    /// The request cannot be served by this model (e.g. an aspect ratio it lacks).
    #[error("{0}")]
    Unsupported(String),
    /// Refused by the provider's safety system, or answered without an image.
    #[error("the provider returned no image: {reason}")]
    ContentRejected { reason: String },
    /// Too many generations are already waiting for the provider on this instance.
    #[error("too many generations are in flight")]
    Busy { retry_after: Duration },
    /// The provider's quota is exhausted, after retries.
    #[error("the provider is rate limiting us")]
    RateLimited { retry_after: Option<Duration> },
    /// The provider says this model does not exist (retired or misspelt).
    #[error("the provider does not know the model {model}")]
    ModelNotFound { model: String },
    /// The provider rejected our credentials: an operator error.
    #[error("the provider rejected our credentials")]
    CredentialsRejected,
    /// No answer in time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// 5xx after retries, unreachable, or an answer that cannot be understood.
    #[error("the provider failed: {0}")]
    Upstream(String),
}

impl ProviderError {
    /// The `error_code` recorded with a failed generation.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Unsupported(_) => "unsupported_request",
            Self::ContentRejected { .. } => "content_rejected",
            Self::Busy { .. } => "upstream_busy",
            Self::RateLimited { .. } => "upstream_rate_limited",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::CredentialsRejected => "upstream_credentials_rejected",
            Self::Timeout => "upstream_timeout",
            Self::Upstream(_) => "upstream_failed",
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

#[derive(Debug, thiserror::Error)]
#[error("the image could not be stored")]
pub struct StorageError(#[source] pub crate::error::BoxError);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationStatus {
    Succeeded,
    Failed,
}

impl GenerationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One row of the generation history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRecord {
    pub id: GenerationId,
    pub caller: AuthenticatedApiKey,
    pub prompt: Prompt,
    pub size: ImageSize,
    pub style: ImageStyle,
    pub model: ImageModel,
    pub status: GenerationStatus,
    pub error_code: Option<String>,
    pub object_key: Option<ObjectKey>,
    pub url: Option<String>,
    pub mime_type: Option<&'static str>,
    pub byte_size: Option<u64>,
    pub latency: Duration,
    pub created_at: OffsetDateTime,
}

/// A parsed generation request.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub size: ImageSize,
    pub style: ImageStyle,
    pub model: ImageModel,
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
    pub size: ImageSize,
    pub style: ImageStyle,
    pub model: ImageModel,
    pub mime_type: &'static str,
    pub created_at: OffsetDateTime,
    pub timings: GenerationTimings,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Runs generations: provider, then storage, then one transaction for history and usage.
#[derive(Clone)]
pub struct GenerationService {
    provider: Arc<dyn ImageProvider>,
    storage: Arc<dyn ObjectStorage>,
    generations: Arc<dyn GenerationRepository>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl fmt::Debug for GenerationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerationService").finish_non_exhaustive()
    }
}

impl GenerationService {
    pub fn new(
        provider: Arc<dyn ImageProvider>,
        storage: Arc<dyn ObjectStorage>,
        generations: Arc<dyn GenerationRepository>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self {
            provider,
            storage,
            generations,
            clock,
            ids,
        }
    }

    #[tracing::instrument(
        skip_all,
        fields(generation_id, key_id = %caller.key_id, model = %request.model, size = request.size.as_str())
    )]
    pub async fn generate(
        &self,
        caller: AuthenticatedApiKey,
        request: GenerationRequest,
    ) -> Result<Generation, GenerateError> {
        let id = GenerationId(self.ids.new_id());
        tracing::Span::current().record("generation_id", tracing::field::display(id));
        let started_at = self.clock.now();
        let image_request = ImageRequest {
            model: request.model.clone(),
            text: format!(
                "{}\n\n{}",
                request.prompt.as_str(),
                request.style.instruction()
            ),
            aspect_ratio: request.size.aspect_ratio(),
        };
        let mut record = GenerationRecord {
            id,
            caller,
            prompt: request.prompt,
            size: request.size,
            style: request.style,
            model: request.model,
            status: GenerationStatus::Failed,
            error_code: None,
            object_key: None,
            url: None,
            mime_type: None,
            byte_size: None,
            latency: Duration::ZERO,
            created_at: started_at,
        };

        let upstream_started = Instant::now();
        let provided = self.provider.generate(&image_request).await;
        let mut timings = GenerationTimings {
            upstream: upstream_started.elapsed(),
            ..GenerationTimings::default()
        };
        let image = match provided {
            Ok(image) => image,
            // Nothing was attempted: not worth a history row.
            Err(ProviderError::NotConfigured) => return Err(ProviderError::NotConfigured.into()),
            Err(error) => {
                return Err(self
                    .record_failure(record, error.code(), error.into())
                    .await);
            }
        };
        let key = ObjectKey::for_generation(id, started_at, image.format());
        let storage_started = Instant::now();
        let put = self.storage.put(&key, &image).await;
        timings.storage = storage_started.elapsed();
        let stored = match put {
            Ok(stored) => stored,
            Err(error) => {
                return Err(self
                    .record_failure(record, "storage_failed", error.into())
                    .await);
            }
        };

        record.status = GenerationStatus::Succeeded;
        record.object_key = Some(key);
        record.url = stored.url_is_lasting.then(|| stored.url.clone());
        record.mime_type = Some(image.format().mime_type());
        record.byte_size = Some(image.bytes().len() as u64);
        record.latency = self.elapsed_since(started_at);
        let database_started = Instant::now();
        self.generations.record_success(&record).await?;
        timings.database = database_started.elapsed();
        tracing::info!(
            latency_ms = record.latency.as_millis() as u64,
            "generation succeeded"
        );
        Ok(Generation {
            id,
            url: stored.url,
            prompt: record.prompt,
            size: record.size,
            style: record.style,
            model: record.model,
            mime_type: image.format().mime_type(),
            created_at: started_at,
            timings,
        })
    }

    /// Records the failure (best effort: the caller's error matters more) and returns `error`.
    async fn record_failure(
        &self,
        mut record: GenerationRecord,
        code: &str,
        error: GenerateError,
    ) -> GenerateError {
        record.error_code = Some(code.to_owned());
        record.latency = self.elapsed_since(record.created_at);
        tracing::warn!(error_code = code, error = %error, "generation failed");
        if let Err(db_error) = self.generations.record_failure(&record).await {
            tracing::error!(error = %db_error, "could not record a failed generation");
        }
        error
    }

    /// Usage of the user's keys over the last `days` UTC days (today included).
    pub async fn daily_usage(
        &self,
        user_id: UserId,
        days: u16,
    ) -> Result<Vec<DailyUsage>, RepositoryError> {
        let today = self.clock.now().to_offset(time::UtcOffset::UTC).date();
        let since = today - time::Duration::days(i64::from(days.max(1)) - 1);
        self.generations.daily_usage(user_id, since).await
    }

    fn elapsed_since(&self, started_at: OffsetDateTime) -> Duration {
        (self.clock.now() - started_at)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::ApiKeyId;
    use crate::ports::{
        MockClock, MockGenerationRepository, MockIdGenerator, MockImageProvider, MockObjectStorage,
    };
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
    const GEN: Uuid = Uuid::from_u128(0xabc);
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n rest of a png";
    const CALLER: AuthenticatedApiKey = AuthenticatedApiKey {
        key_id: ApiKeyId(Uuid::from_u128(1)),
        user_id: UserId(Uuid::from_u128(2)),
    };

    fn request() -> GenerationRequest {
        GenerationRequest {
            prompt: Prompt::parse("a banana".into()).unwrap(),
            size: ImageSize::Landscape16x9,
            style: ImageStyle::Artistic,
            model: AllowedModels::new(["gemini-3.1-flash-image".to_owned()])
                .unwrap()
                .default_model()
                .clone(),
        }
    }

    fn service(
        provider: MockImageProvider,
        storage: MockObjectStorage,
        generations: MockGenerationRepository,
    ) -> GenerationService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(GEN);
        GenerationService::new(
            Arc::new(provider),
            Arc::new(storage),
            Arc::new(generations),
            Arc::new(clock),
            Arc::new(ids),
        )
    }

    fn provider_returning_png() -> MockImageProvider {
        let mut provider = MockImageProvider::new();
        provider
            .expect_generate()
            .withf(|request| {
                request.aspect_ratio == "16:9"
                    && request.model.as_str() == "gemini-3.1-flash-image"
                    && request.text.starts_with("a banana\n\n")
                    && request.text.ends_with(ImageStyle::Artistic.instruction())
            })
            .times(1)
            .returning(|_| Ok(GeneratedImage::from_bytes(Bytes::from_static(PNG)).unwrap()));
        provider
    }

    fn failing_provider(error: fn() -> ProviderError) -> MockImageProvider {
        let mut provider = MockImageProvider::new();
        provider.expect_generate().returning(move |_| Err(error()));
        provider
    }

    #[tokio::test]
    async fn success_stores_the_image_and_records_it_with_usage() {
        let mut storage = MockObjectStorage::new();
        storage
            .expect_put()
            .withf(|key, image| {
                key.as_str() == format!("images/2026/11/25/gen_{GEN}.png")
                    && image.bytes().as_ref() == PNG
            })
            .times(1)
            .returning(|key, _| {
                Ok(StoredImage {
                    url: format!("https://cdn/{}", key.as_str()),
                    url_is_lasting: true,
                })
            });
        let mut generations = MockGenerationRepository::new();
        generations
            .expect_record_success()
            .withf(|record| {
                record.status == GenerationStatus::Succeeded
                    && record.id == GenerationId(GEN)
                    && record.caller == CALLER
                    && record.mime_type == Some("image/png")
                    && record.byte_size == Some(PNG.len() as u64)
                    && record
                        .url
                        .as_deref()
                        .is_some_and(|url| url.starts_with("https://cdn/images/"))
                    && record.error_code.is_none()
            })
            .times(1)
            .returning(|_| Ok(()));
        generations.expect_record_failure().never();

        let generation = service(provider_returning_png(), storage, generations)
            .generate(CALLER, request())
            .await
            .unwrap();
        assert_eq!(generation.id.to_string(), format!("gen_{GEN}"));
        assert_eq!(
            generation.url,
            format!("https://cdn/images/2026/11/25/gen_{GEN}.png")
        );
        assert_eq!(generation.mime_type, "image/png");
        assert_eq!(generation.created_at, NOW);
    }

    #[tokio::test]
    async fn expiring_urls_are_returned_but_not_recorded() {
        let mut storage = MockObjectStorage::new();
        storage.expect_put().returning(|_, _| {
            Ok(StoredImage {
                url: "https://signed?X-Amz-Expires=60".into(),
                url_is_lasting: false,
            })
        });
        let mut generations = MockGenerationRepository::new();
        generations
            .expect_record_success()
            .withf(|record| record.url.is_none() && record.object_key.is_some())
            .returning(|_| Ok(()));
        let generation = service(provider_returning_png(), storage, generations)
            .generate(CALLER, request())
            .await
            .unwrap();
        assert_eq!(generation.url, "https://signed?X-Amz-Expires=60");
    }

    #[tokio::test]
    async fn a_rejected_prompt_is_recorded_as_failed_and_not_counted() {
        let mut storage = MockObjectStorage::new();
        storage.expect_put().never();
        let mut generations = MockGenerationRepository::new();
        generations.expect_record_success().never();
        generations
            .expect_record_failure()
            .withf(|record| {
                record.status == GenerationStatus::Failed
                    && record.error_code.as_deref() == Some("content_rejected")
                    && record.url.is_none()
            })
            .times(1)
            .returning(|_| Ok(()));
        let provider = failing_provider(|| ProviderError::ContentRejected {
            reason: "SAFETY".into(),
        });
        let result = service(provider, storage, generations)
            .generate(CALLER, request())
            .await;
        assert!(matches!(
            result,
            Err(GenerateError::Provider(
                ProviderError::ContentRejected { .. }
            ))
        ));
    }

    #[tokio::test]
    async fn without_a_provider_key_nothing_is_stored_or_recorded() {
        let mut generations = MockGenerationRepository::new();
        generations.expect_record_failure().never();
        generations.expect_record_success().never();
        let provider = failing_provider(|| ProviderError::NotConfigured);
        let result = service(provider, MockObjectStorage::new(), generations)
            .generate(CALLER, request())
            .await;
        assert!(matches!(
            result,
            Err(GenerateError::Provider(ProviderError::NotConfigured))
        ));
    }

    #[tokio::test]
    async fn a_storage_failure_is_recorded_as_failed() {
        let mut storage = MockObjectStorage::new();
        storage
            .expect_put()
            .returning(|_, _| Err(StorageError("bucket gone".into())));
        let mut generations = MockGenerationRepository::new();
        generations.expect_record_success().never();
        generations
            .expect_record_failure()
            .withf(|record| record.error_code.as_deref() == Some("storage_failed"))
            .times(1)
            .returning(|_| Ok(()));
        let result = service(provider_returning_png(), storage, generations)
            .generate(CALLER, request())
            .await;
        assert!(matches!(result, Err(GenerateError::Storage(_))));
    }

    #[test]
    fn prompts_must_not_be_blank_or_too_long() {
        assert_eq!(Prompt::parse("  \n ".into()), Err(InvalidPrompt::Blank));
        assert_eq!(
            Prompt::parse("é".repeat(10_001)),
            Err(InvalidPrompt::TooLong)
        );
        assert!(Prompt::parse("é".repeat(10_000)).is_ok());
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
}
