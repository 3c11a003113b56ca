//! The contract of the domain's `RateLimiter` port, as tests every limiter runs: the one in
//! memory (`nb-system`), PostgreSQL's (`nb-db`) and Redis's (`nb-redis`). Each crate invokes
//! [`rate_limiter_contract!`](crate::rate_limiter_contract) with a way to make a
//! [`LimiterUnderTest`]; what only one engine can do (outages, its own bounds) stays in that
//! crate's tests.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use nb_domain::api_keys::ApiKeyId;
use std::sync::atomic::{AtomicU32, Ordering};

use nb_domain::rate_limit::{
    LeasePolicy, LeasedRateLimiter, LimitSubject, LimitedAction, PerMinute, RateDecision,
    RateLimitError, RateLimitKey, RateLimiter, Taken,
};
use nb_domain::system::Clock;
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

/// A slice is taken in one call, as much as fits and never more; the refusal says when to
/// come back.
pub async fn a_slice_is_taken_at_once_and_never_beyond_the_allowance(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    let rate = per_minute(30);
    let first = limiter.first.take(&key, rate, 20, 0).await.unwrap();
    assert_eq!(first.granted, 20);
    assert!(first.last.allowed);
    assert_eq!(first.last.remaining, 10);
    let second = limiter.second.take(&key, rate, 20, 0).await.unwrap();
    assert_eq!(second.granted, 10);
    assert_eq!(second.last.remaining, 0);
    let refused = limiter.first.take(&key, rate, 5, 0).await.unwrap();
    assert_eq!(refused.granted, 0);
    assert!(!refused.last.allowed);
    assert!(refused.last.retry_after > Duration::ZERO);
    assert!(!limiter.second.check(&key, rate).await.unwrap().allowed);
}

/// What is given back can be taken again, by any instance.
pub async fn what_is_given_back_can_be_taken_again(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    let rate = per_minute(30);
    assert_eq!(
        limiter.first.take(&key, rate, 30, 0).await.unwrap().granted,
        30
    );
    let given_back = limiter.first.take(&key, rate, 0, 10).await.unwrap();
    assert_eq!(given_back.granted, 0);
    // Ten, or eleven when the allowance refilled one (every 2 s) meanwhile.
    let again = limiter.second.take(&key, rate, 30, 0).await.unwrap();
    assert!((10..=11).contains(&again.granted), "{again:?}");
}

struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
}

/// Counts the calls that reach the shared store.
struct Counted {
    inner: Arc<dyn RateLimiter>,
    calls: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl RateLimiter for Counted {
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RateLimitError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.check(key, rate).await
    }

    async fn take(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
        wanted: u32,
        returned: u32,
    ) -> Result<Taken, RateLimitError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.take(key, rate, wanted, returned).await
    }

    async fn forget_idle(&self) -> Result<u64, RateLimitError> {
        self.inner.forget_idle().await
    }
}

/// Two instances leasing slices of 60 from one allowance of 600 a minute: the first 560
/// requests (four tasks at once) are all allowed with a few calls to the store, and however
/// many more come, never more than the allowance (and what refilled meanwhile) is allowed.
pub async fn leased_instances_allow_the_allowance_and_no_more(limiter: LimiterUnderTest) {
    let key = key_of_a_new_api_key();
    let rate = per_minute(600);
    let policy = LeasePolicy { percent: 10 };
    let calls = Arc::new(AtomicU32::new(0));
    let instances: Vec<Arc<LeasedRateLimiter>> = [limiter.first.clone(), limiter.second.clone()]
        .into_iter()
        .map(|shared| {
            let counted = Counted {
                inner: shared,
                calls: calls.clone(),
            };
            Arc::new(LeasedRateLimiter::new(
                Arc::new(counted),
                Arc::new(SystemClock),
                policy,
            ))
        })
        .collect();
    let started = std::time::Instant::now();
    let run = |requests: u32| {
        futures_util::future::join_all((0..4).map(|task| {
            let instance = instances[task % 2].clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut allowed = 0u32;
                for _ in 0..requests {
                    if instance.check(&key, rate).await.unwrap().allowed {
                        allowed += 1;
                    }
                }
                allowed
            })
        }))
    };
    let first: u32 = run(140).await.into_iter().map(Result::unwrap).sum();
    assert_eq!(first, 560);
    let store_calls = calls.load(Ordering::SeqCst);
    assert!(store_calls <= 16, "{store_calls} calls to the store");
    let more: u32 = run(100).await.into_iter().map(Result::unwrap).sum();
    // 10 a second refill.
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as u32;
    assert!(
        first + more >= 600 && first + more <= 600 + refilled,
        "{} allowed, {refilled} refilled",
        first + more
    );
}

/// Writes the tests every limiter shared by instances passes beyond the contract: taking
/// slices at once and giving them back, as [`LeasedRateLimiter`] does.
#[macro_export]
macro_rules! shared_rate_limiter_contract {
    ($make:expr) => {
        mod shared_rate_limiter_contract {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_slice_is_taken_at_once_and_never_beyond_the_allowance() {
                $crate::rate_limiter::a_slice_is_taken_at_once_and_never_beyond_the_allowance(
                    $make,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn what_is_given_back_can_be_taken_again() {
                $crate::rate_limiter::what_is_given_back_can_be_taken_again($make).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn leased_instances_allow_the_allowance_and_no_more() {
                $crate::rate_limiter::leased_instances_allow_the_allowance_and_no_more($make).await;
            }
        }
    };
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
