//! The ports: everything the domain needs from the outside world, as narrow traits.
//!
//! Each method's doc says what it MUST return on each outcome; adapters are tested against
//! those contracts (see `nb-db`'s contract suite).

use async_trait::async_trait;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::RepositoryError;
use crate::admin::{AccountChanges, AccountOverview, AccountSettings, AuditEntry};
use crate::api_keys::{
    ApiKeyHash, ApiKeyId, ApiKeyRecord, AuthenticatedApiKey, KeyAccess, KeyChanges, KeyUsage,
    NewApiKey,
};
use crate::generation::{
    FetchedImage, GeneratedImage, GenerationId, GenerationRecord, HistoryFilter, ImageRequest,
    ListedObject, ObjectKey, ProviderError, StorageError, StoredGeneration, StoredImage,
};
use crate::idempotency::{ClaimOutcome, IdempotencyLease, KeptAnswer, NewClaim};
use crate::pagination::{Page, PageRequest};
use crate::quota::{Reservation, ReserveError, Reserved};
use crate::usage::UsageFact;
use crate::user::{
    EmailAddress, NewUser, Password, PasswordHash, Session, SessionId, User, UserCredentials,
    UserId,
};

/// The current time.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// The current UTC time, at microsecond precision (what every database keeps).
    fn now(&self) -> OffsetDateTime;
}

/// `at` cut to whole microseconds, the precision every database keeps: a time stored and
/// read back equals the time shown when it was written.
pub fn to_microseconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// Fresh ids for new records.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait IdGenerator: Send + Sync + 'static {
    /// A new id, never returned before. Implementations SHOULD be time-ordered (UUIDv7).
    fn new_id(&self) -> Uuid;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator is unavailable")]
pub struct RandomnessUnavailable;

/// Cryptographically secure random bytes.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait RandomSource: Send + Sync + 'static {
    /// Fills `dest` from a CSPRNG, or MUST return `RandomnessUnavailable` (never weak bytes).
    fn fill_bytes(&self, dest: &mut [u8]) -> Result<(), RandomnessUnavailable>;
}

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
    /// tombstone (another email, an unusable password hash, disabled), every key is revoked
    /// and loses its name, and the sessions, generation records, quota counters and
    /// idempotency entries of the account are deleted; usage counts and the audit log stay.
    /// Returns the object keys of the images its generations stored (for the caller to
    /// delete), or MUST return `Ok(None)` when no user has this id.
    async fn erase_user(
        &self,
        id: UserId,
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

#[derive(Debug, thiserror::Error)]
pub enum InsertKeyError {
    /// The owner already has the most active keys allowed.
    #[error("the account already has {max_active} active keys")]
    TooManyActiveKeys { max_active: u32 },
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

    /// Stores `new_key` (which names `old` in `rolled_from`) and makes the user's unrevoked
    /// key `old` expire at `old_expires_at` (or sooner, when it already would), in one
    /// transaction. MUST store nothing and return `Ok(false)` when `old` is not an unrevoked
    /// key of the user.
    async fn roll_api_key(
        &self,
        user_id: UserId,
        old: ApiKeyId,
        new_key: &NewApiKey,
        old_expires_at: OffsetDateTime,
    ) -> Result<bool, RepositoryError>;

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

/// Accounts as the operator manages them, and the audit of what operators do.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AdminRepository: Send + Sync + 'static {
    /// One page of accounts, oldest first (by `created_at`, then id), with their settings and
    /// what all their keys made on the UTC day and in the calendar month holding `at`.
    async fn list_accounts(
        &self,
        page: PageRequest,
        at: OffsetDateTime,
    ) -> Result<Page<AccountOverview>, RepositoryError>;

    /// Applies `changes` and writes `entry` (with the settings before and after filled in)
    /// to the audit, in one transaction; when the quotas change, the account's counters for
    /// the periods holding `entry.at` are set from its recorded usage. Returns the settings
    /// before and after, or `Ok(None)` (writing nothing) when no account has this id.
    async fn update_account(
        &self,
        user_id: UserId,
        changes: &AccountChanges,
        entry: &AuditEntry,
    ) -> Result<Option<(AccountSettings, AccountSettings)>, RepositoryError>;

    /// One page of the audit, newest first.
    async fn list_audit(&self, page: PageRequest) -> Result<Page<AuditEntry>, RepositoryError>;
}

/// Day and month quota counters.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait QuotaRepository: Send + Sync + 'static {
    /// Reserves `images` for the caller at `at` against every day and month quota of its key
    /// and its account, reading the key's and the account's state and limits as they are
    /// now (not as a cache last saw them): all counters or none, each with a conditional
    /// update (never a read then a write), so concurrent reservations, on one instance or
    /// many, cannot pass a limit. MUST return `Exceeded` with the quota that refused,
    /// `KeyRevoked`, `KeyExpired` or `AccountDisabled` (reserving nothing) when so.
    async fn reserve(
        &self,
        caller: &AuthenticatedApiKey,
        images: u64,
        at: OffsetDateTime,
    ) -> Result<Reserved, ReserveError>;

    /// Gives back `images` of a reservation (images not made), in the periods it counted in.
    async fn release(&self, reservation: &Reservation, images: u64) -> Result<(), RepositoryError>;
}

/// The image model upstream.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ImageProvider: Send + Sync + 'static {
    /// One image for the request. MUST return `ProviderError::NotConfigured` without any
    /// network call when it has no credentials, `Unsupported` (naming the request field)
    /// without any network call when the model cannot serve the request, `ContentRejected`
    /// when the provider answered but gave no image, and never a partial or unverified image
    /// (see `GeneratedImage`).
    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ProviderError>;
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
}

/// Why the service cannot take traffic.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the database cannot be reached")]
    DatabaseUnreachable(#[source] crate::error::BoxError),
    #[error("the database schema is not up to date (pending migrations: {0})")]
    MigrationsPending(String),
    /// The migrations this build expects cannot be listed: readiness cannot be proven.
    #[error("the expected migrations cannot be listed")]
    MigrationsUnknown(#[source] crate::error::BoxError),
    /// The store shared by instances for limits and key changes (Redis) does not answer.
    #[error("the shared-state store cannot be reached")]
    SharedStateUnreachable(#[source] crate::error::BoxError),
}

/// Entries of `Idempotency-Key`, one per API key and idempotency key, shared by every
/// instance.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait IdempotencyRepository: Send + Sync + 'static {
    /// Atomically (one winner among concurrent callers, on every instance): creates the entry
    /// as running under `claim.lease`, or takes over one that has expired or whose running
    /// lease has lapsed (`locked_until <= claim.now`), and MUST then return `Claimed`.
    /// Otherwise it MUST return the live entry (`Existing`, with its answer once completed),
    /// or `Vanished` when the entry it met was removed before it could be read.
    async fn claim(&self, claim: &NewClaim) -> Result<ClaimOutcome, RepositoryError>;

    /// Stores `answer` and `expires_at` on the entry held by `lease`; MUST return `false`
    /// (and change nothing) when `lease` no longer holds it.
    async fn complete(
        &self,
        lease: &IdempotencyLease,
        answer: &KeptAnswer,
        expires_at: OffsetDateTime,
    ) -> Result<bool, RepositoryError>;

    /// Removes the entry if `lease` still holds it.
    async fn release(&self, lease: &IdempotencyLease) -> Result<(), RepositoryError>;

    /// Removes every entry that expired at or before `now`; how many.
    async fn delete_expired(&self, now: OffsetDateTime) -> Result<u64, RepositoryError>;
}

/// What `/readyz` asks.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// MUST return `Ok` only when the database answers and every migration is applied; when
    /// either cannot be established, it MUST fail (closed), never pass by default.
    async fn check_ready(&self) -> Result<(), NotReady>;
}
