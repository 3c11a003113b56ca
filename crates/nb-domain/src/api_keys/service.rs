//! The service that issues, lists, revokes and checks API keys. It keeps no state of its own:
//! caching verified keys and coalescing `last_used_at` writes is the job of the repository it
//! is given (see [`super::CachingApiKeyRepository`]).

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::error::{
    AuthenticateKeyError, CreateKeyError, FindKeyError, RevokeKeyError, RollKeyError,
    UpdateKeyError,
};
use super::model::{
    API_KEY_RANDOM_BYTES, ApiKeyId, ApiKeyRecord, ApiKeySecret, ApiKeyView, AuthenticatedApiKey,
    CreatedApiKey, KeyChanges, KeyMode, KeySettings, NewApiKey, RollRefusal,
};
use crate::accounts::model::UserId;
use crate::api_keys::ports::{ApiKeyRepository, InsertKeyError};
use crate::error::RepositoryError;
use crate::generation::ports::GenerationRepository;
use crate::pagination::{Page, PageRequest};
use crate::quota::model::PeriodLimits;
use crate::system::{Clock, IdGenerator, RandomSource, to_microseconds};

/// The ports an [`ApiKeyService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct ApiKeyPorts {
    pub keys: Arc<dyn ApiKeyRepository>,
    /// Where usage is counted (for the keys' `usage`).
    pub usage: Arc<dyn GenerationRepository>,
    pub random: Arc<dyn RandomSource>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

/// The deployment's rules for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// How many usable keys (not revoked, not expired) one account may hold.
    pub max_active_per_account: u32,
    /// Quotas a new key gets when it is created without its own.
    pub default_quotas: PeriodLimits,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            max_active_per_account: 20,
            default_quotas: PeriodLimits::default(),
        }
    }
}

/// How long a rolled key keeps working by default: a day to deploy its successor.
pub const DEFAULT_ROLL_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Clone)]
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyRepository>,
    usage: Arc<dyn GenerationRepository>,
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

/// API keys as the HTTP adapter uses them: issued, listed, changed, rolled, revoked, and checked on every generation.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ApiKeys: Send + Sync + 'static {
    /// Creates a key. A live key's quotas left out take the deployment's defaults for new
    /// keys (a test key's quotas count only its own test images, so it gets none unasked).
    async fn create(
        &self,
        user_id: UserId,
        mut settings: KeySettings,
    ) -> Result<CreatedApiKey, CreateKeyError>;

    /// One page of the user's keys, revoked ones included, newest first.
    async fn list(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyView>, RepositoryError>;

    /// One of the user's keys.
    async fn get(&self, user_id: UserId, key_id: ApiKeyId) -> Result<ApiKeyView, FindKeyError>;

    /// Renames a key, changes or removes its expiry, or changes its limits. A new expiry
    /// must be in the future.
    async fn update(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
        mut changes: KeyChanges,
    ) -> Result<ApiKeyView, UpdateKeyError>;

    /// A new key with the old one's name and limits, shown once; the old key keeps working
    /// for `grace` (zero: it stops at once), then expires.
    async fn roll(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
        grace: Duration,
    ) -> Result<CreatedApiKey, RollKeyError>;

    /// Deactivates one of the user's keys. Revoking an already revoked key succeeds again.
    async fn revoke(&self, user_id: UserId, key_id: ApiKeyId) -> Result<(), RevokeKeyError>;

    /// Checks a presented key (as sent, unparsed) and notes its use: refused when it is
    /// unknown or revoked, past its expiry, or its account is disabled.
    async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<AuthenticatedApiKey, AuthenticateKeyError>;
}

impl ApiKeyService {
    pub fn new(ports: ApiKeyPorts, policy: KeyPolicy) -> Self {
        Self {
            keys: ports.keys,
            usage: ports.usage,
            random: ports.random,
            clock: ports.clock,
            ids: ports.ids,
            policy,
        }
    }

    /// A fresh key with its secret; not stored yet.
    fn new_key(
        &self,
        user_id: UserId,
        settings: KeySettings,
        rolled_from: Option<ApiKeyId>,
    ) -> Result<(NewApiKey, ApiKeySecret), crate::system::RandomnessUnavailable> {
        let mut bytes = [0u8; API_KEY_RANDOM_BYTES];
        self.random.fill_bytes(&mut bytes)?;
        let secret = ApiKeySecret::from_random_bytes(settings.mode, &bytes);
        let record = ApiKeyRecord {
            id: ApiKeyId(self.ids.new_id()),
            user_id,
            name: settings.name.into_inner(),
            prefix: secret.display_prefix().to_owned(),
            mode: settings.mode,
            is_active: true,
            expires_at: settings.expires_at.map(to_microseconds),
            limits: settings.limits,
            rolled_from,
            last_used_at: None,
            created_at: self.clock.now(),
        };
        let new_key = NewApiKey {
            record,
            key_hash: secret.hash(),
        };
        Ok((new_key, secret))
    }

    /// The records with what each has made today and this month.
    async fn with_usage(
        &self,
        records: Vec<ApiKeyRecord>,
    ) -> Result<Vec<ApiKeyView>, RepositoryError> {
        let ids: Vec<ApiKeyId> = records.iter().map(|record| record.id).collect();
        let usage: HashMap<ApiKeyId, _> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.usage
                .key_usage(&ids, self.clock.now())
                .await?
                .into_iter()
                .collect()
        };
        Ok(records
            .into_iter()
            .map(|record| ApiKeyView {
                usage: usage.get(&record.id).copied().unwrap_or_default(),
                record,
            })
            .collect())
    }
}

#[async_trait]
impl ApiKeys for ApiKeyService {
    #[tracing::instrument(skip(self, settings), fields(key_id))]
    async fn create(
        &self,
        user_id: UserId,
        mut settings: KeySettings,
    ) -> Result<CreatedApiKey, CreateKeyError> {
        if settings
            .expires_at
            .is_some_and(|expires_at| expires_at <= self.clock.now())
        {
            return Err(CreateKeyError::ExpiryInThePast);
        }
        if settings.mode == KeyMode::Live {
            let quotas = &mut settings.limits.quotas;
            let defaults = self.policy.default_quotas;
            quotas.per_day = quotas.per_day.or(defaults.per_day);
            quotas.per_month = quotas.per_month.or(defaults.per_month);
            quotas.budget_per_day = quotas.budget_per_day.or(defaults.budget_per_day);
            quotas.budget_per_month = quotas.budget_per_month.or(defaults.budget_per_month);
        }
        let (new_key, secret) = self.new_key(user_id, settings, None)?;
        tracing::Span::current().record("key_id", tracing::field::display(new_key.record.id));
        let max_active = self.policy.max_active_per_account;
        match self.keys.insert_api_key(&new_key, max_active).await {
            Ok(()) => Ok(CreatedApiKey {
                record: new_key.record,
                secret,
            }),
            Err(InsertKeyError::TooManyActiveKeys { max_active }) => {
                Err(CreateKeyError::TooManyActiveKeys { max_active })
            }
            Err(InsertKeyError::Repository(error)) => Err(error.into()),
        }
    }

    async fn list(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyView>, RepositoryError> {
        let page = self.keys.list_api_keys(user_id, page).await?;
        Ok(Page {
            items: self.with_usage(page.items).await?,
            next: page.next,
        })
    }

    async fn get(&self, user_id: UserId, key_id: ApiKeyId) -> Result<ApiKeyView, FindKeyError> {
        let record = self
            .keys
            .find_api_key(user_id, key_id)
            .await?
            .ok_or(FindKeyError::NotFound)?;
        let mut views = self.with_usage(vec![record]).await?;
        views.pop().ok_or(FindKeyError::NotFound)
    }

    #[tracing::instrument(skip(self, changes))]
    async fn update(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
        mut changes: KeyChanges,
    ) -> Result<ApiKeyView, UpdateKeyError> {
        let now = self.clock.now();
        changes.expires_at = changes.expires_at.map(|at| at.map(to_microseconds));
        if let Some(Some(expires_at)) = changes.expires_at
            && expires_at <= now
        {
            return Err(UpdateKeyError::ExpiryInThePast);
        }
        let record = self
            .keys
            .update_api_key(user_id, key_id, &changes, now)
            .await?
            .ok_or(UpdateKeyError::NotFound)?;
        let mut views = self.with_usage(vec![record]).await?;
        views.pop().ok_or(UpdateKeyError::NotFound)
    }

    #[tracing::instrument(skip(self))]
    async fn roll(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
        grace: Duration,
    ) -> Result<CreatedApiKey, RollKeyError> {
        let old = self
            .keys
            .find_api_key(user_id, key_id)
            .await?
            .filter(|old| old.is_active)
            .ok_or(RollRefusal::NotFound)?;
        let settings = KeySettings {
            name: super::model::ApiKeyName::from_stored(old.name.clone()),
            mode: old.mode,
            expires_at: None,
            limits: old.limits,
        };
        let (new_key, secret) = self.new_key(user_id, settings, Some(old.id))?;
        let old_expires_at: OffsetDateTime = new_key.record.created_at + grace;
        self.keys
            .roll_api_key(
                user_id,
                old.id,
                &new_key,
                old_expires_at,
                self.policy.max_active_per_account,
            )
            .await?;
        Ok(CreatedApiKey {
            record: new_key.record,
            secret,
        })
    }

    #[tracing::instrument(skip(self))]
    async fn revoke(&self, user_id: UserId, key_id: ApiKeyId) -> Result<(), RevokeKeyError> {
        if self.keys.deactivate_api_key(user_id, key_id).await? {
            Ok(())
        } else {
            Err(RevokeKeyError::NotFound)
        }
    }

    async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<AuthenticatedApiKey, AuthenticateKeyError> {
        let secret =
            ApiKeySecret::parse(presented).map_err(|_| AuthenticateKeyError::InvalidKey)?;
        let access = self
            .keys
            .find_active_api_key(&secret.hash())
            .await?
            .ok_or(AuthenticateKeyError::InvalidKey)?;
        let key = access.check(self.clock.now())?;
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
    use crate::api_keys::model::{ApiKeyName, KeyAccess};
    use crate::api_keys::ports::MockApiKeyRepository;
    use crate::system::{MockClock, MockIdGenerator, MockRandomSource, RandomnessUnavailable};
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
            usage: Arc::new(crate::generation::ports::MockGenerationRepository::new()),
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
            .create(
                USER,
                KeySettings {
                    name: ApiKeyName::parse(Some("laptop")).unwrap(),
                    ..KeySettings::default()
                },
            )
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
            .create(USER, KeySettings::default())
            .await;
        assert!(matches!(result, Err(CreateKeyError::Randomness(_))));
    }

    #[tokio::test]
    async fn a_full_account_gets_no_new_key() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_insert_api_key()
            .returning(|_, max_active| Err(InsertKeyError::TooManyActiveKeys { max_active }));
        let result = service(keys).create(USER, KeySettings::default()).await;
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
        let caller = AuthenticatedApiKey::unlimited(ApiKeyId(KEY_ID), USER);
        let access = KeyAccess {
            key: caller,
            expires_at: None,
            account_disabled: false,
        };
        let mut keys = MockApiKeyRepository::new();
        keys.expect_find_active_api_key()
            .with(eq(hash))
            .returning(move |_| Ok(Some(access)));
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
