//! How key operations can fail.

use crate::RepositoryError;
use crate::ports::RandomnessUnavailable;

#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
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

#[derive(Debug, thiserror::Error)]
pub enum AuthenticateKeyError {
    /// Malformed, unknown or revoked: deliberately one case, so callers cannot tell which.
    #[error("invalid or revoked API key")]
    InvalidKey,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}
