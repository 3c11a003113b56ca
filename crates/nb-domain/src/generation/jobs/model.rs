//! What a job is: the request kept as data, the job as a worker holds it, and the settings
//! of the queue.

use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api_keys::model::AuthenticatedApiKey;
use crate::generation::catalog::{AspectRatio, Resolution};
use crate::generation::model::{
    AllowedModels, GenerationId, GenerationRequest, ImageFormat, ImageShape, ImageStyle,
    InputImage, InputImages, OutputEncoding, Prompt,
};
use crate::generation::stored::{GenerationStatus, StoredGeneration};
use crate::money::Usd;
use crate::quota::reservation::Reservation;

/// A checked generation request as plain data, so that a repository can keep it and any
/// instance can run it later: every field was checked when it was submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub prompt: String,
    /// `WxH` or `auto`, as asked.
    pub size: String,
    pub aspect_ratio: Option<String>,
    pub resolution: String,
    pub style: String,
    pub model: String,
    pub images: Vec<Bytes>,
    pub mask: Option<Bytes>,
    pub previous: Option<GenerationId>,
    pub output: Option<JobOutput>,
    /// The fallback chain's models, by id.
    pub fallbacks: Vec<String>,
}

/// The output format asked for (see [`OutputEncoding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOutput {
    /// The format's file extension (`png`, `jpeg`, `webp`).
    pub format: &'static str,
    pub quality: u8,
    pub quality_asked: bool,
}

/// Why a kept request cannot be run any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnrunnableJob {
    /// Its model is no longer enabled on this deployment.
    #[error("the model {0} is no longer enabled")]
    ModelGone(String),
    /// A field no longer reads back (a bug, or a row written by hand).
    #[error("the kept request is not readable: {0}")]
    Unreadable(&'static str),
}

impl UnrunnableJob {
    /// The `error_code` the job fails with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ModelGone(_) => "model_unavailable",
            Self::Unreadable(_) => "validation_failed",
        }
    }
}

impl JobRequest {
    pub fn of(request: &GenerationRequest) -> Self {
        Self {
            prompt: request.prompt.as_str().to_owned(),
            size: request.size.clone(),
            aspect_ratio: request.shape.aspect_ratio.map(|ratio| ratio.to_string()),
            resolution: request.shape.resolution.as_str().to_owned(),
            style: request.style.as_str().to_owned(),
            model: request.model.as_str().to_owned(),
            images: request
                .inputs
                .images()
                .iter()
                .map(|image| image.bytes().clone())
                .collect(),
            mask: request.inputs.mask().map(|mask| mask.bytes().clone()),
            previous: request.previous,
            output: request.output.map(|output| JobOutput {
                format: output.format.extension(),
                quality: output.quality,
                quality_asked: output.quality_asked,
            }),
            fallbacks: request
                .fallbacks
                .iter()
                .map(|model| model.as_str().to_owned())
                .collect(),
        }
    }

    /// The request again, with the deployment's models as they are now.
    pub fn to_request(&self, models: &AllowedModels) -> Result<GenerationRequest, UnrunnableJob> {
        let model = models
            .choose(Some(&self.model))
            .map_err(|_| UnrunnableJob::ModelGone(self.model.clone()))?;
        let unreadable = UnrunnableJob::Unreadable;
        let images = self
            .images
            .iter()
            .map(|bytes| InputImage::from_bytes(bytes.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| unreadable("images"))?;
        let mask = self
            .mask
            .clone()
            .map(InputImage::from_bytes)
            .transpose()
            .map_err(|_| unreadable("mask"))?;
        Ok(GenerationRequest {
            prompt: Prompt::parse(self.prompt.clone()).map_err(|_| unreadable("prompt"))?,
            size: self.size.clone(),
            shape: ImageShape {
                aspect_ratio: self
                    .aspect_ratio
                    .as_deref()
                    .map(AspectRatio::parse)
                    .transpose()
                    .map_err(|_| unreadable("aspect_ratio"))?,
                resolution: Resolution::parse(&self.resolution)
                    .map_err(|_| unreadable("resolution"))?,
            },
            style: ImageStyle::parse(&self.style).map_err(|_| unreadable("style"))?,
            model,
            inputs: InputImages::from_checked(images, mask),
            previous: self.previous,
            // Those still enabled.
            fallbacks: self
                .fallbacks
                .iter()
                .filter_map(|name| models.choose(Some(name)).ok())
                .collect(),
            output: self
                .output
                .map(|output| {
                    ImageFormat::from_extension(output.format)
                        .map(|format| OutputEncoding {
                            format,
                            quality: output.quality,
                            quality_asked: output.quality_asked,
                        })
                        .ok_or(unreadable("output_format"))
                })
                .transpose()?,
            // A job's answer is read later, from the store.
            image_in_answer: false,
        })
    }
}

/// A job as it is submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: GenerationId,
    pub caller: AuthenticatedApiKey,
    pub request: JobRequest,
    /// What was reserved for it, when a quota or budget applies: settled once, when it ends.
    pub reservation: Option<Reservation>,
    pub created_at: OffsetDateTime,
}

impl NewJob {
    /// Its generation as stored at submission: `queued`.
    pub fn queued_generation(&self) -> StoredGeneration {
        StoredGeneration {
            id: self.id,
            user_id: self.caller.user_id,
            key_id: self.caller.key_id,
            mode: self.caller.mode,
            prompt: self.request.prompt.clone(),
            size: self.request.size.clone(),
            style: self.request.style.clone(),
            model: self.request.model.clone(),
            status: GenerationStatus::Queued,
            error_code: None,
            object_key: None,
            url: None,
            mime_type: None,
            bytes: None,
            latency: Duration::ZERO,
            created_at: self.created_at,
            deleted_at: None,
            aspect_ratio: self.request.aspect_ratio.clone(),
            resolution: Some(self.request.resolution.clone()),
            width: None,
            height: None,
            usage: None,
            cost: Usd::ZERO,
            previous: self.request.previous,
            turn: None,
        }
    }
}

/// A job as a worker holds it: under a lease, for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: GenerationId,
    /// The submitter, as it was when the job was accepted (a key revoked since does not stop
    /// a job it submitted).
    pub caller: AuthenticatedApiKey,
    pub request: JobRequest,
    pub reservation: Option<Reservation>,
    pub created_at: OffsetDateTime,
    /// This attempt's number: 1 for the first.
    pub attempt: u32,
    /// Why the previous attempt failed, when one did.
    pub last_error_code: Option<String>,
    /// Proves the lease: only the holder of this token may renew, retry or finish the job.
    pub lease: Uuid,
}

/// How the queue runs (`NB_JOB_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSettings {
    /// Workers per instance.
    pub workers: usize,
    /// How long a claim lasts without renewal; renewed every third of it while running.
    pub lease: Duration,
    /// Upstream attempts per job.
    pub max_attempts: u32,
    /// A job still queued after this long fails with `queue_timeout`.
    pub timeout: Duration,
    /// How often an idle worker looks for jobs submitted on another instance (jobs submitted
    /// on its own instance wake it at once).
    pub poll_interval: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            lease: Duration::from_secs(120),
            max_attempts: 3,
            timeout: Duration::from_secs(900),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The longest a submitter may ask to wait for its job (`Prefer: wait=N`).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
