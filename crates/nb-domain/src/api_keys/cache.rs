//! A decorator over any [`ApiKeyRepository`] for the hot path of every generation: verified
//! keys are trusted from memory for a while, and `last_used_at` writes are coalesced.
//!
//! - `find_active_api_key` answers from memory for `ttl` after the repository last said the
//!   key was active. A change made through this decorator (revoking, updating, rolling a
//!   key, or an account change it is told of) forgets the key at once here and is announced
//!   to the other instances (a [`KeyChangeBroadcast`], when there are peers), which
//!   [`apply`] it; a lost announcement is bounded by `ttl`.
//! - `record_key_uses` writes a key's first use at once, then at most once every
//!   [`LAST_USED_WRITE_INTERVAL`]; uses in between only remember the latest time, written by
//!   [`flush_key_uses`] (which the server calls every minute and at shutdown).
//!
//! Both maps are bounded: at most [`MAX_CACHED_KEYS`] entries each, expired ones dropped
//! first; past that, keys are simply not cached.
//!
//! [`apply`]: CachingApiKeyRepository::apply
//! [`flush_key_uses`]: CachingApiKeyRepository::flush_key_uses

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::model::{ApiKeyHash, ApiKeyId, ApiKeyRecord, KeyAccess, KeyChanges, NewApiKey};
use crate::accounts::model::UserId;
use crate::api_keys::ports::{
    ApiKeyRepository, InsertKeyError, KeyChange, KeyChangeBroadcast, KeyInvalidation,
    RollApiKeyError,
};
use crate::error::RepositoryError;
use crate::pagination::{Page, PageRequest};
use crate::system::Clock;

/// How long a verified key is trusted without asking the database again.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// `last_used_at` is written at most this often per key.
pub const LAST_USED_WRITE_INTERVAL: Duration = Duration::from_secs(60);
/// The most keys each map holds.
pub const MAX_CACHED_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct VerifiedKey {
    access: KeyAccess,
    verified_at: OffsetDateTime,
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyUses {
    last_written: Option<OffsetDateTime>,
    pending: Option<OffsetDateTime>,
}

pub struct CachingApiKeyRepository {
    inner: Arc<dyn ApiKeyRepository>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    verified: Mutex<HashMap<ApiKeyHash, VerifiedKey>>,
    uses: Mutex<HashMap<ApiKeyId, KeyUses>>,
    peers: Option<Arc<dyn KeyChangeBroadcast>>,
}

impl fmt::Debug for CachingApiKeyRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingApiKeyRepository")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means another thread panicked while holding it; the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CachingApiKeyRepository {
    /// Trusts verified keys for `ttl` (zero: never, every check asks `inner`).
    pub fn new(inner: Arc<dyn ApiKeyRepository>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self {
            inner,
            clock,
            ttl,
            verified: Mutex::default(),
            uses: Mutex::default(),
            peers: None,
        }
    }

    /// Announces every change to the other instances through `peers`.
    pub fn with_peers(mut self, peers: Arc<dyn KeyChangeBroadcast>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// A change another instance announced (or `None`: announcements may have been lost):
    /// forgets what it concerns (everything, for `None`), without announcing it again.
    pub fn apply(&self, change: Option<KeyChange>) {
        match change {
            Some(KeyChange::Key(key_id)) => self.evict(key_id),
            Some(KeyChange::Account(user_id)) => self.evict_user(user_id),
            None => lock(&self.verified).clear(),
        }
    }

    /// A change made here: forgotten at once, and announced.
    async fn changed(&self, change: KeyChange) {
        self.apply(Some(change));
        if let Some(peers) = &self.peers {
            peers.announce(change).await;
        }
    }

    /// Forgets what is cached of one key, so its next check asks the repository.
    pub fn evict(&self, key_id: ApiKeyId) {
        lock(&self.verified).retain(|_, verified| verified.access.key.key_id != key_id);
    }

    /// Forgets every key of an account (disabled, or its limits changed).
    pub fn evict_user(&self, user_id: UserId) {
        lock(&self.verified).retain(|_, verified| verified.access.key.user_id != user_id);
    }

    fn is_fresh(&self, verified: &VerifiedKey, now: OffsetDateTime) -> bool {
        now - verified.verified_at < self.ttl
    }

    fn remember(&self, hash: ApiKeyHash, access: KeyAccess, now: OffsetDateTime) {
        if self.ttl.is_zero() {
            return;
        }
        let mut verified = lock(&self.verified);
        if verified.len() >= MAX_CACHED_KEYS {
            verified.retain(|_, entry| now - entry.verified_at < self.ttl);
            if verified.len() >= MAX_CACHED_KEYS {
                return;
            }
        }
        verified.insert(
            hash,
            VerifiedKey {
                access,
                verified_at: now,
            },
        );
    }

    /// Writes every remembered `last_used_at` and forgets expired verifications. A failed
    /// write keeps the uses for the next flush.
    pub async fn flush_key_uses(&self) -> Result<(), RepositoryError> {
        let now = self.clock.now();
        lock(&self.verified).retain(|_, verified| now - verified.verified_at < self.ttl);
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
        let written = self.inner.record_key_uses(&pending).await;
        if written.is_err() {
            self.keep_for_next_flush(&pending);
        }
        written
    }

    fn keep_for_next_flush(&self, uses: &[(ApiKeyId, OffsetDateTime)]) {
        let mut remembered = lock(&self.uses);
        for (key_id, at) in uses {
            let entry = remembered.entry(*key_id).or_default();
            entry.pending = entry.pending.max(Some(*at));
        }
    }

    /// Splits uses into those to write now and those only remembered.
    fn uses_to_write_now(
        &self,
        uses: &[(ApiKeyId, OffsetDateTime)],
    ) -> Vec<(ApiKeyId, OffsetDateTime)> {
        let mut remembered = lock(&self.uses);
        let mut write_now = Vec::new();
        for &(key_id, at) in uses {
            if remembered.len() >= MAX_CACHED_KEYS && !remembered.contains_key(&key_id) {
                write_now.push((key_id, at));
                continue;
            }
            let entry = remembered.entry(key_id).or_default();
            if entry
                .last_written
                .is_none_or(|written| at - written >= LAST_USED_WRITE_INTERVAL)
            {
                entry.last_written = Some(at);
                entry.pending = None;
                write_now.push((key_id, at));
            } else {
                entry.pending = entry.pending.max(Some(at));
            }
        }
        write_now
    }
}

/// On this instance, a change is seen at once.
#[async_trait]
impl KeyInvalidation for CachingApiKeyRepository {
    async fn key_changed(&self, key_id: ApiKeyId) {
        self.changed(KeyChange::Key(key_id)).await;
    }

    async fn account_changed(&self, user_id: UserId) {
        self.changed(KeyChange::Account(user_id)).await;
    }
}

#[async_trait]
impl ApiKeyRepository for CachingApiKeyRepository {
    async fn insert_api_key(
        &self,
        new_key: &NewApiKey,
        max_active: u32,
    ) -> Result<(), InsertKeyError> {
        self.inner.insert_api_key(new_key, max_active).await
    }

    async fn list_api_keys(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyRecord>, RepositoryError> {
        self.inner.list_api_keys(user_id, page).await
    }

    async fn find_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
    ) -> Result<Option<ApiKeyRecord>, RepositoryError> {
        self.inner.find_api_key(user_id, key_id).await
    }

    async fn update_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
        changes: &KeyChanges,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKeyRecord>, RepositoryError> {
        let updated = self
            .inner
            .update_api_key(user_id, key_id, changes, at)
            .await?;
        self.changed(KeyChange::Key(key_id)).await;
        Ok(updated)
    }

    async fn roll_api_key(
        &self,
        user_id: UserId,
        old: ApiKeyId,
        new_key: &NewApiKey,
        old_expires_at: OffsetDateTime,
        max_active: u32,
    ) -> Result<(), RollApiKeyError> {
        self.inner
            .roll_api_key(user_id, old, new_key, old_expires_at, max_active)
            .await?;
        self.changed(KeyChange::Key(old)).await;
        Ok(())
    }

    async fn deactivate_api_key(
        &self,
        user_id: UserId,
        key_id: ApiKeyId,
    ) -> Result<bool, RepositoryError> {
        let found = self.inner.deactivate_api_key(user_id, key_id).await?;
        if found {
            self.changed(KeyChange::Key(key_id)).await;
        }
        Ok(found)
    }

    async fn find_active_api_key(
        &self,
        key_hash: &ApiKeyHash,
    ) -> Result<Option<KeyAccess>, RepositoryError> {
        let now = self.clock.now();
        let cached = lock(&self.verified)
            .get(key_hash)
            .filter(|verified| self.is_fresh(verified, now))
            .map(|verified| verified.access);
        if let Some(access) = cached {
            return Ok(Some(access));
        }
        let found = self.inner.find_active_api_key(key_hash).await?;
        if let Some(access) = found {
            self.remember(key_hash.clone(), access, now);
        }
        Ok(found)
    }

    async fn record_key_uses(
        &self,
        uses: &[(ApiKeyId, OffsetDateTime)],
    ) -> Result<(), RepositoryError> {
        let write_now = self.uses_to_write_now(uses);
        if write_now.is_empty() {
            return Ok(());
        }
        let written = self.inner.record_key_uses(&write_now).await;
        if written.is_err() {
            self.keep_for_next_flush(&write_now);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::model::{ApiKeySecret, AuthenticatedApiKey};
    use crate::api_keys::ports::MockApiKeyRepository;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
    const KEY_ID: ApiKeyId = ApiKeyId(Uuid::from_u128(1));
    const USER: UserId = UserId(Uuid::from_u128(7));
    const ACCESS: KeyAccess = KeyAccess {
        key: AuthenticatedApiKey::unlimited(KEY_ID, USER),
        expires_at: None,
        account_disabled: false,
    };

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

    struct Fixture {
        cache: CachingApiKeyRepository,
        clock: ManualClock,
        lookups: Arc<Mutex<u32>>,
        uses: Uses,
        hash: ApiKeyHash,
    }

    /// A cache over a repository that knows one key, counting lookups and recording uses.
    fn fixture(ttl: Duration) -> Fixture {
        let hash = ApiKeySecret::parse(&format!("nb_live_{}", "7".repeat(32)))
            .unwrap()
            .hash();
        let lookups = Arc::new(Mutex::new(0));
        let uses: Uses = Arc::default();
        let mut keys = MockApiKeyRepository::new();
        let counted = lookups.clone();
        let known = hash.clone();
        keys.expect_find_active_api_key()
            .withf(move |h| *h == known)
            .returning(move |_| {
                *counted.lock().unwrap() += 1;
                Ok(Some(ACCESS))
            });
        let recorded = uses.clone();
        keys.expect_record_key_uses().returning(move |batch| {
            recorded.lock().unwrap().extend_from_slice(batch);
            Ok(())
        });
        keys.expect_deactivate_api_key().returning(|_, _| Ok(true));
        let clock = ManualClock(Arc::new(Mutex::new(NOW)));
        let cache = CachingApiKeyRepository::new(Arc::new(keys), Arc::new(clock.clone()), ttl);
        Fixture {
            cache,
            clock,
            lookups,
            uses,
            hash,
        }
    }

    #[tokio::test]
    async fn verified_keys_are_trusted_until_the_ttl_runs_out() {
        let f = fixture(Duration::from_secs(30));
        assert_eq!(
            f.cache.find_active_api_key(&f.hash).await.unwrap(),
            Some(ACCESS)
        );
        f.clock.advance(Duration::from_secs(29));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(
            *f.lookups.lock().unwrap(),
            1,
            "the second check went to the database"
        );
        f.clock.advance(Duration::from_secs(2));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(
            *f.lookups.lock().unwrap(),
            2,
            "an expired verification was trusted"
        );
    }

    #[tokio::test]
    async fn a_zero_ttl_always_asks_the_repository() {
        let f = fixture(Duration::ZERO);
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(*f.lookups.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn revoking_forgets_the_key_at_once() {
        let f = fixture(Duration::from_secs(30));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert!(f.cache.deactivate_api_key(USER, KEY_ID).await.unwrap());
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(
            *f.lookups.lock().unwrap(),
            2,
            "a revoked key was still trusted from memory"
        );
    }

    #[tokio::test]
    async fn an_evicted_account_has_its_keys_checked_again() {
        let f = fixture(Duration::from_secs(30));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        f.cache.evict_user(UserId(Uuid::from_u128(999)));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(
            *f.lookups.lock().unwrap(),
            1,
            "another account's eviction evicted this key"
        );
        f.cache.evict_user(USER);
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(*f.lookups.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn changes_are_announced_and_announcements_are_applied_without_echo() {
        let mut peers = crate::api_keys::ports::MockKeyChangeBroadcast::new();
        peers
            .expect_announce()
            .withf(|change| *change == KeyChange::Key(KEY_ID))
            .times(1)
            .returning(|_| ());
        peers
            .expect_announce()
            .withf(|change| *change == KeyChange::Account(USER))
            .times(1)
            .returning(|_| ());
        let mut f = fixture(Duration::from_secs(30));
        f.cache = f.cache.with_peers(Arc::new(peers));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert!(f.cache.deactivate_api_key(USER, KEY_ID).await.unwrap());
        f.cache.account_changed(USER).await;
        // What other instances announce is applied here and not announced again (the mock
        // would see a third call).
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        f.cache.apply(Some(KeyChange::Key(KEY_ID)));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        f.cache.apply(None);
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(*f.lookups.lock().unwrap(), 4);
        assert_eq!(
            KeyChange::decode(&KeyChange::Account(USER).encode()),
            Some(KeyChange::Account(USER))
        );
        assert_eq!(KeyChange::decode("key:nope"), None);
    }

    #[tokio::test]
    async fn an_evicted_key_is_checked_again() {
        let f = fixture(Duration::from_secs(30));
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        f.cache.evict(KEY_ID);
        f.cache.find_active_api_key(&f.hash).await.unwrap();
        assert_eq!(*f.lookups.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn last_use_is_written_at_most_once_a_minute_and_flushed() {
        let f = fixture(Duration::from_secs(30));
        let use_now = |clock: &ManualClock| [(KEY_ID, clock.now())];
        f.cache.record_key_uses(&use_now(&f.clock)).await.unwrap();
        assert_eq!(
            *f.uses.lock().unwrap(),
            [(KEY_ID, NOW)],
            "the first use is written at once"
        );
        f.clock.advance(Duration::from_secs(10));
        f.cache.record_key_uses(&use_now(&f.clock)).await.unwrap();
        f.clock.advance(Duration::from_secs(10));
        f.cache.record_key_uses(&use_now(&f.clock)).await.unwrap();
        assert_eq!(
            f.uses.lock().unwrap().len(),
            1,
            "uses within a minute were written"
        );
        f.cache.flush_key_uses().await.unwrap();
        let latest = NOW + Duration::from_secs(20);
        assert_eq!(f.uses.lock().unwrap().last(), Some(&(KEY_ID, latest)));
        f.cache.flush_key_uses().await.unwrap();
        assert_eq!(
            f.uses.lock().unwrap().len(),
            2,
            "a flush with nothing new wrote again"
        );
        f.clock.advance(Duration::from_secs(61));
        f.cache.record_key_uses(&use_now(&f.clock)).await.unwrap();
        assert_eq!(
            f.uses.lock().unwrap().len(),
            3,
            "a use a minute later was not written"
        );
    }

    #[tokio::test]
    async fn uses_whose_write_failed_are_written_by_the_next_flush() {
        let mut keys = MockApiKeyRepository::new();
        let mut attempts = 0;
        let written: Uses = Arc::default();
        let recorded = written.clone();
        keys.expect_record_key_uses().returning(move |batch| {
            attempts += 1;
            if attempts == 1 {
                return Err(RepositoryError::Unavailable("down".into()));
            }
            recorded.lock().unwrap().extend_from_slice(batch);
            Ok(())
        });
        let clock = ManualClock(Arc::new(Mutex::new(NOW)));
        let cache =
            CachingApiKeyRepository::new(Arc::new(keys), Arc::new(clock), DEFAULT_KEY_CACHE_TTL);
        assert!(cache.record_key_uses(&[(KEY_ID, NOW)]).await.is_err());
        cache.flush_key_uses().await.unwrap();
        assert_eq!(*written.lock().unwrap(), [(KEY_ID, NOW)]);
    }
}
