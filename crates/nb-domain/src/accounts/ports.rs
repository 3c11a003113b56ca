//! The ports accounts are kept and checked through.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::model::{
    EmailAddress, NewUser, Password, PasswordHash, Session, SessionId, User, UserCredentials,
    UserId,
};
use crate::error::RepositoryError;
use crate::generation::model::ObjectKey;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct PasswordHashingError(#[source] pub crate::error::BoxError);

/// Slow, salted password hashing. Implementations MUST NOT block the async executor.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait PasswordHasher: Send + Sync + 'static {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, PasswordHashingError>;

    /// MUST return `Ok(false)` for a wrong password and for a hash it cannot read.
    async fn verify(
        &self,
        password: &Password,
        hash: &PasswordHash,
    ) -> Result<bool, PasswordHashingError>;

    /// Spends as long as `verify` does, for logins with an unknown email, so that response
    /// times do not reveal which emails are registered.
    async fn verify_against_dummy(&self, password: &Password);
}

#[derive(Debug, thiserror::Error)]
pub enum InsertUserError {
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Where users are kept.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait UserRepository: Send + Sync + 'static {
    /// MUST return `InsertUserError::EmailTaken` when the (normalised) email is already used,
    /// and store nothing in that case.
    async fn insert_user(&self, new_user: &NewUser) -> Result<(), InsertUserError>;

    /// MUST return `Ok(None)` when no user has this email.
    async fn find_user_by_email(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<UserCredentials>, RepositoryError>;

    /// MUST return `Ok(None)` when no user has this id.
    async fn find_user_by_id(&self, id: UserId) -> Result<Option<User>, RepositoryError>;

    /// The user's credentials, for checking a password they already hold.
    async fn find_credentials_by_id(
        &self,
        id: UserId,
    ) -> Result<Option<UserCredentials>, RepositoryError>;

    /// Replaces the user's password hash and ends every one of their sessions, in one
    /// transaction. MUST return `Ok(false)` when no user has this id.
    async fn replace_password(
        &self,
        id: UserId,
        password_hash: &PasswordHash,
    ) -> Result<bool, RepositoryError>;

    /// Erases the account in one transaction (see `erasure`): the user row becomes a
    /// tombstone (the email `tombstone`, an unusable password hash, disabled), every key is revoked
    /// and loses its name, and the sessions, generation records, quota counters and
    /// idempotency entries of the account are deleted; usage counts and the audit log stay.
    /// Returns the object keys of the images its generations stored (for the caller to
    /// delete), or MUST return `Ok(None)` when no user has this id.
    async fn erase_user(
        &self,
        id: UserId,
        tombstone: &EmailAddress,
        at: OffsetDateTime,
    ) -> Result<Option<ErasedAccount>, RepositoryError>;
}

/// What [`UserRepository::erase_user`] removed, and what is left for the caller to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedAccount {
    pub keys_revoked: usize,
    pub object_keys: Vec<ObjectKey>,
}

/// Where signed-in sessions are kept.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SessionRepository: Send + Sync + 'static {
    /// Stores a new session. Its user MUST exist.
    async fn insert_session(&self, session: &Session) -> Result<(), RepositoryError>;

    /// The user of a session that exists, belongs to `user_id` and has not expired at `now`.
    /// MUST return `Ok(None)` otherwise.
    async fn find_session_user(
        &self,
        user_id: UserId,
        session_id: SessionId,
        now: OffsetDateTime,
    ) -> Result<Option<User>, RepositoryError>;

    /// Ends one session of the user (nothing when it is not theirs or already ended).
    async fn delete_session(
        &self,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<(), RepositoryError>;

    /// Removes sessions that expired before `now`; returns how many.
    async fn delete_expired_sessions(&self, now: OffsetDateTime) -> Result<u64, RepositoryError>;
}
