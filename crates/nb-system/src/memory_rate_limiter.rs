//! Per-minute limits counted in this process's memory (governor's GCRA, one keyed limiter per
//! action and allowance): exact for one instance, and nothing to run. Used with SQLite (one
//! instance) and with `NB_RATE_LIMITS=memory`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as GovernorLimiter};
use nb_domain::rate_limit::{
    LimitSubject, LimitedAction, PerMinute, RateDecision, RateLimitError, RateLimitKey, RateLimiter,
};

/// The most subjects one counter keeps; past that (after forgetting idle ones), new subjects
/// are counted together as one.
pub const MAX_SUBJECTS_PER_COUNTER: usize = 100_000;

type KeyedLimiter = GovernorLimiter<
    LimitSubject,
    DefaultKeyedStateStore<LimitSubject>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One instance's counts, in memory: one GCRA limiter per action and allowance.
#[derive(Default)]
pub struct MemoryRateLimiter {
    counters: Mutex<HashMap<(LimitedAction, PerMinute), Arc<KeyedLimiter>>>,
}

impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter").finish_non_exhaustive()
    }
}

impl MemoryRateLimiter {
    fn counter(&self, action: LimitedAction, rate: PerMinute) -> Arc<KeyedLimiter> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .entry((action, rate))
            .or_insert_with(|| {
                Arc::new(
                    GovernorLimiter::keyed(Quota::per_minute(rate.0))
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone()
    }

    /// Forgets subjects whose allowance is back to full, so memory is bounded by recent
    /// clients.
    fn forget_idle_subjects(&self) {
        let counters: Vec<_> = self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for counter in counters {
            counter.retain_recent();
            counter.shrink_to_fit();
        }
    }

    /// How many subjects are kept, over every counter.
    pub fn subjects(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|counter| counter.len())
            .sum()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RateLimitError> {
        let counter = self.counter(key.action, rate);
        if counter.len() >= MAX_SUBJECTS_PER_COUNTER {
            counter.retain_recent();
        }
        let overflow;
        let subject = if counter.len() >= MAX_SUBJECTS_PER_COUNTER {
            overflow = LimitSubject::overflow();
            &overflow
        } else {
            &key.subject
        };
        let limit = rate.get();
        let seconds_per_request = 60.0 / f64::from(limit);
        Ok(match counter.check_key(subject) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    limit,
                    remaining,
                    reset_after: Duration::from_secs_f64(
                        f64::from(limit - remaining) * seconds_per_request,
                    ),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => RateDecision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: Duration::from_secs(60),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        })
    }

    async fn forget_idle(&self) -> Result<u64, RateLimitError> {
        let before = self.subjects();
        self.forget_idle_subjects();
        Ok(before.saturating_sub(self.subjects()) as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use uuid::Uuid;

    fn key(n: u128) -> RateLimitKey {
        RateLimitKey {
            action: LimitedAction::GenerationsByKey,
            subject: LimitSubject::key(nb_domain::api_keys::ApiKeyId(Uuid::from_u128(n))),
        }
    }

    #[tokio::test]
    async fn requests_count_down_then_are_refused_per_subject() {
        let limiter = MemoryRateLimiter::default();
        let rate = PerMinute::new(3).unwrap();
        let mut remaining = Vec::new();
        for _ in 0..3 {
            remaining.push(limiter.check(&key(1), rate).await.unwrap().remaining);
        }
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(&key(1), rate).await.unwrap();
        assert!(!refused.allowed);
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(20)
        );
        assert!(limiter.check(&key(2), rate).await.unwrap().allowed);
        // Another allowance for the same action is a counter of its own.
        assert!(
            limiter
                .check(&key(1), PerMinute::new(10).unwrap())
                .await
                .unwrap()
                .allowed
        );
    }

    #[tokio::test]
    async fn a_flood_of_new_subjects_is_bounded() {
        let limiter = MemoryRateLimiter::default();
        let rate = PerMinute::new(5).unwrap();
        for n in 0..(MAX_SUBJECTS_PER_COUNTER as u128 + 1_000) {
            let _ = limiter.check(&key(n), rate).await;
        }
        assert!(
            limiter.subjects() <= MAX_SUBJECTS_PER_COUNTER + 1,
            "{}",
            limiter.subjects()
        );
        // Past the bound, newcomers share one allowance.
        let mut shared = 0;
        for n in 0..10u128 {
            shared += usize::from(
                limiter
                    .check(&key(u128::MAX - n), rate)
                    .await
                    .unwrap()
                    .allowed,
            );
        }
        assert!(shared <= 5, "{shared}");
    }
}
