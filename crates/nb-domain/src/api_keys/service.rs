//! The service that issues, lists, revokes and checks API keys. It keeps no state of its own:
//! caching verified keys and coalescing `last_used_at` writes is the job of the repository it
//! is given (see [`super::CachingApiKeyRepository`]).

use std::fmt;
use std::sync::Arc;

use super::error::{AuthenticateKeyError, CreateKeyError, RevokeKeyError};
use super::model::{
    API_KEY_RANDOM_BYTES, ApiKeyId, ApiKeyName, ApiKeyRecord, ApiKeySecret, AuthenticatedApiKey,
    CreatedApiKey, NewApiKey,
};
use crate::RepositoryError;
use crate::pagination::{Page, PageRequest};
use crate::ports::{ApiKeyRepository, Clock, IdGenerator, InsertKeyError, RandomSource};
use crate::user::UserId;

/// The ports an [`ApiKeyService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct ApiKeyPorts {
    pub keys: Arc<dyn ApiKeyRepository>,
    pub random: Arc<dyn RandomSource>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

/// The deployment's rules for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// How many unrevoked keys one account may hold.
    pub max_active_per_account: u32,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            max_active_per_account: 20,
        }
    }
}

#[derive(Clone)]
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyRepository>,
    random: Arc<dyn RandomSource>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    policy: KeyPolicy,
}

impl fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ApiKeyService {
    pub fn new(ports: ApiKeyPorts, policy: KeyPolicy) -> Self {
        Self {
            keys: ports.keys,
            random: ports.random,
            clock: ports.clock,
            ids: ports.ids,
            policy,
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
        let max_active = self.policy.max_active_per_account;
        match self.keys.insert_api_key(&new_key, max_active).await {
            Ok(()) => Ok(CreatedApiKey { record, secret }),
            Err(InsertKeyError::TooManyActiveKeys { max_active }) => {
                Err(CreateKeyError::TooManyActiveKeys { max_active })
            }
            Err(InsertKeyError::Repository(error)) => Err(error.into()),
        }
    }

    /// One page of the user's keys, revoked ones included, newest first.
    pub async fn list(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyRecord>, RepositoryError> {
        self.keys.list_api_keys(user_id, page).await
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

    /// Checks a presented key (as sent, unparsed) and notes its use.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<AuthenticatedApiKey, AuthenticateKeyError> {
        let secret =
            ApiKeySecret::parse(presented).map_err(|_| AuthenticateKeyError::InvalidKey)?;
        let key = self
            .keys
            .find_active_api_key(&secret.hash())
            .await?
            .ok_or(AuthenticateKeyError::InvalidKey)?;
        // The key is valid whatever happens here: a failed stamp only loses a `last_used_at`.
        if let Err(error) = self
            .keys
            .record_key_uses(&[(key.key_id, self.clock.now())])
            .await
        {
            tracing::warn!(%error, key_id = %key.key_id, "could not record a key's last use");
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{
        MockApiKeyRepository, MockClock, MockIdGenerator, MockRandomSource, RandomnessUnavailable,
    };
    use mockall::predicate::eq;
    use time::OffsetDateTime;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
    const KEY_ID: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    const USER: UserId = UserId(Uuid::from_u128(7));

    fn service_with(keys: MockApiKeyRepository, random: MockRandomSource) -> ApiKeyService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(KEY_ID);
        let ports = ApiKeyPorts {
            keys: Arc::new(keys),
            random: Arc::new(random),
            clock: Arc::new(clock),
            ids: Arc::new(ids),
        };
        ApiKeyService::new(ports, KeyPolicy::default())
    }

    fn service(keys: MockApiKeyRepository) -> ApiKeyService {
        let mut random = MockRandomSource::new();
        random.expect_fill_bytes().returning(|dest| {
            for (i, byte) in dest.iter_mut().enumerate() {
                *byte = 0x30 + i as u8;
            }
            Ok(())
        });
        service_with(keys, random)
    }

    #[tokio::test]
    async fn create_stores_the_hash_and_prefix_and_returns_the_key_once() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_insert_api_key()
            .withf(|new_key, max_active| {
                let expected = ApiKeySecret::parse("nb_live_303132333435363738393a3b3c3d3e3f")
                    .map(|secret| secret.hash());
                // 0x30.. are the bytes the mock hands out; the hex of 0x3a is "3a".
                new_key.record.prefix == "nb_live_3031"
                    && new_key.record.id == ApiKeyId(KEY_ID)
                    && new_key.record.user_id == USER
                    && new_key.record.created_at == NOW
                    && new_key.record.is_active
                    && expected.is_ok_and(|hash| hash == new_key.key_hash)
                    && *max_active == KeyPolicy::default().max_active_per_account
            })
            .times(1)
            .returning(|_, _| Ok(()));
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
        let result = service_with(keys, random)
            .create(USER, ApiKeyName::default())
            .await;
        assert!(matches!(result, Err(CreateKeyError::Randomness(_))));
    }

    #[tokio::test]
    async fn a_full_account_gets_no_new_key() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_insert_api_key()
            .returning(|_, max_active| Err(InsertKeyError::TooManyActiveKeys { max_active }));
        let result = service(keys).create(USER, ApiKeyName::default()).await;
        assert!(matches!(
            result,
            Err(CreateKeyError::TooManyActiveKeys { max_active: 20 })
        ));
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

    #[tokio::test]
    async fn a_valid_key_is_the_caller_and_its_use_is_noted() {
        let presented = format!("nb_live_{}", "6".repeat(32));
        let hash = ApiKeySecret::parse(&presented).unwrap().hash();
        let caller = AuthenticatedApiKey {
            key_id: ApiKeyId(KEY_ID),
            user_id: USER,
        };
        let mut keys = MockApiKeyRepository::new();
        keys.expect_find_active_api_key()
            .with(eq(hash))
            .returning(move |_| Ok(Some(caller)));
        keys.expect_record_key_uses()
            .withf(|uses| uses == [(ApiKeyId(KEY_ID), NOW)])
            .times(1)
            .returning(|_| Err(RepositoryError::Unavailable("down".into())));
        // A failed stamp does not fail the request.
        assert_eq!(
            service(keys).authenticate(&presented).await.unwrap(),
            caller
        );
    }
}
