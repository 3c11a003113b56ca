//! The service that runs one generation: provider, then storage, then one transaction for
//! history and usage.
//!
//! A generation that returns an image is stored, recorded as `succeeded` and counted as usage
//! in one transaction. One that returns no image is recorded as `failed` and never counted;
//! one the provider was never asked for (not configured, unsupported, shed under load) is not
//! recorded at all.

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::breaker::ModelBreaker;
use super::catalog::ModelPrice;
use super::error::{ConversionError, GenerateError, ProviderError, StorageError};
use super::memory_budget::{ImageMemoryBudget, ImageMemoryScope};
use super::model::{
    AllowedModels, GeneratedImage, Generation, GenerationId, GenerationOutcome, GenerationRecord,
    GenerationRequest, GenerationTimings, ImageCount, ImageData, ImageModel, ImageRequest,
    ObjectKey, image_dimensions,
};
use super::tokens::TokenUsage;
use crate::accounts::model::UserId;
use crate::api_keys::model::{AuthenticatedApiKey, KeyMode};
use crate::error::RepositoryError;
use crate::generation::error::ConversationError;
use crate::generation::model::{
    ConversationTurn, InputImage, ModelTurnContent, ModelTurnPart, StoredTurn,
};
use crate::generation::ports::{
    GenerationRepository, HistoryRepository, ImageConverter, ImageProvider, ObjectStorage,
};
use crate::generation::stored::GenerationStatus;
use crate::money::Usd;
use crate::quota::model::{BudgetStanding, QuotaStanding};
use crate::quota::ports::QuotaRepository;
use crate::quota::reservation::{Ask, ReserveError, Reserved};
use crate::system::{Clock, IdGenerator};
use crate::usage::{UsageDimension, UsageQuery, UsageRow, group_usage};

/// The ports a [`GenerationService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct GenerationPorts {
    /// The image model, for live keys.
    pub provider: Arc<dyn ImageProvider>,
    /// Deterministic local images, for test keys: never the network.
    pub test_provider: Arc<dyn ImageProvider>,
    pub storage: Arc<dyn ObjectStorage>,
    /// Turns images into the format asked for.
    pub converter: Arc<dyn ImageConverter>,
    pub generations: Arc<dyn GenerationRepository>,
    /// Earlier generations, read to continue a conversation.
    pub history: Arc<dyn HistoryRepository>,
    pub quotas: Arc<dyn QuotaRepository>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

/// What a streamed batch tells as it goes.
#[derive(Debug)]
pub enum BatchEvent {
    /// The work started (the images are reserved); where the tightest quota and budget stand.
    Started(Standings),
    /// One image, as soon as it was made (stored, recorded and counted).
    Made(Box<Generation>),
}

/// Where the caller's tightest quota and tightest budget stand (for the answer's headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standings {
    pub quota: Option<QuotaStanding>,
    pub budget: Option<BudgetStanding>,
}

impl Standings {
    pub(crate) fn of(reserved: Option<&Reserved>) -> Self {
        reserved.map_or_else(Self::default, |reserved| Self {
            quota: reserved.tightest,
            budget: reserved.tightest_budget,
        })
    }

    /// Where they stand when a reservation refused, or not at all.
    pub fn of_refusal(error: &ReserveError) -> Self {
        match error {
            ReserveError::Exceeded(standing) => Self {
                quota: Some(*standing),
                budget: None,
            },
            ReserveError::OverBudget(standing) => Self {
                quota: None,
                budget: Some(*standing),
            },
            _ => Self::default(),
        }
    }
}

/// What a request for images came to, and where the tightest quota and budget stand after it.
#[derive(Debug)]
pub struct GenerationBatch {
    pub result: Result<Vec<Generation>, GenerateError>,
    pub standings: Standings,
}

/// What a dry run found: the request would be served, at about this cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationEstimate {
    /// The budget's estimate: the per-image price at the resolution asked × the images.
    pub cost: Usd,
    pub images: u64,
    pub standings: Standings,
}

/// Runs generations and reports usage.
#[derive(Clone)]
pub struct GenerationService {
    pub(crate) ports: GenerationPorts,
    models: AllowedModels,
    /// The longest conversation, in turns (`NB_MAX_EDIT_TURNS`).
    max_edit_turns: usize,
    /// Skips models failing repeatedly in fallback chains.
    breaker: Arc<ModelBreaker>,
    /// Fallbacks are tried only while the first model's upstream deadline has not passed.
    upstream_deadline: Duration,
    /// Bytes of images held whole at once (conversions, images in answers).
    image_memory: ImageMemoryBudget,
}

/// Where a generation's outcome is written.
#[derive(Clone, Copy)]
pub(crate) enum RecordVia<'a> {
    /// Straight into the history (a synchronous request): failures too.
    History,
    /// As the end of a job, while its worker holds the lease: only a success is written here
    /// (with the job's reservation settled); a failure is returned for the worker to retry
    /// or fail the job.
    Job {
        jobs: &'a dyn super::jobs::ports::JobRepository,
        job: &'a super::jobs::model::ClaimedJob,
    },
}

/// Conversations are at most this many turns long unless configured.
pub const DEFAULT_MAX_EDIT_TURNS: usize = 10;

impl fmt::Debug for GenerationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerationService")
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// Generation as the HTTP adapter uses it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Generations: Send + Sync + 'static {
    /// The models clients may ask for; the first is the default.
    fn models(&self) -> &AllowedModels;

    /// `count` images for one request, each its own provider call, all at once; each is
    /// stored, recorded and counted on its own. When a day or month quota applies, the
    /// images are reserved first (refused when over) and those not made are given back.
    /// The result holds the images made (fewer than `count` when some failed: those that
    /// succeeded are counted and must reach the client), or the first failure when none was.
    async fn generate_images(
        &self,
        caller: AuthenticatedApiKey,
        request: &GenerationRequest,
        count: ImageCount,
    ) -> GenerationBatch;

    /// The same, telling `events` as it goes: `Started` once the images are reserved (or
    /// when no quota applies), then each image as it is made. Nothing is sent when the
    /// request is refused before any work. The work goes on when `events` is closed.
    async fn generate_images_streamed(
        &self,
        caller: AuthenticatedApiKey,
        request: GenerationRequest,
        count: ImageCount,
        events: tokio::sync::mpsc::UnboundedSender<BatchEvent>,
    ) -> GenerationBatch;

    /// What `generate_images` would decide, without doing it: every check (the conversation,
    /// the key, every quota and budget, without reserving) and the cost estimate. Never calls
    /// the provider. Refused as `generate_images` would be.
    async fn estimate(
        &self,
        caller: AuthenticatedApiKey,
        request: &GenerationRequest,
        count: ImageCount,
    ) -> Result<GenerationEstimate, GenerateError>;

    /// The user's usage over the query's days, grouped as it asks.
    async fn usage(
        &self,
        user_id: UserId,
        query: &UsageQuery,
    ) -> Result<Vec<UsageRow>, RepositoryError>;

    /// The clock's reading (for parsing a usage query relative to today).
    fn now(&self) -> OffsetDateTime;
}

/// The image in memory: read from its spool file when it was spooled.
async fn whole(image: ImageData) -> Result<GeneratedImage, StorageError> {
    match image {
        ImageData::InMemory(image) => Ok(image),
        ImageData::Spooled(spooled) => {
            let bytes = spooled
                .file()
                .read()
                .await
                .map_err(|error| StorageError::Unavailable(Box::new(error)))?;
            GeneratedImage::from_bytes(bytes).map_err(|error| StorageError::Failed(Box::new(error)))
        }
    }
}

impl GenerationService {
    pub fn new(ports: GenerationPorts, models: AllowedModels) -> Self {
        Self {
            ports,
            models,
            max_edit_turns: DEFAULT_MAX_EDIT_TURNS,
            breaker: Arc::new(ModelBreaker::default()),
            upstream_deadline: Duration::from_secs(120),
            image_memory: ImageMemoryBudget::default(),
        }
    }

    /// Images to convert, or that answers carry, are held whole at most `bytes` at once
    /// (`NB_MAX_IMAGE_BYTES_IN_FLIGHT`); more wait for room.
    pub fn with_image_memory_budget(mut self, bytes: u64) -> Self {
        self.image_memory = ImageMemoryBudget::new(bytes);
        self
    }

    /// Fallback chains skip a model for `cooldown` after it failed 5 requests in a row, and
    /// try the next model only while `upstream_deadline` (from the first model's call) has not
    /// passed.
    pub fn with_fallback_limits(mut self, cooldown: Duration, upstream_deadline: Duration) -> Self {
        self.breaker = Arc::new(ModelBreaker::new(cooldown));
        self.upstream_deadline = upstream_deadline;
        self
    }

    /// Conversations at most `turns` long (the new turn included).
    pub fn with_max_edit_turns(mut self, turns: usize) -> Self {
        self.max_edit_turns = turns.max(1);
        self
    }

    pub(crate) async fn generate(
        &self,
        caller: AuthenticatedApiKey,
        request: GenerationRequest,
        history: &[ConversationTurn],
        via: RecordVia<'_>,
    ) -> Result<Generation, GenerateError> {
        let memory = self.image_memory.scope();
        self.generate_in(caller, request, history, via, &memory)
            .await
    }

    /// One image, held in `memory` (its request's scope) while it is needed whole.
    #[tracing::instrument(
        skip_all,
        fields(generation_id, key_id = %caller.key_id, model = %request.model, size = %request.size, inputs = request.inputs.images().len())
    )]
    pub(crate) async fn generate_in(
        &self,
        caller: AuthenticatedApiKey,
        request: GenerationRequest,
        history: &[ConversationTurn],
        via: RecordVia<'_>,
        memory: &ImageMemoryScope,
    ) -> Result<Generation, GenerateError> {
        let ports = &self.ports;
        let (id, submitted_at) = match via {
            RecordVia::History => (GenerationId(ports.ids.new_id()), None),
            RecordVia::Job { job, .. } => (job.id, Some(job.created_at)),
        };
        tracing::Span::current().record("generation_id", tracing::field::display(id));
        let started_at = ports.clock.now();
        // A job's generation was created when it was submitted: its latency counts from then.
        let created_at = submitted_at.unwrap_or(started_at);
        let mut image_request = request.image_request();
        image_request.history = history.to_vec();
        let record = |outcome, usage, turn| GenerationRecord {
            id,
            caller,
            prompt: request.prompt.clone(),
            size: request.size.clone(),
            shape: request.shape,
            style: request.style,
            model: request.model.clone(),
            latency: self.elapsed_since(created_at),
            created_at,
            usage,
            previous: request.previous,
            turn,
            outcome,
        };

        let (provided, made_by) = self
            .through_the_chain(&caller, &request, &image_request, history)
            .await;
        let mut timings = GenerationTimings {
            upstream: self.elapsed_since(started_at),
            ..GenerationTimings::default()
        };
        let (image, usage, parts, encoded_as_asked) = match provided {
            Ok(provided) => (
                provided.image,
                provided.usage,
                provided.parts,
                provided.encoded_as_asked,
            ),
            Err(error) if error.nothing_was_attempted() => return Err(error.into()),
            Err(error) => {
                let code = error.code();
                return Err(self
                    .record_failure(
                        record(GenerationOutcome::Failed { code }, None, None),
                        error.into(),
                        via,
                    )
                    .await);
            }
        };
        // A failure from here on is recorded with what Google counted (it was paid for).
        let failed_with = |code| record(GenerationOutcome::Failed { code }, usage, None);
        // The format asked for, when it is not what the model made.
        let conversion = request
            .output
            .filter(|output| !encoded_as_asked && output.converts(image.format()));
        // An image to convert, or that the answer carries, is needed whole: held in memory
        // under the budget, read back when it was spooled.
        let (image, held_memory) = if conversion.is_some() || request.image_in_answer {
            let held = memory.hold(image.len()).await;
            match whole(image).await {
                Ok(image) => (ImageData::InMemory(image), Some(Arc::new(held))),
                Err(error) => {
                    let failed = failed_with(error.code());
                    return Err(self.record_failure(failed, error.into(), via).await);
                }
            }
        } else {
            (image, None)
        };
        let image = match conversion {
            Some(output) => {
                let converted = match image.in_memory() {
                    Some(image) => ports.converter.convert(image, output).await,
                    // Never: it was made whole above.
                    None => Err(ConversionError(
                        "an image to convert was not in memory".into(),
                    )),
                };
                match converted {
                    Ok(converted) => ImageData::InMemory(converted),
                    Err(error) => {
                        let failed = failed_with("conversion_failed");
                        return Err(self.record_failure(failed, error.into(), via).await);
                    }
                }
            }
            None => image,
        };
        let dimensions = image_dimensions(image.head());
        let key = ObjectKey::for_generation(id, started_at, image.format());
        let storage_started = ports.clock.now();
        let put = match &image {
            ImageData::InMemory(image) => ports.storage.put(&key, image).await,
            ImageData::Spooled(image) => ports.storage.put_spooled(&key, image).await,
        };
        let stored = match put {
            Ok(stored) => stored,
            Err(error) => {
                let failed = failed_with(error.code());
                return Err(self.record_failure(failed, error.into(), via).await);
            }
        };
        // The images sent are kept, so that the generation can be continued.
        let mut input_keys = Vec::with_capacity(image_request.images.len());
        for (index, input) in image_request.images.iter().enumerate() {
            let input_key = ObjectKey::for_input(id, started_at, index, input.format());
            if let Err(error) = ports.storage.put(&input_key, input).await {
                self.remove_unrecorded(std::iter::once(&key).chain(&input_keys))
                    .await;
                let failed = failed_with(error.code());
                return Err(self.record_failure(failed, error.into(), via).await);
            }
            input_keys.push(input_key);
        }
        timings.storage = self.elapsed_since(storage_started);
        let turn = StoredTurn {
            text: image_request.text.clone(),
            input_keys,
            parts,
        };

        let cost = Self::cost_of(&caller, &made_by, &request, usage.as_ref());
        let mut succeeded = record(
            GenerationOutcome::Succeeded {
                object_key: key,
                url: stored.url_is_lasting.then(|| stored.url.clone()),
                format: image.format(),
                bytes: image.len(),
                dimensions,
                cost,
            },
            usage,
            Some(turn),
        );
        // Counted, priced and shown as the model that made it.
        succeeded.model = made_by.clone();
        let database_started = ports.clock.now();
        let written = match via {
            RecordVia::History => ports.generations.record(&succeeded).await,
            RecordVia::Job { jobs, job } => {
                let settlement = job
                    .reservation
                    .as_ref()
                    .map(|reservation| reservation.settlement(1, cost));
                match jobs
                    .succeed(job, &succeeded, settlement.unwrap_or_default())
                    .await
                {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(RepositoryError::unexpected(
                        "the job's lease ran out: another worker took it",
                    )),
                    Err(error) => Err(error),
                }
            }
        };
        if let Err(error) = written {
            // No row will name the images: remove them now (the orphan sweep would later).
            if let (GenerationOutcome::Succeeded { object_key, .. }, Some(turn)) =
                (&succeeded.outcome, &succeeded.turn)
            {
                self.remove_unrecorded(std::iter::once(object_key).chain(&turn.input_keys))
                    .await;
            }
            return Err(error.into());
        }
        timings.database = self.elapsed_since(database_started);
        tracing::info!(
            latency_ms = succeeded.latency.as_millis() as u64,
            "generation succeeded"
        );
        Ok(Generation {
            id,
            url: stored.url,
            prompt: succeeded.prompt,
            sent_text: image_request.text,
            size: succeeded.size,
            shape: succeeded.shape,
            style: succeeded.style,
            requested_model: (made_by.as_str() != request.model.as_str())
                .then(|| request.model.clone()),
            model: succeeded.model,
            dimensions,
            usage,
            cost,
            previous: request.previous,
            image,
            held_memory,
            created_at,
            timings,
        })
    }

    /// Removes stored images no row will name (best effort).
    async fn remove_unrecorded(&self, keys: impl Iterator<Item = &ObjectKey>) {
        for key in keys {
            if let Err(error) = self.ports.storage.delete(key).await {
                tracing::warn!(%error, object_key = key.as_str(), "could not remove an unrecorded image");
            }
        }
    }

    /// The earlier turns of the conversation `previous` ends, oldest first, with their images
    /// read back from the storage. Nothing is sent anywhere.
    pub(crate) async fn conversation(
        &self,
        caller: &AuthenticatedApiKey,
        previous: GenerationId,
    ) -> Result<Vec<ConversationTurn>, GenerateError> {
        let mut turns = Vec::new();
        let mut next = Some(previous);
        while let Some(id) = next {
            if turns.len() + 1 >= self.max_edit_turns {
                return Err(ConversationError::TooLong {
                    max: self.max_edit_turns,
                }
                .into());
            }
            let earlier = self
                .ports
                .history
                .find_generation(caller.user_id, id)
                .await?;
            let Some(earlier) = earlier else {
                return Err(if turns.is_empty() {
                    ConversationError::NotFound
                } else {
                    ConversationError::Unusable("an earlier turn of the conversation is gone")
                }
                .into());
            };
            match earlier.status {
                GenerationStatus::Succeeded => {}
                GenerationStatus::Failed => {
                    return Err(ConversationError::Unusable(
                        "that generation failed: it has no image to continue from",
                    )
                    .into());
                }
                GenerationStatus::Deleted => {
                    return Err(ConversationError::Unusable(
                        "a generation of that conversation was deleted",
                    )
                    .into());
                }
                GenerationStatus::Queued | GenerationStatus::Running => {
                    return Err(ConversationError::Unusable(
                        "that generation has not finished yet: continue it once it has succeeded",
                    )
                    .into());
                }
                GenerationStatus::Canceled => {
                    return Err(ConversationError::Unusable(
                        "that generation was canceled: it has no image to continue from",
                    )
                    .into());
                }
            }
            let (Some(turn), Some(output_key)) = (earlier.turn, earlier.object_key) else {
                return Err(ConversationError::Unusable(
                    "that generation was made before conversations were kept",
                )
                .into());
            };
            let output = self.read_back(&output_key).await?;
            let mut images = Vec::with_capacity(turn.input_keys.len());
            for key in &turn.input_keys {
                images.push(self.read_back(key).await?);
            }
            let mut model_parts: Vec<ModelTurnPart> = turn
                .parts
                .into_iter()
                .map(|part| ModelTurnPart {
                    content: match part.text {
                        Some(text) => ModelTurnContent::Text(text),
                        None => ModelTurnContent::Image(output.clone()),
                    },
                    thought_signature: part.thought_signature,
                })
                .collect();
            if model_parts.is_empty() {
                model_parts.push(ModelTurnPart {
                    content: ModelTurnContent::Image(output),
                    thought_signature: None,
                });
            }
            turns.push(ConversationTurn {
                text: turn.text,
                images,
                model_parts,
            });
            next = earlier.previous;
        }
        turns.reverse();
        Ok(turns)
    }

    async fn read_back(&self, key: &ObjectKey) -> Result<InputImage, GenerateError> {
        let fetched = self
            .ports
            .storage
            .fetch(key)
            .await?
            .ok_or(ConversationError::Unusable(
                "an image of that conversation is no longer stored (or the storage keeps none)",
            ))?;
        InputImage::from_bytes(fetched.bytes).map_err(|_| {
            ConversationError::Unusable("a stored image of that conversation is not an image")
                .into()
        })
    }

    /// A batch of `count` images; see [`Generations::generate_images`].
    async fn run_batch(
        &self,
        caller: AuthenticatedApiKey,
        request: &GenerationRequest,
        count: ImageCount,
        events: Option<&tokio::sync::mpsc::UnboundedSender<BatchEvent>>,
    ) -> GenerationBatch {
        let history = match request.previous {
            Some(previous) => match self.conversation(&caller, previous).await {
                Ok(history) => history,
                Err(error) => {
                    return GenerationBatch {
                        result: Err(error),
                        standings: Standings::default(),
                    };
                }
            },
            None => Vec::new(),
        };
        let ask = Self::ask(&caller, request, count);
        let reserved = if caller.quota_applies {
            match self
                .ports
                .quotas
                .reserve(&caller, ask, self.ports.clock.now())
                .await
            {
                Ok(reserved) => Some(reserved),
                Err(error) => {
                    return GenerationBatch {
                        standings: Standings::of_refusal(&error),
                        result: Err(error.into()),
                    };
                }
            }
        } else {
            None
        };
        if let Some(events) = events {
            let _ = events.send(BatchEvent::Started(Standings::of(reserved.as_ref())));
        }
        // Each image as it is made (in the order they finish); they are answered together, so
        // they share a memory scope.
        let memory = self.image_memory.scope();
        let mut pending: futures_util::stream::FuturesUnordered<_> = (0..count.get())
            .map(|_| {
                self.generate_in(
                    caller,
                    request.clone(),
                    &history,
                    RecordVia::History,
                    &memory,
                )
            })
            .collect();
        let mut made = Vec::with_capacity(count.get());
        let mut first_failure = None;
        while let Some(result) = futures_util::StreamExt::next(&mut pending).await {
            match result {
                Ok(generation) => {
                    if let Some(events) = events {
                        let _ = events.send(BatchEvent::Made(Box::new(generation.clone())));
                    }
                    made.push(generation);
                }
                Err(error) => {
                    first_failure.get_or_insert(error);
                }
            }
        }
        let mut standings = Standings::of(reserved.as_ref());
        if let Some(reserved) = &reserved {
            let cost: Usd = made.iter().map(|generation| generation.cost).sum();
            let settlement = reserved.reservation.settlement(made.len() as u64, cost);
            if settlement.unmade_images > 0 || settlement.cost_change_nanos != 0 {
                match self
                    .ports
                    .quotas
                    .settle(&reserved.reservation, settlement)
                    .await
                {
                    Ok(()) => {
                        if let Some(standing) = &mut standings.quota {
                            standing.used = standing.used.saturating_sub(settlement.unmade_images);
                        }
                        if let Some(standing) = &mut standings.budget {
                            standing.spent = Usd::from_nanos(
                                standing
                                    .spent
                                    .nanos()
                                    .saturating_add(settlement.cost_change_nanos),
                            );
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, unmade = settlement.unmade_images, "could not settle a reservation");
                    }
                }
            }
        }
        let result = match first_failure {
            Some(error) if made.is_empty() => Err(error),
            _ => Ok(made),
        };
        GenerationBatch { result, standings }
    }

    /// What a batch reserves: its images and the model's per-image price at the resolution
    /// asked × the images.
    pub(crate) fn ask(
        caller: &AuthenticatedApiKey,
        request: &GenerationRequest,
        count: ImageCount,
    ) -> Ask {
        let images = count.get() as u64;
        let estimate = Self::price_for(caller, &request.model).map_or(Usd::ZERO, |price| {
            price.estimate(request.shape.resolution, images)
        });
        Ask { images, estimate }
    }

    /// What one image `model` made at the provider cost.
    fn cost_of(
        caller: &AuthenticatedApiKey,
        model: &ImageModel,
        request: &GenerationRequest,
        usage: Option<&TokenUsage>,
    ) -> Usd {
        Self::price_for(caller, model).map_or(Usd::ZERO, |price| {
            price.cost(usage, request.shape.resolution)
        })
    }

    /// The price the caller pays for the model's images: none for a test key (its images
    /// cost nothing) or an unpriced model.
    fn price_for<'a>(
        caller: &AuthenticatedApiKey,
        model: &'a ImageModel,
    ) -> Option<&'a ModelPrice> {
        match caller.mode {
            KeyMode::Live => model.spec().price.as_ref(),
            KeyMode::Test => None,
        }
    }

    /// The provider's answer for the request, from its model or, when that model is
    /// overloaded, rate limited, failing, slow or gone, from the next model of its fallback
    /// chain (skipping models whose breaker is open while a later one remains), while the
    /// first call's upstream deadline lasts; and the model that answered.
    async fn through_the_chain(
        &self,
        caller: &AuthenticatedApiKey,
        request: &GenerationRequest,
        image_request: &ImageRequest,
        history: &[ConversationTurn],
    ) -> (
        Result<super::model::ProvidedImage, ProviderError>,
        ImageModel,
    ) {
        let provider = match caller.mode {
            KeyMode::Live => &self.ports.provider,
            KeyMode::Test => &self.ports.test_provider,
        };
        if request.fallbacks.is_empty() {
            return (
                provider.generate(image_request).await,
                request.model.clone(),
            );
        }
        let chain: Vec<&ImageModel> = std::iter::once(&request.model)
            .chain(&request.fallbacks)
            .collect();
        let deadline = self.ports.clock.now() + self.upstream_deadline;
        let mut last: Option<(Result<_, ProviderError>, ImageModel)> = None;
        for (position, model) in chain.iter().enumerate() {
            let now = self.ports.clock.now();
            let later_ones = position + 1 < chain.len();
            if later_ones && self.breaker.is_open(model.as_str(), now) {
                tracing::info!(model = %model, "skipped: its breaker is open");
                continue;
            }
            if last.is_some() && now >= deadline {
                break;
            }
            let result = if position == 0 {
                provider.generate(image_request).await
            } else {
                let mut fallback = request.clone();
                fallback.model = (*model).clone();
                let mut fallback_request = fallback.image_request();
                fallback_request.history = history.to_vec();
                provider.generate(&fallback_request).await
            };
            match &result {
                Ok(_) => {
                    self.breaker.succeeded(model.as_str());
                    if position > 0 {
                        metrics::counter!("model_fallbacks_total", "from" => request.model.as_str().to_owned(), "to" => model.as_str().to_owned()).increment(1);
                        tracing::info!(requested = %request.model, model = %model, "a fallback model made the image");
                    }
                    return (result, (*model).clone());
                }
                Err(error) if error.falls_back() => {
                    self.breaker.failed(model.as_str(), now);
                    if later_ones {
                        tracing::warn!(model = %model, %error, "the model failed: trying the next of its fallback chain");
                    }
                    last = Some((result, (*model).clone()));
                }
                // A fallback that cannot serve this request (a ratio it lacks): the next one.
                Err(ProviderError::Unsupported { .. }) if position > 0 => {}
                Err(_) => return (result, (*model).clone()),
            }
        }
        match last {
            Some(last) => last,
            // Every model was skipped or could not serve it: the one asked for answers.
            None => (
                provider.generate(image_request).await,
                request.model.clone(),
            ),
        }
    }

    /// Records the failure (best effort: the caller's error matters more) and returns `error`.
    async fn record_failure(
        &self,
        failed: GenerationRecord,
        error: GenerateError,
        via: RecordVia<'_>,
    ) -> GenerateError {
        tracing::warn!(error_code = failed.outcome_code(), error = %error, "generation failed");
        if let RecordVia::Job { .. } = via {
            return error;
        }
        if let Err(db_error) = self.ports.generations.record(&failed).await {
            tracing::error!(error = %db_error, "could not record a failed generation");
        }
        error
    }

    fn elapsed_since(&self, started_at: OffsetDateTime) -> Duration {
        (self.ports.clock.now() - started_at)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }
}

#[async_trait]
impl Generations for GenerationService {
    fn models(&self) -> &AllowedModels {
        &self.models
    }

    async fn generate_images(
        &self,
        caller: AuthenticatedApiKey,
        request: &GenerationRequest,
        count: ImageCount,
    ) -> GenerationBatch {
        self.run_batch(caller, request, count, None).await
    }

    async fn generate_images_streamed(
        &self,
        caller: AuthenticatedApiKey,
        request: GenerationRequest,
        count: ImageCount,
        events: tokio::sync::mpsc::UnboundedSender<BatchEvent>,
    ) -> GenerationBatch {
        self.run_batch(caller, &request, count, Some(&events)).await
    }

    async fn estimate(
        &self,
        caller: AuthenticatedApiKey,
        request: &GenerationRequest,
        count: ImageCount,
    ) -> Result<GenerationEstimate, GenerateError> {
        if let Some(previous) = request.previous {
            self.conversation(&caller, previous).await?;
        }
        let ask = Self::ask(&caller, request, count);
        let standings = if caller.quota_applies {
            let checked = self
                .ports
                .quotas
                .check(&caller, ask, self.ports.clock.now())
                .await?;
            Standings::of(Some(&checked))
        } else {
            Standings::default()
        };
        Ok(GenerationEstimate {
            cost: ask.estimate,
            images: ask.images,
            standings,
        })
    }

    async fn usage(
        &self,
        user_id: UserId,
        query: &UsageQuery,
    ) -> Result<Vec<UsageRow>, RepositoryError> {
        let facts = self
            .ports
            .generations
            .usage_facts(
                user_id,
                query.from,
                query.to,
                query.by(UsageDimension::Model),
            )
            .await?;
        Ok(group_usage(facts, query))
    }

    fn now(&self) -> OffsetDateTime {
        self.ports.clock.now()
    }
}

impl GenerationRecord {
    fn outcome_code(&self) -> &'static str {
        match &self.outcome {
            GenerationOutcome::Succeeded { .. } => "succeeded",
            GenerationOutcome::Failed { code } => code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::model::ApiKeyId;
    use crate::generation::error::{ProviderError, StorageError};
    use crate::generation::model::{
        GeneratedImage, ImageFormat, ImageShape, ImageStyle, InputImages, PixelSize, Prompt,
        ProvidedImage, StoredImage,
    };
    use crate::generation::ports::{
        MockGenerationRepository, MockImageProvider, MockObjectStorage,
    };
    use crate::system::{MockClock, MockIdGenerator};
    use bytes::Bytes;
    use std::sync::Mutex;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
    const GEN: Uuid = Uuid::from_u128(0xabc);
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n rest of a png";
    const CALLER: AuthenticatedApiKey =
        AuthenticatedApiKey::unlimited(ApiKeyId(Uuid::from_u128(1)), UserId(Uuid::from_u128(2)));

    fn models() -> AllowedModels {
        AllowedModels::new(["gemini-3.1-flash-image".to_owned()]).unwrap()
    }

    fn request() -> GenerationRequest {
        GenerationRequest {
            prompt: Prompt::parse("a banana".into()).unwrap(),
            size: "1792x1024".into(),
            shape: ImageShape::for_size(
                models().default_model(),
                Some(PixelSize {
                    width: 1792,
                    height: 1024,
                }),
            ),
            style: ImageStyle::Artistic,
            model: models().default_model().clone(),
            inputs: InputImages::none(),
            previous: None,
            output: None,
            fallbacks: Vec::new(),
            image_in_answer: false,
        }
    }

    /// A clock that moves by `step` on every reading, so durations are exact.
    fn ticking_clock(step: time::Duration) -> MockClock {
        let now = Mutex::new(NOW);
        let mut clock = MockClock::new();
        clock.expect_now().returning(move || {
            let mut now = now.lock().unwrap();
            let reading = *now;
            *now += step;
            reading
        });
        clock
    }

    fn service_with_clock(
        provider: MockImageProvider,
        storage: MockObjectStorage,
        generations: MockGenerationRepository,
        clock: MockClock,
    ) -> GenerationService {
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(GEN);
        GenerationService::new(
            GenerationPorts {
                provider: Arc::new(provider),
                // Any call to it fails the test: live keys never get test images.
                test_provider: Arc::new(MockImageProvider::new()),
                storage: Arc::new(storage),
                converter: Arc::new(crate::generation::ports::MockImageConverter::new()),
                generations: Arc::new(generations),
                history: Arc::new(crate::generation::ports::MockHistoryRepository::new()),
                quotas: Arc::new(crate::quota::ports::MockQuotaRepository::new()),
                clock: Arc::new(clock),
                ids: Arc::new(ids),
            },
            models(),
        )
    }

    fn service(
        provider: MockImageProvider,
        storage: MockObjectStorage,
        generations: MockGenerationRepository,
    ) -> GenerationService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        service_with_clock(provider, storage, generations, clock)
    }

    fn provider_returning_png() -> MockImageProvider {
        let mut provider = MockImageProvider::new();
        provider
            .expect_generate()
            .withf(|request| {
                request
                    .aspect_ratio
                    .map(|ratio| ratio.to_string())
                    .as_deref()
                    == Some("16:9")
                    && request.model.as_str() == "gemini-3.1-flash-image"
                    && request.text.starts_with("a banana\n\n")
                    && request.text.ends_with(ImageStyle::Artistic.instruction())
            })
            .times(1)
            .returning(|_| {
                Ok(GeneratedImage::from_bytes(Bytes::from_static(PNG))
                    .unwrap()
                    .into())
            });
        provider
    }

    fn failing_provider(error: fn() -> ProviderError) -> MockImageProvider {
        let mut provider = MockImageProvider::new();
        provider.expect_generate().returning(move |_| Err(error()));
        provider
    }

    fn lasting_storage() -> MockObjectStorage {
        let mut storage = MockObjectStorage::new();
        storage.expect_put().returning(|key, _| {
            Ok(StoredImage {
                url: format!("https://cdn/{}", key.as_str()),
                url_is_lasting: true,
            })
        });
        storage
    }

    /// A repository that expects exactly one record, matching `matches`.
    fn expecting_one_record(
        matches: impl Fn(&GenerationRecord) -> bool + Send + 'static,
    ) -> MockGenerationRepository {
        let mut generations = MockGenerationRepository::new();
        generations
            .expect_record()
            .withf(matches)
            .times(1)
            .returning(|_| Ok(()));
        generations
    }

    fn failed_with(code: &'static str) -> impl Fn(&GenerationRecord) -> bool {
        move |record| record.outcome == GenerationOutcome::Failed { code }
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
        let generations = expecting_one_record(|record| {
            record.id == GenerationId(GEN)
                && record.caller == CALLER
                && record.outcome
                    == GenerationOutcome::Succeeded {
                        object_key: ObjectKey::from_stored(format!(
                            "images/2026/11/25/gen_{GEN}.png"
                        )),
                        url: Some(format!("https://cdn/images/2026/11/25/gen_{GEN}.png")),
                        format: ImageFormat::Png,
                        bytes: PNG.len() as u64,
                        dimensions: None,
                        // No usage from the provider: the model's 1K per-image price.
                        cost: crate::money::Usd::parse("0.0672").unwrap(),
                    }
        });

        let generation = service(provider_returning_png(), storage, generations)
            .generate(CALLER, request(), &[], RecordVia::History)
            .await
            .unwrap();
        assert_eq!(generation.id.to_string(), format!("gen_{GEN}"));
        assert_eq!(
            generation.url,
            format!("https://cdn/images/2026/11/25/gen_{GEN}.png")
        );
        assert_eq!(generation.image.format(), ImageFormat::Png);
        assert_eq!(generation.image.in_memory().unwrap().bytes().as_ref(), PNG);
        assert_eq!(generation.created_at, NOW);
    }

    /// A spool file at a path, holding `bytes` (nothing is on disk).
    #[derive(Debug)]
    struct NamedFile(std::path::PathBuf, Bytes);

    #[async_trait]
    impl crate::generation::model::SpoolFile for NamedFile {
        fn path(&self) -> &std::path::Path {
            &self.0
        }

        async fn read(&self) -> std::io::Result<Bytes> {
            Ok(self.1.clone())
        }
    }

    /// The provider's answer of an image spooled to `/spool/.spool-1`, which holds `file`.
    fn spooled_answer(head: Bytes, len: u64, file: Bytes) -> ProvidedImage {
        let spooled = crate::generation::model::SpooledImage::new(
            head,
            len,
            Arc::new(NamedFile("/spool/.spool-1".into(), file)),
        )
        .unwrap();
        ProvidedImage {
            image: ImageData::Spooled(spooled),
            usage: None,
            parts: Vec::new(),
            encoded_as_asked: false,
        }
    }

    /// A PNG header of 640x480 (IHDR), as a spooled image's head.
    fn png_head_640x480() -> Bytes {
        let mut head = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        head.extend_from_slice(&640u32.to_be_bytes());
        head.extend_from_slice(&480u32.to_be_bytes());
        head.extend_from_slice(&[8, 6, 0, 0, 0]);
        Bytes::from(head)
    }

    #[tokio::test]
    async fn a_spooled_image_goes_to_the_store_from_its_file_and_is_counted_whole() {
        let mut provider = MockImageProvider::new();
        provider
            .expect_generate()
            .withf(|request| request.may_spool)
            .times(1)
            .returning(|_| Ok(spooled_answer(png_head_640x480(), 16_000_000, Bytes::new())));
        let mut storage = MockObjectStorage::new();
        storage.expect_put().never();
        storage
            .expect_put_spooled()
            .withf(|key, image| {
                key.as_str() == format!("images/2026/11/25/gen_{GEN}.png")
                    && image.file().path() == std::path::Path::new("/spool/.spool-1")
            })
            .times(1)
            .returning(|key, _| {
                Ok(StoredImage {
                    url: format!("https://cdn/{}", key.as_str()),
                    url_is_lasting: true,
                })
            });
        let generations = expecting_one_record(|record| {
            matches!(
                record.outcome,
                GenerationOutcome::Succeeded {
                    bytes: 16_000_000,
                    dimensions: Some((640, 480)),
                    ..
                }
            )
        });
        let service = service(provider, storage, generations).with_image_memory_budget(1 << 20);
        let generation = service
            .generate(CALLER, request(), &[], RecordVia::History)
            .await
            .unwrap();
        assert_eq!(generation.dimensions, Some((640, 480)));
        assert!(generation.image.in_memory().is_none());
        // Stored from its file: it holds nothing of the memory budget.
        assert!(generation.held_memory.is_none());
        assert_eq!(service.image_memory.available(), 1 << 20);
    }

    #[tokio::test]
    async fn a_spooled_image_the_answer_carries_is_read_back_under_the_memory_budget() {
        const MIB: u64 = 1024 * 1024;
        let mut image = png_head_640x480().to_vec();
        image.resize(3 * MIB as usize, 0);
        let image = Bytes::from(image);
        let file_bytes = image.clone();
        let mut provider = MockImageProvider::new();
        provider
            .expect_generate()
            .withf(|request| request.may_spool)
            .times(1)
            .returning(move |_| {
                let len = file_bytes.len() as u64;
                Ok(spooled_answer(
                    file_bytes.slice(..64),
                    len,
                    file_bytes.clone(),
                ))
            });
        let mut storage = MockObjectStorage::new();
        storage.expect_put_spooled().never();
        storage.expect_put().times(1).returning(|key, _| {
            Ok(StoredImage {
                url: format!("https://cdn/{}", key.as_str()),
                url_is_lasting: true,
            })
        });
        let generations = expecting_one_record(|_| true);
        let service = service(provider, storage, generations).with_image_memory_budget(8 * MIB);
        let mut asked = request();
        asked.image_in_answer = true;
        let generation = service
            .generate(CALLER, asked, &[], RecordVia::History)
            .await
            .unwrap();
        assert_eq!(
            generation.image.in_memory().unwrap().bytes(),
            &image,
            "the answer carries the spooled file's bytes"
        );
        assert_eq!(generation.held_memory.as_ref().unwrap().bytes(), 3 * MIB);
        assert_eq!(service.image_memory.available(), 5 * MIB);
        drop(generation);
        assert_eq!(service.image_memory.available(), 8 * MIB);
    }

    #[tokio::test]
    async fn n_images_are_n_calls_each_recorded_and_partial_success_is_kept() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let mut provider = MockImageProvider::new();
        provider.expect_generate().times(3).returning(move |_| {
            // The second call is refused; the others give an image.
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                Err(ProviderError::ContentRejected {
                    reason: "SAFETY".into(),
                })
            } else {
                Ok(GeneratedImage::from_bytes(Bytes::from_static(PNG))
                    .unwrap()
                    .into())
            }
        });
        let mut generations = MockGenerationRepository::new();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let seen = recorded.clone();
        generations
            .expect_record()
            .times(3)
            .returning(move |record| {
                seen.lock().unwrap().push(record.outcome.status());
                Ok(())
            });
        let made = service(provider, lasting_storage(), generations)
            .generate_images(CALLER, &request(), ImageCount::new(3, 10).unwrap())
            .await
            .result
            .unwrap();
        assert_eq!(made.len(), 2);
        let mut statuses = recorded.lock().unwrap().clone();
        statuses.sort_unstable();
        assert_eq!(statuses, ["failed", "succeeded", "succeeded"]);
    }

    #[tokio::test]
    async fn when_no_image_is_made_the_failure_is_the_answer() {
        let mut generations = MockGenerationRepository::new();
        generations.expect_record().times(2).returning(|_| Ok(()));
        let provider = failing_provider(|| ProviderError::Timeout);
        let result = service(provider, MockObjectStorage::new(), generations)
            .generate_images(CALLER, &request(), ImageCount::new(2, 10).unwrap())
            .await
            .result;
        assert!(matches!(
            result,
            Err(GenerateError::Provider(ProviderError::Timeout))
        ));
    }

    fn with_a_fallback() -> GenerationRequest {
        let two = AllowedModels::new([
            "gemini-3.1-flash-image".to_owned(),
            "gemini-3-pro-image".to_owned(),
        ])
        .unwrap();
        let mut request = request();
        request.fallbacks = vec![two.choose(Some("gemini-3-pro-image")).unwrap()];
        request
    }

    fn answering(
        model: &'static str,
        provider: &mut MockImageProvider,
        answer: fn() -> Result<crate::generation::model::ProvidedImage, ProviderError>,
    ) {
        provider
            .expect_generate()
            .withf(move |request| request.model.as_str() == model)
            .times(1)
            .returning(move |_| answer());
    }

    #[tokio::test]
    async fn an_overloaded_model_falls_back_and_the_image_counts_for_the_model_that_made_it() {
        let mut provider = MockImageProvider::new();
        answering("gemini-3.1-flash-image", &mut provider, || {
            Err(ProviderError::Upstream("the provider answered 503".into()))
        });
        answering("gemini-3-pro-image", &mut provider, || {
            Ok(GeneratedImage::from_bytes(Bytes::from_static(PNG))
                .unwrap()
                .into())
        });
        let generations =
            expecting_one_record(|record| record.model.as_str() == "gemini-3-pro-image");
        let made = service(provider, lasting_storage(), generations)
            .generate(CALLER, with_a_fallback(), &[], RecordVia::History)
            .await
            .unwrap();
        assert_eq!(made.model.as_str(), "gemini-3-pro-image");
        assert_eq!(
            made.requested_model.map(|model| model.as_str().to_owned()),
            Some("gemini-3.1-flash-image".to_owned())
        );
    }

    #[tokio::test]
    async fn a_refusal_never_falls_back() {
        let mut provider = MockImageProvider::new();
        answering("gemini-3.1-flash-image", &mut provider, || {
            Err(ProviderError::ContentRejected {
                reason: "IMAGE_SAFETY".into(),
            })
        });
        provider
            .expect_generate()
            .withf(|request| request.model.as_str() == "gemini-3-pro-image")
            .never();
        let generations = expecting_one_record(failed_with("content_rejected"));
        let error = service(provider, lasting_storage(), generations)
            .generate(CALLER, with_a_fallback(), &[], RecordVia::History)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            GenerateError::Provider(ProviderError::ContentRejected { .. })
        ));
    }

    fn quota_caller() -> AuthenticatedApiKey {
        AuthenticatedApiKey {
            quota_applies: true,
            ..CALLER
        }
    }

    fn standing(used: u64) -> QuotaStanding {
        QuotaStanding {
            scope: crate::quota::model::QuotaScope::Key,
            period: crate::quota::model::QuotaPeriod::Day,
            limit: 10,
            used,
            resets_at: datetime!(2026-11-26 00:00 UTC),
            checked_at: datetime!(2026-11-25 12:00 UTC),
        }
    }

    fn service_with_quotas(
        provider: MockImageProvider,
        generations: MockGenerationRepository,
        quotas: crate::quota::ports::MockQuotaRepository,
    ) -> GenerationService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(GEN);
        GenerationService::new(
            GenerationPorts {
                provider: Arc::new(provider),
                test_provider: Arc::new(MockImageProvider::new()),
                storage: Arc::new(lasting_storage()),
                converter: Arc::new(crate::generation::ports::MockImageConverter::new()),
                generations: Arc::new(generations),
                history: Arc::new(crate::generation::ports::MockHistoryRepository::new()),
                quotas: Arc::new(quotas),
                clock: Arc::new(clock),
                ids: Arc::new(ids),
            },
            models(),
        )
    }

    #[tokio::test]
    async fn a_test_key_gets_the_test_provider_and_never_the_live_one() {
        let mut live = MockImageProvider::new();
        live.expect_generate().never();
        let mut quotas = crate::quota::ports::MockQuotaRepository::new();
        quotas.expect_reserve().never();
        let mut generations = MockGenerationRepository::new();
        generations
            .expect_record()
            .withf(|record| record.caller.mode == KeyMode::Test)
            .times(1)
            .returning(|_| Ok(()));
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(GEN);
        let service = GenerationService::new(
            GenerationPorts {
                provider: Arc::new(live),
                test_provider: Arc::new(provider_returning_png()),
                storage: Arc::new(lasting_storage()),
                converter: Arc::new(crate::generation::ports::MockImageConverter::new()),
                generations: Arc::new(generations),
                history: Arc::new(crate::generation::ports::MockHistoryRepository::new()),
                quotas: Arc::new(quotas),
                clock: Arc::new(clock),
                ids: Arc::new(ids),
            },
            models(),
        );
        let caller = AuthenticatedApiKey {
            mode: KeyMode::Test,
            ..CALLER
        };
        let batch = service
            .generate_images(caller, &request(), ImageCount::ONE)
            .await;
        assert_eq!(batch.result.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn images_are_reserved_first_and_those_not_made_are_given_back() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let mut provider = MockImageProvider::new();
        provider.expect_generate().times(3).returning(move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Err(ProviderError::Timeout)
            } else {
                Ok(GeneratedImage::from_bytes(Bytes::from_static(PNG))
                    .unwrap()
                    .into())
            }
        });
        let mut generations = MockGenerationRepository::new();
        generations.expect_record().times(3).returning(|_| Ok(()));
        let mut quotas = crate::quota::ports::MockQuotaRepository::new();
        quotas
            .expect_reserve()
            .withf(|caller, ask, at| {
                // Three images at the 1K per-image price of the default model.
                caller.key_id == CALLER.key_id
                    && ask.images == 3
                    && ask.estimate == crate::money::Usd::parse("0.2016").unwrap()
                    && *at == NOW
            })
            .times(1)
            .returning(|caller, ask, at| {
                Ok(crate::quota::reservation::Reserved {
                    reservation: crate::quota::reservation::Reservation {
                        key_id: caller.key_id,
                        user_id: caller.user_id,
                        ask,
                        at,
                        counted: Vec::new(),
                    },
                    tightest: Some(standing(8)),
                    tightest_budget: None,
                })
            });
        quotas
            .expect_settle()
            .withf(|reservation, settlement| {
                // One image not made; two made at 0.0672 instead of three estimated.
                reservation.ask.images == 3
                    && settlement.unmade_images == 1
                    && settlement.cost_change_nanos == -67_200_000
            })
            .times(1)
            .returning(|_, _| Ok(()));
        let batch = service_with_quotas(provider, generations, quotas)
            .generate_images(quota_caller(), &request(), ImageCount::new(3, 10).unwrap())
            .await;
        assert_eq!(batch.result.unwrap().len(), 2);
        assert_eq!(
            batch.standings.quota.map(|quota| quota.remaining()),
            Some(3)
        );
    }

    #[tokio::test]
    async fn a_dry_run_checks_without_reserving_and_never_calls_the_provider() {
        let mut provider = MockImageProvider::new();
        provider.expect_generate().never();
        let mut generations = MockGenerationRepository::new();
        generations.expect_record().never();
        let mut quotas = crate::quota::ports::MockQuotaRepository::new();
        quotas.expect_reserve().never();
        quotas.expect_settle().never();
        quotas
            .expect_check()
            .withf(|_, ask, _| {
                ask.images == 2 && ask.estimate == crate::money::Usd::parse("0.1344").unwrap()
            })
            .times(1)
            .returning(|_, _, _| Err(ReserveError::Exceeded(standing(10))));
        let service = service_with_quotas(provider, generations, quotas);
        let count = ImageCount::new(2, 10).unwrap();
        let refused = service.estimate(quota_caller(), &request(), count).await;
        assert!(matches!(
            refused,
            Err(GenerateError::Quota(ReserveError::Exceeded(_)))
        ));
        // Without a quota nothing is read: the estimate alone (a 1K image at $0.0672, twice).
        let estimate = service.estimate(CALLER, &request(), count).await.unwrap();
        assert_eq!(estimate.cost.to_string(), "0.134400");
        assert_eq!(estimate.images, 2);
        // A test key's images cost nothing.
        let test_key = AuthenticatedApiKey {
            mode: KeyMode::Test,
            ..CALLER
        };
        let free = service.estimate(test_key, &request(), count).await.unwrap();
        assert_eq!(free.cost, crate::money::Usd::ZERO);
    }

    #[tokio::test]
    async fn over_a_quota_nothing_is_attempted() {
        let mut provider = MockImageProvider::new();
        provider.expect_generate().never();
        let mut generations = MockGenerationRepository::new();
        generations.expect_record().never();
        let mut quotas = crate::quota::ports::MockQuotaRepository::new();
        quotas
            .expect_reserve()
            .returning(|_, _, _| Err(ReserveError::Exceeded(standing(10))));
        quotas.expect_settle().never();
        let batch = service_with_quotas(provider, generations, quotas)
            .generate_images(quota_caller(), &request(), ImageCount::ONE)
            .await;
        assert!(matches!(
            batch.result,
            Err(GenerateError::Quota(ReserveError::Exceeded(_)))
        ));
        assert_eq!(
            batch.standings.quota.map(|quota| quota.remaining()),
            Some(0)
        );
    }

    #[tokio::test]
    async fn without_a_quota_nothing_is_reserved() {
        let mut quotas = crate::quota::ports::MockQuotaRepository::new();
        quotas.expect_reserve().never();
        let mut generations = MockGenerationRepository::new();
        generations.expect_record().returning(|_| Ok(()));
        let batch = service_with_quotas(provider_returning_png(), generations, quotas)
            .generate_images(CALLER, &request(), ImageCount::ONE)
            .await;
        assert!(batch.result.is_ok());
        assert_eq!(batch.standings, Standings::default());
    }

    #[tokio::test]
    async fn timings_and_latency_come_from_the_clock() {
        // Readings: start 0, after upstream 1, storage start 2, after storage 3, latency 4,
        // database start 5, after database 6 (one second apart).
        let generations = expecting_one_record(|record| record.latency == Duration::from_secs(4));
        let generation = service_with_clock(
            provider_returning_png(),
            lasting_storage(),
            generations,
            ticking_clock(time::Duration::SECOND),
        )
        .generate(CALLER, request(), &[], RecordVia::History)
        .await
        .unwrap();
        assert_eq!(
            generation.timings,
            GenerationTimings {
                upstream: Duration::from_secs(1),
                storage: Duration::from_secs(1),
                database: Duration::from_secs(1),
            }
        );
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
        let generations = expecting_one_record(|record| {
            matches!(
                &record.outcome,
                GenerationOutcome::Succeeded { url: None, .. }
            )
        });
        let generation = service(provider_returning_png(), storage, generations)
            .generate(CALLER, request(), &[], RecordVia::History)
            .await
            .unwrap();
        assert_eq!(generation.url, "https://signed?X-Amz-Expires=60");
    }

    #[tokio::test]
    async fn a_rejected_prompt_is_recorded_as_failed_and_not_counted() {
        let mut storage = MockObjectStorage::new();
        storage.expect_put().never();
        let generations = expecting_one_record(failed_with("content_rejected"));
        let provider = failing_provider(|| ProviderError::ContentRejected {
            reason: "SAFETY".into(),
        });
        let result = service(provider, storage, generations)
            .generate(CALLER, request(), &[], RecordVia::History)
            .await;
        assert!(matches!(
            result,
            Err(GenerateError::Provider(
                ProviderError::ContentRejected { .. }
            ))
        ));
    }

    #[tokio::test]
    async fn requests_the_provider_never_saw_write_nothing() {
        let errors: [fn() -> ProviderError; 3] = [
            || ProviderError::NotConfigured,
            || ProviderError::Busy {
                retry_after: Duration::from_secs(30),
            },
            || ProviderError::Unsupported {
                field: "size",
                message: "no 3:2".into(),
            },
        ];
        for error in errors {
            let mut generations = MockGenerationRepository::new();
            generations.expect_record().never();
            let mut storage = MockObjectStorage::new();
            storage.expect_put().never();
            let expected = error().code();
            let result = service(failing_provider(error), storage, generations)
                .generate(CALLER, request(), &[], RecordVia::History)
                .await;
            assert!(
                matches!(&result, Err(GenerateError::Provider(e)) if e.code() == expected),
                "{result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_storage_failure_is_recorded_as_failed() {
        let mut storage = MockObjectStorage::new();
        storage
            .expect_put()
            .returning(|_, _| Err(StorageError::Failed("bucket gone".into())));
        let generations = expecting_one_record(failed_with("storage_failed"));
        let result = service(provider_returning_png(), storage, generations)
            .generate(CALLER, request(), &[], RecordVia::History)
            .await;
        assert!(matches!(result, Err(GenerateError::Storage(_))));
    }

    #[tokio::test]
    async fn an_image_whose_row_cannot_be_written_is_removed() {
        let mut storage = lasting_storage();
        storage
            .expect_delete()
            .withf(|key| key.as_str().ends_with(".png"))
            .times(1)
            .returning(|_| Ok(()));
        let mut generations = MockGenerationRepository::new();
        generations
            .expect_record()
            .times(1)
            .returning(|_| Err(RepositoryError::Unavailable("gone".into())));
        let result = service(provider_returning_png(), storage, generations)
            .generate(CALLER, request(), &[], RecordVia::History)
            .await;
        assert!(matches!(result, Err(GenerateError::Repository(_))));
    }

    #[tokio::test]
    async fn usage_reads_by_model_only_when_grouped_by_model() {
        let mut generations = MockGenerationRepository::new();
        generations
            .expect_usage_facts()
            .withf(|user, from, to, by_model| {
                *user == CALLER.user_id
                    && *from == time::macros::date!(2026 - 11 - 23)
                    && *to == time::macros::date!(2026 - 11 - 25)
                    && *by_model
            })
            .times(1)
            .returning(|_, _, _, _| Ok(Vec::new()));
        generations
            .expect_usage_facts()
            .withf(|_, _, _, by_model| !*by_model)
            .times(1)
            .returning(|_, _, _, _| Ok(Vec::new()));
        let service = service(
            MockImageProvider::new(),
            MockObjectStorage::new(),
            generations,
        );
        let by_model = UsageQuery::parse(Some(3), None, None, Some("model"), NOW).unwrap();
        service.usage(CALLER.user_id, &by_model).await.unwrap();
        let by_day = UsageQuery::parse(Some(3), None, None, None, NOW).unwrap();
        service.usage(CALLER.user_id, &by_day).await.unwrap();
    }
}
