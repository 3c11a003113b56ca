//! The contract of the domain's `RateLimiter` port, as tests every limiter runs: the one in
//! memory (`nb-system`), PostgreSQL's (`nb-db`) and Redis's (`nb-redis`). Each crate invokes
//! [`rate_limiter_contract!`](crate::rate_limiter_contract) with a way to make a
//! [`LimiterUnderTest`]; what only one engine can do (outages, its own bounds) stays in that
//! crate's tests.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use nb_domain::api_keys::ApiKeyId;
use nb_domain::rate_limit::{LimitSubject, LimitedAction, PerMinute, RateLimitKey, RateLimiter};
use uuid::Uuid;

/// Two handles on one limiter, as two instances of the server would hold (for a limiter
/// that lives in memory, the same one twice), and whatever must outlive them (a test
/// database, a Redis server).
pub struct LimiterUnderTest {
    pub first: Arc<dyn RateLimiter>,
    pub second: Arc<dyn RateLimiter>,
    pub keep_alive: Box<dyn Any + Send>,
}

impl std::fmt::Debug for LimiterUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterUnderTest").finish_non_exhaustive()
    }
}

fn key_of_a_new_api_key() -> RateLimitKey {
    RateLimitKey {
        action: LimitedAction::GenerationsByKey,
        subject: LimitSubject::key(ApiKeyId(Uuid::now_v7())),
    }
}

fn per_minute(n: u32) -> PerMinute {
    PerMinute::new(n).expect("a positive allowance")
}

/// 100 requests at once, half on each handle, against 30 a minute: exactly 30 pass. What is
/// left counts down (to within what refilled while they queued); each refusal says when to
/// come back (one interval: 2 s) and that the allowance is whole again in about a minute.
pub async fn allows_exactly_the_allowance_under_concurrency(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    let rate = per_minute(30);
    let decisions = futures_util::future::join_all((0..100).map(|n| {
        let handle = if n % 2 == 0 {
            limiter.first.clone()
        } else {
            limiter.second.clone()
        };
        let key = key.clone();
        tokio::spawn(async move { handle.check(&key, rate).await.unwrap() })
    }))
    .await;
    let decisions: Vec<_> = decisions.into_iter().map(Result::unwrap).collect();
    let allowed: Vec<_> = decisions.iter().filter(|d| d.allowed).collect();
    assert_eq!(allowed.len(), 30);
    let remaining: Vec<u32> = allowed.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining.iter().max(), Some(&29));
    assert!(
        remaining.iter().min().is_some_and(|min| *min <= 1),
        "{remaining:?}"
    );
    for refused in decisions.iter().filter(|d| !d.allowed) {
        assert_eq!(refused.limit, 30);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after > Duration::ZERO, "{refused:?}");
        assert!(refused.retry_after <= Duration::from_secs(2), "{refused:?}");
        assert!(refused.reset_after > Duration::from_secs(58), "{refused:?}");
    }
    // Another subject has an allowance of its own.
    let other = limiter
        .first
        .check(&key_of_a_new_api_key(), rate)
        .await
        .unwrap();
    assert!(other.allowed);
    assert_eq!(other.remaining, 29);
}

/// With one a minute, the second request is refused, and so is every retry: refusals are
/// not counted (they do not push the next allowed request further away).
pub async fn a_refusal_is_not_counted_and_says_when_to_come_back(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    let one = per_minute(1);
    let first = limiter.first.check(&key, one).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.remaining, 0);
    for _ in 0..5 {
        let refused = limiter.second.check(&key, one).await.unwrap();
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(58), "{refused:?}");
        assert!(
            refused.retry_after <= Duration::from_secs(60),
            "{refused:?}"
        );
    }
}

/// A subject's count is per allowance: when the operator changes a limit, the new one
/// starts afresh.
pub async fn a_changed_allowance_starts_afresh(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    for _ in 0..3 {
        assert!(
            limiter
                .first
                .check(&key, per_minute(3))
                .await
                .unwrap()
                .allowed
        );
    }
    assert!(
        !limiter
            .first
            .check(&key, per_minute(3))
            .await
            .unwrap()
            .allowed
    );
    let changed = limiter.second.check(&key, per_minute(4)).await.unwrap();
    assert!(changed.allowed);
    assert_eq!(changed.remaining, 3);
}

/// An allowance of billions a minute (an interval under a microsecond) still answers.
pub async fn a_huge_allowance_still_counts(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    let huge = per_minute(4_000_000_000);
    for _ in 0..3 {
        let decision = limiter.first.check(&key, huge).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.limit, 4_000_000_000);
    }
}

/// Forgetting idle subjects never forgets one whose allowance is spent.
pub async fn forgetting_idle_subjects_keeps_busy_ones(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    let two = per_minute(2);
    for _ in 0..2 {
        assert!(limiter.first.check(&key, two).await.unwrap().allowed);
    }
    limiter.first.forget_idle().await.unwrap();
    limiter.second.forget_idle().await.unwrap();
    assert!(!limiter.first.check(&key, two).await.unwrap().allowed);
}

/// Writes the contract's tests, one per rule, each on a fresh [`LimiterUnderTest`] from
/// `$make` (an async expression).
#[macro_export]
macro_rules! rate_limiter_contract {
    ($make:expr) => {
        mod rate_limiter_contract {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn allows_exactly_the_allowance_under_concurrency() {
                $crate::rate_limiter::allows_exactly_the_allowance_under_concurrency($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_refusal_is_not_counted_and_says_when_to_come_back() {
                $crate::rate_limiter::a_refusal_is_not_counted_and_says_when_to_come_back($make)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_changed_allowance_starts_afresh() {
                $crate::rate_limiter::a_changed_allowance_starts_afresh($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_huge_allowance_still_counts() {
                $crate::rate_limiter::a_huge_allowance_still_counts($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn forgetting_idle_subjects_keeps_busy_ones() {
                $crate::rate_limiter::forgetting_idle_subjects_keeps_busy_ones($make).await;
            }
        }
    };
}
