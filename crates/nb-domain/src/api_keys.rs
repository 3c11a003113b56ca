//! API keys: how they look, how they are stored, and the service that issues, lists, revokes
//! and checks them.
//!
//! A key is `nb_live_` followed by 32 lowercase hex characters (128 bits from the OS CSPRNG).
//! Only its SHA-256 is stored, with a short display prefix; the full key exists in memory
//! once, when it is created, and is handed to the caller that single time.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::RepositoryError;
use crate::ports::{ApiKeyRepository, Clock, IdGenerator, RandomSource, RandomnessUnavailable};
use crate::user::UserId;

pub const API_KEY_PREFIX: &str = "nb_live_";
const API_KEY_RANDOM_BYTES: usize = 16;
/// `nb_live_` + 32 hex characters.
pub const API_KEY_LENGTH: usize = API_KEY_PREFIX.len() + 2 * API_KEY_RANDOM_BYTES;
/// How much of a key is kept for display: `nb_live_` and 4 hex characters.
pub const DISPLAY_PREFIX_LENGTH: usize = 12;
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// An API key's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyId(pub Uuid);

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A full API key. `Debug` and `Display` show only its display prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a NanoBanana API key")]
pub struct MalformedApiKey;

impl ApiKeySecret {
    fn from_random_bytes(bytes: &[u8; API_KEY_RANDOM_BYTES]) -> Self {
        Self(format!("{API_KEY_PREFIX}{}", hex::encode(bytes)))
    }

    /// Accepts exactly `nb_live_` followed by 32 lowercase hex characters.
    pub fn parse(raw: &str) -> Result<Self, MalformedApiKey> {
        let random_part = raw.strip_prefix(API_KEY_PREFIX).ok_or(MalformedApiKey)?;
        let well_formed = random_part.len() == 2 * API_KEY_RANDOM_BYTES
            && random_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(MalformedApiKey)
        }
    }

    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LENGTH]
    }

    /// The whole key. Call only to hand it to its owner, once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

/// The lowercase hex SHA-256 of a full key: what is stored and looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key's optional label: trimmed, at most 100 characters, no control characters; blank
/// means none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiKeyName(Option<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name must be at most {MAX_KEY_NAME_CHARS} characters with no control characters")]
pub struct InvalidApiKeyName;

impl ApiKeyName {
    pub fn parse(raw: Option<&str>) -> Result<Self, InvalidApiKeyName> {
        let Some(trimmed) = raw.map(str::trim).filter(|name| !name.is_empty()) else {
            return Ok(Self(None));
        };
        if trimmed.chars().count() > MAX_KEY_NAME_CHARS || trimmed.chars().any(char::is_control) {
            return Err(InvalidApiKeyName);
        }
        Ok(Self(Some(trimmed.to_owned())))
    }

    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn into_inner(self) -> Option<String> {
        self.0
    }
}

/// A stored key as its owner sees it: never the key itself, never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: Option<String>,
    pub prefix: String,
    pub is_active: bool,
    pub last_used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// What creating a key asks a repository to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub key_hash: ApiKeyHash,
}

/// A key just created: the only value that ever holds the full key after creation.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    pub record: ApiKeyRecord,
    pub secret: ApiKeySecret,
}

/// Who is calling, once a presented key has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedApiKey {
    pub key_id: ApiKeyId,
    pub user_id: UserId,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
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

/// How long a verified key is trusted without asking the database again. Revoking a key
/// takes effect at once on the instance that revoked it, and within this time on the others.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// `last_used_at` is written at most this often per key; uses in between are kept in memory
/// and written by [`ApiKeyService::flush_key_uses`] (periodically and at shutdown).
pub const LAST_USED_WRITE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct VerifiedKey {
    key: AuthenticatedApiKey,
    verified_at: OffsetDateTime,
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyUses {
    last_written: Option<OffsetDateTime>,
    pending: Option<OffsetDateTime>,
}

/// Issues, lists, revokes and checks API keys.
///
/// Checking a key is on every generation's path, so verified keys are kept in memory for
/// `cache_ttl` and `last_used_at` writes are coalesced: the first use of a key writes at once,
/// later uses within [`LAST_USED_WRITE_INTERVAL`] only remember the latest time.
#[derive(Clone)]
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyRepository>,
    random: Arc<dyn RandomSource>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    cache_ttl: Duration,
    verified: Arc<Mutex<HashMap<ApiKeyHash, VerifiedKey>>>,
    uses: Arc<Mutex<HashMap<ApiKeyId, KeyUses>>>,
}

impl fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means another thread panicked while holding it; the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ApiKeyService {
    pub fn new(
        keys: Arc<dyn ApiKeyRepository>,
        random: Arc<dyn RandomSource>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self::with_cache_ttl(keys, random, clock, ids, DEFAULT_KEY_CACHE_TTL)
    }

    /// As [`ApiKeyService::new`], trusting verified keys for `cache_ttl` (zero: never).
    pub fn with_cache_ttl(
        keys: Arc<dyn ApiKeyRepository>,
        random: Arc<dyn RandomSource>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            keys,
            random,
            clock,
            ids,
            cache_ttl,
            verified: Arc::default(),
            uses: Arc::default(),
        }
    }

    #[tracing::instrument(skip(self, name), fields(key_id))]
    pub async fn create(
        &self,
        user_id: UserId,
        name: ApiKeyName,
    ) -> Result<CreatedApiKey, CreateKeyError> {
        let mut bytes = [0u8; API_KEY_RANDOM_BYTES];
        self.random.fill_bytes(&mut bytes)?;
        let secret = ApiKeySecret::from_random_bytes(&bytes);
        let record = ApiKeyRecord {
            id: ApiKeyId(self.ids.new_id()),
            user_id,
            name: name.into_inner(),
            prefix: secret.display_prefix().to_owned(),
            is_active: true,
            last_used_at: None,
            created_at: self.clock.now(),
        };
        tracing::Span::current().record("key_id", tracing::field::display(record.id));
        let new_key = NewApiKey {
            record: record.clone(),
            key_hash: secret.hash(),
        };
        self.keys.insert_api_key(&new_key).await?;
        Ok(CreatedApiKey { record, secret })
    }

    /// The user's keys, revoked ones included, newest first.
    pub async fn list(&self, user_id: UserId) -> Result<Vec<ApiKeyRecord>, RepositoryError> {
        self.keys.list_api_keys(user_id).await
    }

    /// Deactivates one of the user's keys, and forgets it on this instance at once. Revoking an
    /// already revoked key succeeds again.
    #[tracing::instrument(skip(self))]
    pub async fn revoke(&self, user_id: UserId, key_id: ApiKeyId) -> Result<(), RevokeKeyError> {
        if !self.keys.deactivate_api_key(user_id, key_id).await? {
            return Err(RevokeKeyError::NotFound);
        }
        lock(&self.verified).retain(|_, verified| verified.key.key_id != key_id);
        Ok(())
    }

    /// Checks a presented key (as sent, unparsed) and notes its use.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<AuthenticatedApiKey, AuthenticateKeyError> {
        let secret =
            ApiKeySecret::parse(presented).map_err(|_| AuthenticateKeyError::InvalidKey)?;
        let hash = secret.hash();
        let now = self.clock.now();
        let cached = lock(&self.verified)
            .get(&hash)
            .filter(|verified| now - verified.verified_at < self.cache_ttl)
            .map(|verified| verified.key);
        let key = match cached {
            Some(key) => key,
            None => {
                let key = self
                    .keys
                    .find_active_api_key(&hash)
                    .await?
                    .ok_or(AuthenticateKeyError::InvalidKey)?;
                if !self.cache_ttl.is_zero() {
                    lock(&self.verified).insert(
                        hash,
                        VerifiedKey {
                            key,
                            verified_at: now,
                        },
                    );
                }
                key
            }
        };
        self.note_use(key.key_id, now).await;
        Ok(key)
    }

    async fn note_use(&self, key_id: ApiKeyId, at: OffsetDateTime) {
        let write_now = {
            let mut uses = lock(&self.uses);
            let entry = uses.entry(key_id).or_default();
            if entry
                .last_written
                .is_none_or(|written| at - written >= LAST_USED_WRITE_INTERVAL)
            {
                entry.last_written = Some(at);
                entry.pending = None;
                true
            } else {
                entry.pending = Some(at);
                false
            }
        };
        if write_now {
            // The key is valid whatever happens here: a failed stamp is retried by the next flush.
            if let Err(error) = self.keys.record_key_uses(&[(key_id, at)]).await {
                tracing::warn!(%error, key_id = %key_id, "could not record a key's last use");
                lock(&self.uses)
                    .entry(key_id)
                    .or_default()
                    .pending
                    .get_or_insert(at);
            }
        }
    }

    /// Writes every remembered `last_used_at` and forgets expired verifications. Called every
    /// minute and at shutdown, so no last use is lost.
    pub async fn flush_key_uses(&self) -> Result<(), RepositoryError> {
        let now = self.clock.now();
        lock(&self.verified).retain(|_, verified| now - verified.verified_at < self.cache_ttl);
        let pending: Vec<(ApiKeyId, OffsetDateTime)> = {
            let mut uses = lock(&self.uses);
            uses.retain(|_, entry| {
                entry.pending.is_some()
                    || entry
                        .last_written
                        .is_some_and(|written| now - written < LAST_USED_WRITE_INTERVAL)
            });
            uses.iter_mut()
                .filter_map(|(key_id, entry)| {
                    let at = entry.pending.take()?;
                    entry.last_written = Some(at);
                    Some((*key_id, at))
                })
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let written = self.keys.record_key_uses(&pending).await;
        if written.is_err() {
            // Keep them for the next flush.
            let mut uses = lock(&self.uses);
            for (key_id, at) in &pending {
                uses.entry(*key_id).or_default().pending.get_or_insert(*at);
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockApiKeyRepository, MockClock, MockIdGenerator, MockRandomSource};
    use mockall::predicate::eq;
    use std::sync::Mutex;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
    const KEY_ID: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    const USER: UserId = UserId(Uuid::from_u128(7));

    fn service(keys: MockApiKeyRepository) -> ApiKeyService {
        let mut random = MockRandomSource::new();
        random.expect_fill_bytes().returning(|dest| {
            for (i, byte) in dest.iter_mut().enumerate() {
                *byte = 0x30 + i as u8;
            }
            Ok(())
        });
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(KEY_ID);
        ApiKeyService::new(
            Arc::new(keys),
            Arc::new(random),
            Arc::new(clock),
            Arc::new(ids),
        )
    }

    #[test]
    fn key_format_is_prefix_and_32_lowercase_hex() {
        let secret = ApiKeySecret::from_random_bytes(&[0xab; 16]);
        assert_eq!(
            secret.expose_secret(),
            format!("nb_live_{}", "ab".repeat(16))
        );
        assert_eq!(secret.expose_secret().len(), API_KEY_LENGTH);
        assert_eq!(secret.display_prefix(), "nb_live_abab");
    }

    #[test]
    fn parse_accepts_only_well_formed_keys() {
        let good = format!("nb_live_{}", "0123456789abcdef".repeat(2));
        assert!(ApiKeySecret::parse(&good).is_ok());
        for bad in [
            String::new(),
            "nb_live_".into(),
            format!("nb_test_{}", "a".repeat(32)),
            format!("nb_live_{}", "A".repeat(32)),
            format!("nb_live_{}", "g".repeat(32)),
            format!("nb_live_{}", "a".repeat(31)),
            format!("nb_live_{}", "a".repeat(33)),
        ] {
            assert_eq!(ApiKeySecret::parse(&bad), Err(MalformedApiKey), "{bad:?}");
        }
    }

    #[test]
    fn hash_is_the_sha256_hex_of_the_whole_key() {
        let secret = ApiKeySecret::parse(&format!("nb_live_{}", "0".repeat(32))).unwrap();
        // sha256("nb_live_00000000000000000000000000000000"), computed with coreutils.
        assert_eq!(
            secret.hash().as_str(),
            "473131699e2e8655ae2db62511a61035a6fbaeedef5154b64906146ad9098118"
        );
    }

    #[test]
    fn debug_shows_only_the_display_prefix() {
        let secret = ApiKeySecret::from_random_bytes(&[0xcd; 16]);
        let shown = format!("{secret:?}");
        assert!(shown.contains("nb_live_cdcd"));
        assert!(!shown.contains(secret.expose_secret()));
    }

    #[test]
    fn names_are_trimmed_and_blank_means_none() {
        assert_eq!(ApiKeyName::parse(None).unwrap().as_deref(), None);
        assert_eq!(ApiKeyName::parse(Some("   ")).unwrap().as_deref(), None);
        assert_eq!(
            ApiKeyName::parse(Some(" ci ")).unwrap().as_deref(),
            Some("ci")
        );
        assert!(ApiKeyName::parse(Some(&"x".repeat(101))).is_err());
        assert!(ApiKeyName::parse(Some("bad\nname")).is_err());
    }

    #[tokio::test]
    async fn create_stores_the_hash_and_prefix_and_returns_the_key_once() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_insert_api_key()
            .withf(|new_key| {
                let expected = ApiKeySecret::parse("nb_live_303132333435363738393a3b3c3d3e3f")
                    .map(|secret| secret.hash());
                // 0x30.. are the bytes the mock hands out; the hex of 0x3a is "3a".
                new_key.record.prefix == "nb_live_3031"
                    && new_key.record.id == ApiKeyId(KEY_ID)
                    && new_key.record.user_id == USER
                    && new_key.record.created_at == NOW
                    && new_key.record.is_active
                    && expected.is_ok_and(|hash| hash == new_key.key_hash)
            })
            .times(1)
            .returning(|_| Ok(()));
        let created = service(keys)
            .create(USER, ApiKeyName::parse(Some("laptop")).unwrap())
            .await
            .unwrap();
        assert_eq!(
            created.secret.expose_secret(),
            "nb_live_303132333435363738393a3b3c3d3e3f"
        );
        assert_eq!(created.record.name.as_deref(), Some("laptop"));
        assert_eq!(created.record.last_used_at, None);
    }

    #[tokio::test]
    async fn create_fails_cleanly_without_randomness() {
        let mut random = MockRandomSource::new();
        random
            .expect_fill_bytes()
            .returning(|_| Err(RandomnessUnavailable));
        let mut keys = MockApiKeyRepository::new();
        keys.expect_insert_api_key().never();
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(KEY_ID);
        let service = ApiKeyService::new(
            Arc::new(keys),
            Arc::new(random),
            Arc::new(clock),
            Arc::new(ids),
        );
        let result = service.create(USER, ApiKeyName::default()).await;
        assert!(matches!(result, Err(CreateKeyError::Randomness(_))));
    }

    #[tokio::test]
    async fn revoking_a_key_the_user_does_not_own_is_not_found() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_deactivate_api_key()
            .with(eq(USER), eq(ApiKeyId(KEY_ID)))
            .returning(|_, _| Ok(false));
        let result = service(keys).revoke(USER, ApiKeyId(KEY_ID)).await;
        assert!(matches!(result, Err(RevokeKeyError::NotFound)));
    }

    #[tokio::test]
    async fn revoking_an_owned_key_succeeds() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_deactivate_api_key()
            .times(1)
            .returning(|_, _| Ok(true));
        service(keys).revoke(USER, ApiKeyId(KEY_ID)).await.unwrap();
    }

    #[tokio::test]
    async fn malformed_keys_are_refused_without_a_lookup() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_find_active_api_key().never();
        let result = service(keys)
            .authenticate("eyJhbGciOiJIUzI1NiJ9.e30.sig")
            .await;
        assert!(matches!(result, Err(AuthenticateKeyError::InvalidKey)));
    }

    #[tokio::test]
    async fn unknown_or_revoked_keys_are_invalid() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_find_active_api_key().returning(|_| Ok(None));
        keys.expect_record_key_uses().never();
        let result = service(keys)
            .authenticate(&format!("nb_live_{}", "5".repeat(32)))
            .await;
        assert!(matches!(result, Err(AuthenticateKeyError::InvalidKey)));
    }

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<OffsetDateTime>>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }

    type Uses = Arc<Mutex<Vec<(ApiKeyId, OffsetDateTime)>>>;

    /// A service over a repository that knows one key, counting lookups and recording uses.
    fn caching_service() -> (ApiKeyService, ManualClock, Arc<Mutex<u32>>, Uses, String) {
        let presented = format!("nb_live_{}", "7".repeat(32));
        let hash = ApiKeySecret::parse(&presented).unwrap().hash();
        let lookups = Arc::new(Mutex::new(0));
        let uses: Uses = Arc::default();
        let mut keys = MockApiKeyRepository::new();
        let counted = lookups.clone();
        keys.expect_find_active_api_key()
            .withf(move |h| *h == hash)
            .returning(move |_| {
                *counted.lock().unwrap() += 1;
                Ok(Some(AuthenticatedApiKey {
                    key_id: ApiKeyId(KEY_ID),
                    user_id: USER,
                }))
            });
        let recorded = uses.clone();
        keys.expect_record_key_uses().returning(move |batch| {
            recorded.lock().unwrap().extend_from_slice(batch);
            Ok(())
        });
        keys.expect_deactivate_api_key().returning(|_, _| Ok(true));
        let clock = ManualClock(Arc::new(Mutex::new(NOW)));
        let service = ApiKeyService::with_cache_ttl(
            Arc::new(keys),
            Arc::new(MockRandomSource::new()),
            Arc::new(clock.clone()),
            Arc::new(MockIdGenerator::new()),
            Duration::from_secs(30),
        );
        (service, clock, lookups, uses, presented)
    }

    #[tokio::test]
    async fn verified_keys_are_trusted_until_the_ttl_runs_out() {
        let (service, clock, lookups, _, key) = caching_service();
        service.authenticate(&key).await.unwrap();
        clock.advance(Duration::from_secs(29));
        service.authenticate(&key).await.unwrap();
        assert_eq!(
            *lookups.lock().unwrap(),
            1,
            "the second check went to the database"
        );
        clock.advance(Duration::from_secs(2));
        service.authenticate(&key).await.unwrap();
        assert_eq!(
            *lookups.lock().unwrap(),
            2,
            "an expired verification was trusted"
        );
    }

    #[tokio::test]
    async fn revoking_forgets_the_key_at_once() {
        let (service, _, lookups, _, key) = caching_service();
        service.authenticate(&key).await.unwrap();
        service.revoke(USER, ApiKeyId(KEY_ID)).await.unwrap();
        service.authenticate(&key).await.unwrap();
        assert_eq!(
            *lookups.lock().unwrap(),
            2,
            "a revoked key was still trusted from memory"
        );
    }

    #[tokio::test]
    async fn last_use_is_written_at_most_once_a_minute_and_flushed() {
        let (service, clock, _, uses, key) = caching_service();
        service.authenticate(&key).await.unwrap();
        assert_eq!(
            *uses.lock().unwrap(),
            [(ApiKeyId(KEY_ID), NOW)],
            "the first use is written at once"
        );
        clock.advance(Duration::from_secs(10));
        service.authenticate(&key).await.unwrap();
        clock.advance(Duration::from_secs(10));
        service.authenticate(&key).await.unwrap();
        assert_eq!(
            uses.lock().unwrap().len(),
            1,
            "uses within a minute were written"
        );
        service.flush_key_uses().await.unwrap();
        let latest = NOW + Duration::from_secs(20);
        assert_eq!(
            uses.lock().unwrap().last(),
            Some(&(ApiKeyId(KEY_ID), latest))
        );
        service.flush_key_uses().await.unwrap();
        assert_eq!(
            uses.lock().unwrap().len(),
            2,
            "a flush with nothing new wrote again"
        );
        clock.advance(Duration::from_secs(61));
        service.authenticate(&key).await.unwrap();
        assert_eq!(
            uses.lock().unwrap().len(),
            3,
            "a use a minute later was not written"
        );
    }
}
