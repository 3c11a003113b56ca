//! The ports API keys are kept in, and through which caches of them hear of changes.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{
    ApiKeyHash, ApiKeyId, ApiKeyRecord, KeyAccess, KeyChanges, NewApiKey, RollRefusal,
};
use crate::accounts::model::UserId;
use crate::error::RepositoryError;
use crate::pagination::{Page, PageRequest};

#[derive(Debug, thiserror::Error)]
pub enum InsertKeyError {
    /// The owner already has the most active keys allowed.
    #[error("the account already has {max_active} active keys")]
    TooManyActiveKeys { max_active: u32 },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum RollApiKeyError {
    #[error(transparent)]
    Refused(#[from] RollRefusal),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Where API keys are kept.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ApiKeyRepository: Send + Sync + 'static {
    /// Stores a new key, unless its owner (who MUST exist) already has `max_active` usable
    /// keys (not revoked, not expired at the new key's `created_at`): then it MUST store
    /// nothing and return `TooManyActiveKeys`. The count and the insert are one atomic step,
    /// so concurrent creations cannot pass the cap.
    async fn insert_api_key(
        &self,
        new_key: &NewApiKey,
        max_active: u32,
    ) -> Result<(), InsertKeyError>;

    /// One page of the user's keys, revoked ones included, newest first (by `created_at`,
    /// then id).
    async fn list_api_keys(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyRecord>, RepositoryError>;

    /// One of the user's keys. MUST return `Ok(None)` when no key with this id is theirs.
    async fn find_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
    ) -> Result<Option<ApiKeyRecord>, RepositoryError>;

    /// Applies `changes` to one of the user's keys and returns it as it now is, or `Ok(None)`
    /// when no key with this id is theirs. When the quotas change, the key's quota counters
    /// for the periods holding `at` MUST be set from its recorded usage, in the same
    /// transaction.
    async fn update_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
        changes: &KeyChanges,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKeyRecord>, RepositoryError>;

    /// Rolls the user's key `old` into `new_key` (which names `old` in `rolled_from`), in one
    /// transaction under the owner's lock: reads the old key's state, whether it was rolled
    /// before, and the account's usable keys at `new_key`'s `created_at`; asks
    /// [`RollState::check`](super::model::RollState::check) with `max_active`; and, allowed, stores `new_key`, makes `old`
    /// expire at `old_expires_at` (or sooner, when it already would), and gives `new_key`
    /// the old key's day and month quota counters for the periods holding `created_at` (an
    /// allowance moves with the roll). MUST store nothing and return the refusal otherwise.
    async fn roll_api_key(
        &self,
        user_id: UserId,
        old: ApiKeyId,
        new_key: &NewApiKey,
        old_expires_at: OffsetDateTime,
        max_active: u32,
    ) -> Result<(), RollApiKeyError>;

    /// Sets `is_active = false` on the key if it belongs to `user_id`. MUST return `Ok(true)`
    /// when the user owns the key (even if it was already inactive) and `Ok(false)` when no
    /// key with this id belongs to this user.
    async fn deactivate_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
    ) -> Result<bool, RepositoryError>;

    /// The unrevoked key with this hash, expired or not, with its account's state. MUST
    /// return `Ok(None)` for an unknown hash and for a revoked key.
    async fn find_active_api_key(
        &self,
        key_hash: &ApiKeyHash,
    ) -> Result<Option<KeyAccess>, RepositoryError>;

    /// Sets each key's `last_used_at` to the given time, unless it already holds a later one.
    async fn record_key_uses(
        &self,
        uses: &[(ApiKeyId, OffsetDateTime)],
    ) -> Result<(), RepositoryError>;
}

/// Caches of verified keys must forget what changed: a key (rolled, limits changed) or a
/// whole account (disabled, limits changed).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait KeyInvalidation: Send + Sync + 'static {
    async fn key_changed(&self, key_id: ApiKeyId);
    async fn account_changed(&self, user_id: UserId);
}

/// A change to API keys that every instance's key cache must hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// One key was revoked, updated or rolled.
    Key(ApiKeyId),
    /// An account was disabled, its limits changed, or it was erased: all its keys.
    Account(UserId),
}

impl KeyChange {
    /// `key:<uuid>` or `account:<uuid>`.
    pub fn encode(&self) -> String {
        match self {
            Self::Key(key_id) => format!("key:{}", key_id.0),
            Self::Account(user_id) => format!("account:{}", user_id.0),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (kind, id) = text.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "key" => Some(Self::Key(ApiKeyId(id))),
            "account" => Some(Self::Account(UserId(id))),
            _ => None,
        }
    }
}

/// Tells the other instances of a [`KeyChange`] (PostgreSQL `NOTIFY`). Best effort: a
/// failure is logged by the adapter, and the key cache's TTL bounds what a lost
/// announcement costs.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait KeyChangeBroadcast: Send + Sync + 'static {
    async fn announce(&self, change: KeyChange);
}
