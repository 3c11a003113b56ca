//! The ports a generation goes through: the image model upstream, the store of images, and the
//! record of generations.

use async_trait::async_trait;
use time::{Date, OffsetDateTime};

use super::error::{ConversionError, ProviderError, StorageError};
use super::model::{
    FetchedImage, GeneratedImage, GenerationId, GenerationRecord, ImageRequest, ObjectKey,
    OutputEncoding, ProvidedImage, SpooledImage, StoredImage,
};
use crate::accounts::model::UserId;
use crate::api_keys::model::{ApiKeyId, KeyUsage};
use crate::error::RepositoryError;
use crate::generation::stored::{HistoryFilter, ListedObject, StoredGeneration};
use crate::pagination::{Page, PageRequest};
use crate::usage::UsageFact;

/// The image model upstream.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ImageProvider: Send + Sync + 'static {
    /// One image for the request. MUST return `ProviderError::NotConfigured` without any
    /// network call when it has no credentials, `Unsupported` (naming the request field)
    /// without any network call when the model cannot serve the request, `ContentRejected`
    /// when the provider answered but gave no image, and never a partial or unverified image
    /// (see `GeneratedImage`); with the tokens the provider counted, when it says.
    async fn generate(&self, request: &ImageRequest) -> Result<ProvidedImage, ProviderError>;
}

/// Turns an image into the format a client asked for.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ImageConverter: Send + Sync + 'static {
    /// `image` re-encoded as `to` asks (same pixels). MUST NOT block the async workers, and
    /// MUST bound how many conversions run at once.
    async fn convert(
        &self,
        image: &GeneratedImage,
        to: OutputEncoding,
    ) -> Result<GeneratedImage, ConversionError>;
}

/// Where images are kept.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ObjectStorage: Send + Sync + 'static {
    /// Stores the image under `key` with its own content type and returns a URL where it can
    /// be fetched. A failed put MUST leave no partial object visible under `key`.
    async fn put(
        &self,
        key: &ObjectKey,
        image: &GeneratedImage,
    ) -> Result<StoredImage, StorageError>;

    /// As [`put`](Self::put), for an image spooled to a file: read from the file (or linked
    /// into place) without holding it whole in memory. The file is left for its owner.
    async fn put_spooled(
        &self,
        key: &ObjectKey,
        image: &SpooledImage,
    ) -> Result<StoredImage, StorageError>;

    /// The image stored under `key`, with the content type stored with it. MUST return
    /// `Ok(None)` when nothing is stored under `key` (and always, for storage that keeps
    /// nothing).
    async fn fetch(&self, key: &ObjectKey) -> Result<Option<FetchedImage>, StorageError>;

    /// A URL where the image under `key` can be fetched now (a presigned one is made
    /// afresh), or `Ok(None)` for storage that keeps nothing. Nothing is read.
    async fn url(&self, key: &ObjectKey) -> Result<Option<String>, StorageError>;

    /// Removes the image under `key`. MUST succeed when nothing is stored there (deleting
    /// is repeatable).
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// Every object whose key starts with `prefix` (for the orphan sweep); empty for storage
    /// that keeps nothing.
    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, StorageError>;
}

/// Generation history and usage counts.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait GenerationRepository: Send + Sync + 'static {
    /// Inserts the generation. A succeeded one also adds one to its key's usage for the UTC
    /// day of `created_at`, in the same transaction: both or neither. A failed one MUST NOT
    /// change usage.
    async fn record(&self, generation: &GenerationRecord) -> Result<(), RepositoryError>;

    /// What each of the user's keys made on each UTC day from `from` to `to` (both
    /// included), successes only, deleted ones still counted; split by model too when
    /// `by_model`. Days and keys that made nothing are left out.
    async fn usage_facts(
        &self,
        user_id: UserId,
        from: Date,
        to: Date,
        by_model: bool,
    ) -> Result<Vec<UsageFact>, RepositoryError>;

    /// What each key made on the UTC day and in the calendar month holding `at`; keys that
    /// made nothing are left out.
    async fn key_usage(
        &self,
        keys: &[ApiKeyId],
        at: OffsetDateTime,
    ) -> Result<Vec<(ApiKeyId, KeyUsage)>, RepositoryError>;
}

/// The record of generations, as their owners read and delete it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait HistoryRepository: Send + Sync + 'static {
    /// One page of the user's generations matching `filter`, newest first (by `created_at`,
    /// then id): a page does not shift when newer generations arrive.
    async fn list_generations(
        &self,
        user_id: UserId,
        filter: &HistoryFilter,
        page: PageRequest,
    ) -> Result<Page<StoredGeneration>, RepositoryError>;

    /// One of the user's generations. MUST return `Ok(None)` when no generation with this id
    /// is theirs.
    async fn find_generation(
        &self,
        user_id: UserId,
        id: GenerationId,
    ) -> Result<Option<StoredGeneration>, RepositoryError>;

    /// Marks one of the user's generations deleted at `at` (its URL forgotten; its usage
    /// stays). MUST return `Ok(false)` when it is not theirs; repeatable.
    async fn mark_generation_deleted(
        &self,
        user_id: UserId,
        id: GenerationId,
        at: OffsetDateTime,
    ) -> Result<bool, RepositoryError>;

    /// Which of `keys` a generation row names (deleted or not).
    async fn named_object_keys(
        &self,
        keys: &[ObjectKey],
    ) -> Result<Vec<ObjectKey>, RepositoryError>;

    /// Which of `ids` have a generation row that is not deleted.
    async fn live_generation_ids(
        &self,
        ids: &[GenerationId],
    ) -> Result<Vec<GenerationId>, RepositoryError>;
}
