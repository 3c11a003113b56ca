//! What is kept of a generation and how history is read: its status, the stored row, the
//! filters of a listing, and what the orphan sweep works with.

use std::time::Duration;

use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::model::{GenerationId, ObjectKey, StoredTurn};
use super::tokens::TokenUsage;
use crate::accounts::model::UserId;
use crate::api_keys::model::{ApiKeyId, KeyMode};

/// Where a generation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenerationStatus {
    /// An asynchronous job waiting for a worker.
    Queued,
    /// An asynchronous job a worker is running.
    Running,
    Succeeded,
    Failed,
    /// An asynchronous job canceled before it ran.
    Canceled,
    /// Its owner deleted it: the image is gone.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status must be queued, running, succeeded, failed, canceled or deleted")]
pub struct InvalidGenerationStatus;

impl GenerationStatus {
    pub fn parse(raw: &str) -> Result<Self, InvalidGenerationStatus> {
        match raw {
            "queued" => Ok(Self::Queued),
            "running" => Ok(Self::Running),
            "canceled" => Ok(Self::Canceled),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "deleted" => Ok(Self::Deleted),
            _ => Err(InvalidGenerationStatus),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Canceled => "canceled",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }

    /// Whether it will not change any more (but for being deleted).
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a generation id")]
pub struct InvalidGenerationId;

impl GenerationId {
    /// `gen_<uuid>`, as answers show it.
    pub fn parse(raw: &str) -> Result<Self, InvalidGenerationId> {
        raw.strip_prefix("gen_")
            .and_then(|uuid| Uuid::parse_str(uuid).ok())
            .map(Self)
            .ok_or(InvalidGenerationId)
    }
}

/// A generation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGeneration {
    pub id: GenerationId,
    pub user_id: UserId,
    pub key_id: ApiKeyId,
    pub mode: KeyMode,
    pub prompt: String,
    /// `auto` or `WxH`.
    pub size: String,
    pub style: String,
    pub model: String,
    pub status: GenerationStatus,
    pub error_code: Option<String>,
    pub object_key: Option<ObjectKey>,
    /// The URL recorded when it was lasting (public or local); `None` for presigned URLs.
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub bytes: Option<u64>,
    pub latency: Duration,
    pub created_at: OffsetDateTime,
    pub deleted_at: Option<OffsetDateTime>,
    /// The ratio asked for (`None`: the model's choice, or a row older than the catalog).
    pub aspect_ratio: Option<String>,
    pub resolution: Option<String>,
    /// Read from the image's header.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// What Google counted, when it said.
    pub usage: Option<TokenUsage>,
    /// What it cost (0 when it failed, and for a test key's).
    pub cost: crate::money::Usd,
    /// The generation this one continued.
    pub previous: Option<GenerationId>,
    /// What continuing it needs (succeeded generations made since conversational edits).
    pub turn: Option<StoredTurn>,
}

/// A generation as its owner sees it: with a URL that works now, when it has an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationView {
    pub generation: StoredGeneration,
    pub url: Option<String>,
}

/// Whose generations: an account's, or one key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryScope {
    pub user_id: UserId,
    /// Set when the caller is an API key: it sees only its own.
    pub key_id: Option<ApiKeyId>,
}

/// Which generations to list (each `None`: all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryFilter {
    pub key_id: Option<ApiKeyId>,
    pub status: Option<GenerationStatus>,
    pub mode: Option<KeyMode>,
    /// Created at or after.
    pub from: Option<OffsetDateTime>,
    /// Created before.
    pub to: Option<OffsetDateTime>,
}

/// What one sweep found and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    pub examined: usize,
    pub removed: usize,
}

/// Stored objects younger than this are left alone by the sweep: their generation row may
/// still be on its way.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(15 * 60);

/// How many days back (today included) each sweep looks: images are stored under their UTC
/// day, and a sweep runs every hour, so two days cover every image stored since the last.
pub const SWEPT_DAYS: i64 = 2;

/// Where the images of a UTC day are stored: `images/2026/11/25/`.
pub fn day_prefix(day: Date) -> String {
    format!(
        "images/{:04}/{:02}/{:02}/",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// Where the input images kept for the generations of a UTC day are stored:
/// `inputs/2026/11/25/`.
pub fn input_day_prefix(day: Date) -> String {
    format!("inputs/{}", day_prefix(day).trim_start_matches("images/"))
}

/// An object a storage holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: ObjectKey,
    pub last_modified: OffsetDateTime,
}
