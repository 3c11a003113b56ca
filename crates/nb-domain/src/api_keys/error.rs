//! How key operations can fail.

use super::model::{KeyRefusal, RollRefusal};
use super::ports::RollApiKeyError;
use crate::error::RepositoryError;
use crate::system::RandomnessUnavailable;

#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    /// `expires_at` is not in the future.
    #[error("expires_at must be in the future")]
    ExpiryInThePast,
    /// The account already has the most active keys allowed: revoke one first.
    #[error("the account already has {max_active} active keys")]
    TooManyActiveKeys { max_active: u32 },
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeKeyError {
    /// No key with this id belongs to this user (whether or not it exists for someone else).
    #[error("no such API key")]
    NotFound,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Looking up, rolling: a key of this user, or nothing.
#[derive(Debug, thiserror::Error)]
pub enum FindKeyError {
    /// No key with this id belongs to this user (whether or not it exists for someone else).
    #[error("no such API key")]
    NotFound,
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Rolling a key.
#[derive(Debug, thiserror::Error)]
pub enum RollKeyError {
    #[error(transparent)]
    Refused(#[from] RollRefusal),
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl From<RollApiKeyError> for RollKeyError {
    fn from(error: RollApiKeyError) -> Self {
        match error {
            RollApiKeyError::Refused(refusal) => Self::Refused(refusal),
            RollApiKeyError::Repository(error) => Self::Repository(error),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateKeyError {
    #[error("no such API key")]
    NotFound,
    #[error("expires_at must be in the future")]
    ExpiryInThePast,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthenticateKeyError {
    /// Malformed, unknown or revoked: deliberately one case, so callers cannot tell which.
    #[error("invalid or revoked API key")]
    InvalidKey,
    /// A real key past its `expires_at` (rolled, or set to expire).
    #[error("the API key has expired")]
    Expired,
    /// The key's account was disabled by an operator.
    #[error("the account is disabled")]
    AccountDisabled,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl From<KeyRefusal> for AuthenticateKeyError {
    fn from(refusal: KeyRefusal) -> Self {
        match refusal {
            // Revoked keys are not found by hash: one answer for unknown and revoked.
            KeyRefusal::Revoked => Self::InvalidKey,
            KeyRefusal::Expired => Self::Expired,
            KeyRefusal::AccountDisabled => Self::AccountDisabled,
        }
    }
}
