//! API keys: how they look, how they are stored, and the service that issues, lists, revokes
//! and checks them.
//!
//! A key is `nb_live_` followed by 32 lowercase hex characters (128 bits from the OS CSPRNG).
//! Only its SHA-256 is stored, with a short display prefix; the full key exists in memory
//! once, when it is created, and is handed to the caller that single time.

use std::fmt;
use std::sync::Arc;

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

/// Issues, lists, revokes and checks API keys.
#[derive(Clone)]
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyRepository>,
    random: Arc<dyn RandomSource>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService").finish_non_exhaustive()
    }
}

impl ApiKeyService {
    pub fn new(
        keys: Arc<dyn ApiKeyRepository>,
        random: Arc<dyn RandomSource>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self {
            keys,
            random,
            clock,
            ids,
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

    /// Deactivates one of the user's keys. Revoking an already revoked key succeeds again.
    #[tracing::instrument(skip(self))]
    pub async fn revoke(&self, user_id: UserId, key_id: ApiKeyId) -> Result<(), RevokeKeyError> {
        if self.keys.deactivate_api_key(user_id, key_id).await? {
            Ok(())
        } else {
            Err(RevokeKeyError::NotFound)
        }
    }

    /// Checks a presented key (as sent, unparsed) and stamps its `last_used_at`.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<AuthenticatedApiKey, AuthenticateKeyError> {
        let secret =
            ApiKeySecret::parse(presented).map_err(|_| AuthenticateKeyError::InvalidKey)?;
        self.keys
            .authenticate_api_key(&secret.hash(), self.clock.now())
            .await?
            .ok_or(AuthenticateKeyError::InvalidKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockApiKeyRepository, MockClock, MockIdGenerator, MockRandomSource};
    use mockall::predicate::eq;
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
        keys.expect_authenticate_api_key().never();
        let result = service(keys)
            .authenticate("eyJhbGciOiJIUzI1NiJ9.e30.sig")
            .await;
        assert!(matches!(result, Err(AuthenticateKeyError::InvalidKey)));
    }

    #[tokio::test]
    async fn authenticate_looks_up_the_hash_and_stamps_the_time() {
        let presented = format!("nb_live_{}", "5".repeat(32));
        let expected_hash = ApiKeySecret::parse(&presented).unwrap().hash();
        let mut keys = MockApiKeyRepository::new();
        keys.expect_authenticate_api_key()
            .with(eq(expected_hash), eq(NOW))
            .returning(|_, _| {
                Ok(Some(AuthenticatedApiKey {
                    key_id: ApiKeyId(KEY_ID),
                    user_id: USER,
                }))
            });
        let authenticated = service(keys).authenticate(&presented).await.unwrap();
        assert_eq!(authenticated.user_id, USER);
    }

    #[tokio::test]
    async fn unknown_or_revoked_keys_are_invalid() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_authenticate_api_key()
            .returning(|_, _| Ok(None));
        let result = service(keys)
            .authenticate(&format!("nb_live_{}", "5".repeat(32)))
            .await;
        assert!(matches!(result, Err(AuthenticateKeyError::InvalidKey)));
    }
}
