//! PostgreSQL's shared limiter passes the rate-limiter contract: two handles on one database
//! batch on their own, as two instances would.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nb_db::testing::TestDatabase;
use nb_testkit::rate_limiter::LimiterUnderTest;

async fn postgres_limiter() -> LimiterUnderTest {
    let test_db = TestDatabase::postgres().await;
    LimiterUnderTest {
        first: Arc::new(test_db.database.shared_rate_limiter().unwrap()),
        second: Arc::new(test_db.database.shared_rate_limiter().unwrap()),
        keep_alive: Box::new(test_db),
    }
}

nb_testkit::rate_limiter_contract!(postgres_limiter().await);
nb_testkit::shared_rate_limiter_contract!(postgres_limiter().await);

/// Forgetting idle subjects deletes no row whose allowance is still being spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_in_use_is_not_idle() {
    use nb_domain::api_keys::ApiKeyId;
    use nb_domain::rate_limit::{LimitSubject, LimitedAction, PerMinute, RateLimitKey};
    let limiter = postgres_limiter().await;
    let key = RateLimitKey {
        action: LimitedAction::GenerationsByKey,
        subject: LimitSubject::key(ApiKeyId(uuid::Uuid::now_v7())),
    };
    let rate = PerMinute::new(30).unwrap();
    assert!(limiter.first.check(&key, rate).await.unwrap().allowed);
    assert_eq!(limiter.first.forget_idle().await.unwrap(), 0);
}
