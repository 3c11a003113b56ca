//! Image generation: what a request may ask for ([`model`]), how it can fail ([`error`]), the
//! service that runs one ([`service`]), the record of them ([`history`]), and a cap on calls
//! in flight to the provider ([`concurrency_limit`]).

mod concurrency_limit;
mod error;
mod history;
mod model;
mod service;

pub use concurrency_limit::ConcurrencyLimitedProvider;
pub use error::{GenerateError, ProviderError, StorageError};
pub use history::{
    GenerationStatus, GenerationView, HistoryError, HistoryFilter, HistoryPorts, HistoryScope,
    HistoryService, InvalidGenerationId, InvalidGenerationStatus, ListedObject, ORPHAN_GRACE,
    SWEPT_DAYS, StoredGeneration, SweepReport, day_prefix,
};
pub use model::{
    ACCEPTED_SIZES, AllowedModels, FetchedImage, GeneratedImage, Generation, GenerationId,
    GenerationOutcome, GenerationRecord, GenerationRequest, GenerationTimings, ImageCount,
    ImageFormat, ImageModel, ImageRequest, ImageSize, ImageStyle, InputImage, InputImageLimits,
    InputImages, InvalidGenerationRequest, InvalidImageCount, InvalidInputImages, InvalidPrompt,
    InvalidSize, InvalidStyle, MASK_INSTRUCTION, MAX_IMAGES_PER_REQUEST, MAX_PROMPT_CHARS,
    NotAnImage, ObjectKey, Prompt, RawGenerationRequest, StoredImage, UnknownModel,
    image_dimensions, size_label,
};
pub use service::{GenerationBatch, GenerationPorts, GenerationService};
