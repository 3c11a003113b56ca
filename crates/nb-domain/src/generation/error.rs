//! How a generation can fail: at the provider, at the storage, or at the database.

use std::time::Duration;

use crate::error::BoxError;
use crate::error::RepositoryError;
use crate::quota::reservation::ReserveError;

/// Why the provider gave no image. Each maps to one HTTP answer in `nb-api`.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No upstream key is configured: nothing was sent.
    #[error("image generation is not configured")]
    NotConfigured,
    /// The request cannot be served by this model (e.g. an aspect ratio it lacks); `field`
    /// names the request field at fault. Nothing was sent.
    #[error("{message}")]
    Unsupported {
        field: &'static str,
        message: String,
    },
    /// Refused by the provider's safety system, or answered without an image.
    #[error("the provider returned no image: {reason}")]
    ContentRejected { reason: String },
    /// Too many generations are already waiting for the provider on this instance. Nothing
    /// was sent.
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
    /// The provider refused the request itself (a 4xx other than those above): the same
    /// request fails again, on this model or another.
    #[error("the provider refused the request ({status})")]
    Refused { status: u16 },
}

impl ProviderError {
    /// The `error_code` recorded with a failed generation: the code the synchronous route
    /// answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured => "generation_not_configured",
            Self::Unsupported { .. } => "validation_failed",
            Self::ContentRejected { .. } => "content_rejected",
            Self::Busy { .. } => "upstream_busy",
            Self::RateLimited { .. } => "upstream_rate_limited",
            Self::ModelNotFound { .. } => "model_unavailable",
            Self::CredentialsRejected => "upstream_auth_failed",
            Self::Timeout => "upstream_timeout",
            Self::Upstream(_) | Self::Refused { .. } => "upstream_failed",
        }
    }

    /// Whether the next model of a fallback chain should be tried: the model was rate limited
    /// (after retries), overloaded or failing (5xx), slow, or is gone. Never on a refusal of
    /// the content or the request, or on rejected credentials (another model would fare no
    /// better).
    pub fn falls_back(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Upstream(_)
                | Self::Timeout
                | Self::ModelNotFound { .. }
        )
    }

    /// Whether the provider was never asked: nothing was spent and there is nothing worth a
    /// history row. Load shedding must stay cheap, so it writes nothing.
    pub fn nothing_was_attempted(&self) -> bool {
        matches!(
            self,
            Self::NotConfigured | Self::Unsupported { .. } | Self::Busy { .. }
        )
    }
}

/// The image the model made could not be converted to the format asked for.
#[derive(Debug, thiserror::Error)]
#[error("the image could not be converted: {0}")]
pub struct ConversionError(pub String);

/// Why the image store failed, as far as a client can act on it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store could not be reached, did not answer in time, or answered that it cannot
    /// serve now (5xx, throttling): the same request may succeed later.
    #[error("the image store is unavailable")]
    Unavailable(#[source] BoxError),
    /// The store has no room left (a full disk or quota).
    #[error("the image store is full")]
    Full(#[source] BoxError),
    /// Anything else (refused credentials, a missing bucket, a bug).
    #[error("the image store failed")]
    Failed(#[source] BoxError),
}

impl StorageError {
    /// Stable and snake_case: what a failed generation is recorded with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "storage_unavailable",
            Self::Full(_) => "storage_full",
            Self::Failed(_) => "storage_failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Refused before any work: over a quota, or the key or account stopped being usable.
    #[error(transparent)]
    Quota(#[from] ReserveError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The conversation a request continues cannot be continued. Nothing was sent.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    #[error(transparent)]
    Conversion(#[from] ConversionError),
}

impl GenerateError {
    /// The `error_code` a failed job is recorded with: the code the synchronous route
    /// answers with for the same failure.
    pub fn failure_code(&self) -> &'static str {
        match self {
            Self::Quota(ReserveError::OverBudget(_)) => "budget_exceeded",
            Self::Quota(_) => "quota_exceeded",
            Self::Provider(error) => error.code(),
            Self::Storage(error) => error.code(),
            Self::Repository(_) => "database_unavailable",
            Self::Conversation(ConversationError::NotFound) => "generation_not_found",
            Self::Conversation(_) => "validation_failed",
            Self::Conversion(_) => "conversion_failed",
        }
    }

    /// Whether the same request may succeed if tried again later (a job is retried then):
    /// the provider or the storage was busy, slow or failing, or the database was
    /// unavailable. A refusal of the content, of the request or of our credentials is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Provider(error) => matches!(
                error,
                ProviderError::Busy { .. }
                    | ProviderError::RateLimited { .. }
                    | ProviderError::Timeout
                    | ProviderError::Upstream(_)
            ),
            Self::Storage(StorageError::Unavailable(_)) | Self::Repository(_) => true,
            _ => false,
        }
    }
}

/// Why `previous_generation_id` cannot be continued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    /// No generation with this id is the account's.
    #[error("no generation of this account has the id previous_generation_id names")]
    NotFound,
    /// It (or an earlier turn) has nothing to continue from.
    #[error("{0}")]
    Unusable(&'static str),
    /// The conversation would be longer than the deployment allows.
    #[error("a conversation may be at most {max} turns long (NB_MAX_EDIT_TURNS)")]
    TooLong { max: usize },
}
