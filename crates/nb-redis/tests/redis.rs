//! The Redis adapter against a real `redis-server` started by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_domain::api_keys::ApiKeyId;
use nb_domain::ports::{KeyChange, KeyChangeBroadcast, ReadinessCheck};
use nb_domain::rate_limit::{
    LimitSubject, LimitedAction, PerMinute, RateLimitError, RateLimitKey, RateLimiter,
};
use nb_redis::testing::EphemeralRedis;
use nb_redis::{RESPONSE_TIMEOUT, Redis};
use nb_testkit::eventually_true;
use nb_testkit::rate_limiter::LimiterUnderTest;
use uuid::Uuid;

/// How often a test looks again while it waits for a state.
const POLL: Duration = Duration::from_millis(50);

fn key_of_a_new_api_key() -> RateLimitKey {
    RateLimitKey {
        action: LimitedAction::GenerationsByKey,
        subject: LimitSubject::key(ApiKeyId(Uuid::now_v7())),
    }
}

/// Two handles on one Redis, as two instances would hold.
async fn redis_limiter() -> LimiterUnderTest {
    let server = EphemeralRedis::start();
    LimiterUnderTest {
        first: Arc::new(Redis::new(&server.url).unwrap().rate_limiter()),
        second: Arc::new(Redis::new(&server.url).unwrap().rate_limiter()),
        keep_alive: Box::new(server),
    }
}

nb_testkit::rate_limiter_contract!(redis_limiter().await);
nb_testkit::shared_rate_limiter_contract!(redis_limiter().await);

/// Keys expire by themselves once their allowance is full: there is nothing to sweep.
#[tokio::test]
async fn idle_subjects_need_no_sweep() {
    let limiter = redis_limiter().await;
    let rate = PerMinute::new(30).unwrap();
    assert!(
        limiter
            .first
            .check(&key_of_a_new_api_key(), rate)
            .await
            .unwrap()
            .allowed
    );
    assert_eq!(limiter.first.forget_idle().await.unwrap(), 0);
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
    assert!(matches!(error, RateLimitError::Unavailable(_)), "{error:?}");
    assert!(redis.check_ready().await.is_err());

    let _restarted = EphemeralRedis::start_on(server.port);
    eventually_true(
        "the limiter reconnects",
        Duration::from_secs(5),
        POLL,
        || async { limiter.check(&key, rate).await.is_ok() },
    )
    .await;
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
    assert!(matches!(error, RateLimitError::Unavailable(_)), "{error:?}");
    // The documented bound (with room for a loaded machine), not the TCP timeout's minutes.
    assert!(waited < RESPONSE_TIMEOUT * 3, "waited {waited:?}");
    assert!(redis.check_ready().await.is_err());

    server.freeze(false);
    eventually_true(
        "the limiter recovers",
        Duration::from_secs(5),
        POLL,
        || async { limiter.check(&key, rate).await.is_ok() },
    )
    .await;
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
    let heard_count = || {
        let count = heard.lock().unwrap().len();
        async move { count }
    };
    eventually_true(
        "the listener subscribes",
        Duration::from_secs(10),
        POLL,
        || async { heard_count().await >= 1 },
    )
    .await;
    let announcer = Redis::new(&server.url).unwrap();
    let revoked = KeyChange::Key(ApiKeyId(Uuid::now_v7()));
    announcer.announce(revoked).await;
    eventually_true(
        "the change is heard",
        Duration::from_secs(10),
        POLL,
        || async { heard_count().await >= 2 },
    )
    .await;
    assert_eq!(*heard.lock().unwrap(), vec![None, Some(revoked)]);
    listener.abort();
}

#[tokio::test]
async fn a_url_that_is_not_redis_is_refused_without_echoing_it() {
    let error = Redis::new("postgres://user:s3cret@db.example/x").unwrap_err();
    assert!(!error.to_string().contains("s3cret"), "{error}");
    assert!(error.to_string().contains("NB_REDIS_URL"), "{error}");
}
