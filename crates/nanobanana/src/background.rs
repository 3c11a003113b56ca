//! Work the server does on its own, apart from requests: every minute it writes the keys'
//! coalesced `last_used_at` and forgets idle rate-limit entries; every hour it removes
//! expired sessions and expired idempotency entries, and sweeps stored images that no
//! generation names (left by a crash between storing and recording); all along, on
//! PostgreSQL or Redis, it listens for key changes announced by other instances; at shutdown
//! it writes what is still only in memory.

use std::sync::Arc;
use std::time::Duration;

use nb_db::DatabaseUrl;
use nb_domain::accounts::AccountService;
use nb_domain::api_keys::{CachingApiKeyRepository, LAST_USED_WRITE_INTERVAL};
use nb_domain::generation::HistoryService;
use nb_domain::idempotency::IdempotencyService;
use nb_domain::rate_limit::{LeasedRateLimiter, RateLimiter};

/// Where key changes announced by other instances are heard.
#[derive(Debug, Clone)]
pub enum KeyChangeFeed {
    /// PostgreSQL `LISTEN` (nothing on SQLite: one instance).
    Database(DatabaseUrl),
    /// Redis pub/sub (`NB_REDIS_URL`).
    Redis(Box<nb_redis::Redis>),
}

/// How often idle rate-limit entries are forgotten.
const RATE_LIMIT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// How often what expired slices of shared allowances left is given back.
const LEASE_RETURN_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired sessions and idempotency entries are removed, and orphaned images
/// swept.
const HOURLY: Duration = Duration::from_secs(60 * 60);

#[derive(Clone)]
pub struct Maintenance {
    key_cache: Arc<CachingApiKeyRepository>,
    rate_limiter: Arc<dyn RateLimiter>,
    /// Gives back what expired slices of shared allowances left, every second.
    leased_rate_limiter: Option<Arc<LeasedRateLimiter>>,
    accounts: Arc<AccountService>,
    history: Arc<HistoryService>,
    idempotency: Arc<IdempotencyService>,
    key_changes_from: KeyChangeFeed,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance").finish_non_exhaustive()
    }
}

impl Maintenance {
    pub fn new(
        key_cache: Arc<CachingApiKeyRepository>,
        rate_limiter: Arc<dyn RateLimiter>,
        leased_rate_limiter: Option<Arc<LeasedRateLimiter>>,
        accounts: Arc<AccountService>,
        history: Arc<HistoryService>,
        idempotency: Arc<IdempotencyService>,
        key_changes_from: KeyChangeFeed,
    ) -> Self {
        Self {
            key_cache,
            rate_limiter,
            leased_rate_limiter,
            accounts,
            history,
            idempotency,
            key_changes_from,
        }
    }

    /// The history service whose orphan sweep runs every hour (tests run it at once).
    pub fn history(&self) -> Arc<HistoryService> {
        self.history.clone()
    }

    /// Starts the periodic jobs on the current tokio runtime (none outside one).
    pub fn spawn(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key_cache = self.key_cache.clone();
        let on_change = move |change| key_cache.apply(change);
        match self.key_changes_from.clone() {
            KeyChangeFeed::Database(url) => {
                runtime.spawn(nb_db::listen_for_key_changes(url, on_change));
            }
            KeyChangeFeed::Redis(redis) => {
                runtime.spawn(nb_redis::listen_for_key_changes(*redis, on_change));
            }
        }
        let key_cache = self.key_cache.clone();
        runtime.spawn(every(LAST_USED_WRITE_INTERVAL, move || {
            let key_cache = key_cache.clone();
            async move {
                if let Err(error) = key_cache.flush_key_uses().await {
                    tracing::warn!(%error, "could not write the keys' last uses");
                }
            }
        }));
        let rate_limiter = self.rate_limiter.clone();
        runtime.spawn(every(RATE_LIMIT_CLEANUP_INTERVAL, move || {
            let rate_limiter = rate_limiter.clone();
            async move {
                if let Err(error) = rate_limiter.forget_idle().await {
                    tracing::warn!(%error, "could not forget idle rate-limit subjects");
                }
            }
        }));
        if let Some(leased) = self.leased_rate_limiter.clone() {
            runtime.spawn(every(LEASE_RETURN_INTERVAL, move || {
                let leased = leased.clone();
                async move {
                    if let Err(error) = leased.return_expired().await {
                        tracing::warn!(%error, "could not give back unused rate-limit slices");
                    }
                }
            }));
        }
        let accounts = self.accounts.clone();
        runtime.spawn(every(HOURLY, move || {
            let accounts = accounts.clone();
            async move {
                match accounts.forget_expired_sessions().await {
                    Ok(removed) => tracing::debug!(removed, "expired sessions removed"),
                    Err(error) => tracing::warn!(%error, "could not remove expired sessions"),
                }
            }
        }));
        let idempotency = self.idempotency.clone();
        runtime.spawn(every(HOURLY, move || {
            let idempotency = idempotency.clone();
            async move {
                match idempotency.delete_expired().await {
                    Ok(removed) => tracing::debug!(removed, "expired idempotency entries removed"),
                    Err(error) => {
                        tracing::warn!(%error, "could not remove expired idempotency entries");
                    }
                }
            }
        }));
        let history = self.history.clone();
        runtime.spawn(every(HOURLY, move || {
            let history = history.clone();
            async move {
                match history.sweep_orphans().await {
                    Ok(report) => tracing::debug!(
                        examined = report.examined,
                        removed = report.removed,
                        "orphaned images swept"
                    ),
                    Err(error) => tracing::warn!(%error, "could not sweep orphaned images"),
                }
            }
        }));
    }

    /// Writes what is still only in memory. Called once the server has stopped serving.
    pub async fn at_shutdown(&self) {
        if let Err(error) = self.key_cache.flush_key_uses().await {
            tracing::error!(%error, "could not write the keys' last uses at shutdown");
        }
    }
}

async fn every<F, Fut>(interval: Duration, job: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: skip it, there is nothing to do yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        job().await;
    }
}
