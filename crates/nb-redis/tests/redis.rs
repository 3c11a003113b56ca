//! The Redis adapter against a real `redis-server` started by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_domain::RepositoryError;
use nb_domain::api_keys::ApiKeyId;
use nb_domain::ports::{KeyChange, KeyChangeBroadcast, ReadinessCheck};
use nb_domain::rate_limit::{
    LimitSubject, LimitedAction, PerMinute, RateLimitError, RateLimitKey, RateLimiter,
};
use nb_redis::testing::EphemeralRedis;
use nb_redis::{RESPONSE_TIMEOUT, Redis};
use uuid::Uuid;

fn key_of_a_new_api_key() -> RateLimitKey {
    RateLimitKey {
        action: LimitedAction::GenerationsByKey,
        subject: LimitSubject::key(ApiKeyId(Uuid::now_v7())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_allows_exactly_the_allowance_under_concurrency() {
    let server = EphemeralRedis::start();
    // Two handles, as two instances would have.
    let first = Arc::new(Redis::new(&server.url).unwrap().rate_limiter());
    let second = Arc::new(Redis::new(&server.url).unwrap().rate_limiter());
    let key = key_of_a_new_api_key();
    let rate = PerMinute::new(30).unwrap();
    let decisions = futures_util::future::join_all((0..100).map(|n| {
        let limiter = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let key = key.clone();
        tokio::spawn(async move { limiter.check(&key, rate).await.unwrap() })
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
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(2), "{refused:?}");
        assert!(refused.reset_after > Duration::from_secs(58), "{refused:?}");
    }
    // Another subject has its own allowance.
    let other = key_of_a_new_api_key();
    let decision = first.check(&other, rate).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 29);
    // A changed allowance starts afresh, as in memory.
    let decision = first
        .check(&key, PerMinute::new(31).unwrap())
        .await
        .unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 30);
    // Keys expire by themselves.
    assert_eq!(first.forget_idle().await.unwrap(), 0);
}

#[tokio::test]
async fn a_refusal_is_not_counted_and_says_when_to_come_back() {
    let server = EphemeralRedis::start();
    let limiter = Redis::new(&server.url).unwrap().rate_limiter();
    let key = key_of_a_new_api_key();
    let one = PerMinute::new(1).unwrap();
    let first = limiter.check(&key, one).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.remaining, 0);
    for _ in 0..5 {
        let refused = limiter.check(&key, one).await.unwrap();
        assert!(!refused.allowed);
        // Refusals do not push the next allowed request further away.
        assert!(refused.retry_after > Duration::from_secs(58), "{refused:?}");
        assert!(
            refused.retry_after <= Duration::from_secs(60),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn an_allowance_larger_than_a_microsecond_step_still_counts() {
    let server = EphemeralRedis::start();
    let limiter = Redis::new(&server.url).unwrap().rate_limiter();
    let key = key_of_a_new_api_key();
    let huge = PerMinute::new(4_000_000_000).unwrap();
    for _ in 0..3 {
        let decision = limiter.check(&key, huge).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.limit, 4_000_000_000);
    }
}

#[tokio::test]
async fn redis_down_is_unavailable_and_the_limiter_recovers_when_it_is_back() {
    let mut server = EphemeralRedis::start();
    let redis = Redis::new(&server.url).unwrap();
    let limiter = redis.rate_limiter();
    let key = key_of_a_new_api_key();
    let rate = PerMinute::new(10).unwrap();
    assert!(limiter.check(&key, rate).await.unwrap().allowed);
    redis.check_ready().await.unwrap();

    server.kill();
    let error = limiter.check(&key, rate).await.unwrap_err();
    assert!(
        matches!(error, RateLimitError::Unavailable(_)),
        "{error:?}"
    );
    assert!(redis.check_ready().await.is_err());

    let _restarted = EphemeralRedis::start_on(server.port);
    let mut recovered = false;
    for _ in 0..50 {
        if limiter.check(&key, rate).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the limiter did not reconnect");
    redis.check_ready().await.unwrap();
}

#[tokio::test]
async fn a_hung_redis_is_unavailable_within_the_response_timeout() {
    let server = EphemeralRedis::start();
    let redis = Redis::new(&server.url).unwrap();
    let limiter = redis.rate_limiter();
    let key = key_of_a_new_api_key();
    let rate = PerMinute::new(10).unwrap();
    assert!(limiter.check(&key, rate).await.unwrap().allowed);

    server.freeze(true);
    let asked = Instant::now();
    let error = limiter.check(&key, rate).await.unwrap_err();
    let waited = asked.elapsed();
    assert!(
        matches!(error, RateLimitError::Unavailable(_)),
        "{error:?}"
    );
    // The documented bound (with room for a loaded machine), not the TCP timeout's minutes.
    assert!(waited < RESPONSE_TIMEOUT * 3, "waited {waited:?}");
    assert!(redis.check_ready().await.is_err());

    server.freeze(false);
    let mut recovered = false;
    for _ in 0..50 {
        if limiter.check(&key, rate).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the limiter did not recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_reach_every_subscriber() {
    let server = EphemeralRedis::start();
    let heard: Arc<Mutex<Vec<Option<KeyChange>>>> = Arc::default();
    let listener = {
        let heard = heard.clone();
        let redis = Redis::new(&server.url).unwrap();
        tokio::spawn(nb_redis::listen_for_key_changes(redis, move |change| {
            heard.lock().unwrap().push(change);
        }))
    };
    // Subscribed: it says so with `None` (forget everything cached).
    let deadline = Instant::now() + Duration::from_secs(10);
    while heard.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let announcer = Redis::new(&server.url).unwrap();
    let revoked = KeyChange::Key(ApiKeyId(Uuid::now_v7()));
    announcer.announce(revoked).await;
    while heard.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the change was not heard");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*heard.lock().unwrap(), vec![None, Some(revoked)]);
    listener.abort();
}

#[tokio::test]
async fn a_url_that_is_not_redis_is_refused_without_echoing_it() {
    let error = Redis::new("postgres://user:s3cret@db.example/x").unwrap_err();
    assert!(!error.to_string().contains("s3cret"), "{error}");
    assert!(error.to_string().contains("NB_REDIS_URL"), "{error}");
}
