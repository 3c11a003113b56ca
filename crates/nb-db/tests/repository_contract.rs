//! The repository ports' contracts, run against PostgreSQL and SQLite alike.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use nb_db::testing::TestDatabase;
use nb_db::{Database, GenerationStore};
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::api_keys::{ApiKeyHash, ApiKeyId, ApiKeyRecord, NewApiKey};
use nb_domain::generation::{
    AllowedModels, GenerationId, GenerationOutcome, GenerationRecord, ImageFormat, ImageSize,
    ImageStyle, ObjectKey, Prompt,
};
use nb_domain::ports::{ApiKeyRepository, GenerationRepository, InsertUserError, UserRepository};
use nb_domain::user::{EmailAddress, NewUser, PasswordHash, User, UserId};
use time::macros::datetime;
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-25 10:00:00.123456 UTC);

fn new_user(email: &str) -> NewUser {
    NewUser {
        user: User {
            id: UserId(Uuid::now_v7()),
            email: EmailAddress::parse(email).unwrap(),
            created_at: T0,
        },
        password_hash: PasswordHash::new("$2b$04$hash".into()),
    }
}

fn new_key(user_id: UserId, created_at: OffsetDateTime, hash: &str) -> NewApiKey {
    NewApiKey {
        record: ApiKeyRecord {
            id: ApiKeyId(Uuid::now_v7()),
            user_id,
            name: Some("laptop".into()),
            prefix: "nb_live_abcd".into(),
            is_active: true,
            last_used_at: None,
            created_at,
        },
        key_hash: ApiKeyHash::from_stored(hash.into()),
    }
}

async fn registered(db: &Database, email: &str) -> UserId {
    let user = new_user(email);
    db.insert_user(&user).await.unwrap();
    user.user.id
}

async fn users_round_trip_with_every_field(db: Database) {
    let user = new_user("ada@example.com");
    db.insert_user(&user).await.unwrap();

    let by_email = db
        .find_user_by_email(&user.user.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.user, user.user);
    assert_eq!(by_email.password_hash, user.password_hash);
    let by_id = db.find_user_by_id(user.user.id).await.unwrap().unwrap();
    assert_eq!(by_id, user.user);
}

async fn a_taken_email_is_reported_and_nothing_is_stored(db: Database) {
    let first = new_user("ada@example.com");
    db.insert_user(&first).await.unwrap();
    let second = new_user("ada@example.com");
    let result = db.insert_user(&second).await;
    assert!(
        matches!(result, Err(InsertUserError::EmailTaken)),
        "{result:?}"
    );
    assert_eq!(db.find_user_by_id(second.user.id).await.unwrap(), None);
}

async fn unknown_users_are_none(db: Database) {
    let email = EmailAddress::parse("nobody@example.com").unwrap();
    assert!(db.find_user_by_email(&email).await.unwrap().is_none());
    assert!(
        db.find_user_by_id(UserId(Uuid::now_v7()))
            .await
            .unwrap()
            .is_none()
    );
}

async fn keys_are_listed_newest_first_and_only_for_their_owner(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let bob = registered(&db, "bob@example.com").await;
    let older = new_key(ada, T0, "hash-older");
    let newer = new_key(ada, T0 + Duration::minutes(1), "hash-newer");
    let bobs = new_key(bob, T0, "hash-bob");
    for key in [&older, &newer, &bobs] {
        db.insert_api_key(key).await.unwrap();
    }

    let listed = db.list_api_keys(ada).await.unwrap();
    assert_eq!(listed, vec![newer.record.clone(), older.record.clone()]);
    assert_eq!(
        db.list_api_keys(UserId(Uuid::now_v7())).await.unwrap(),
        vec![]
    );
}

async fn deactivating_is_owner_only_and_repeatable(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let bob = registered(&db, "bob@example.com").await;
    let key = new_key(ada, T0, "hash-ada");
    db.insert_api_key(&key).await.unwrap();

    assert!(!db.deactivate_api_key(bob, key.record.id).await.unwrap());
    assert!(db.list_api_keys(ada).await.unwrap()[0].is_active);
    assert!(
        !db.deactivate_api_key(ada, ApiKeyId(Uuid::now_v7()))
            .await
            .unwrap()
    );

    assert!(db.deactivate_api_key(ada, key.record.id).await.unwrap());
    assert!(db.deactivate_api_key(ada, key.record.id).await.unwrap());
    assert!(!db.list_api_keys(ada).await.unwrap()[0].is_active);
}

async fn active_keys_are_found_by_hash_and_inactive_ones_are_not(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let key = new_key(ada, T0, "hash-ada");
    db.insert_api_key(&key).await.unwrap();

    let found = db
        .find_active_api_key(&key.key_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.key_id, found.user_id), (key.record.id, ada));
    let unknown = ApiKeyHash::from_stored("no-such-hash".into());
    assert_eq!(db.find_active_api_key(&unknown).await.unwrap(), None);

    db.deactivate_api_key(ada, key.record.id).await.unwrap();
    assert_eq!(db.find_active_api_key(&key.key_hash).await.unwrap(), None);
}

async fn key_uses_only_move_last_used_forward(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let first = new_key(ada, T0, "hash-first");
    let second = new_key(ada, T0, "hash-second");
    db.insert_api_key(&first).await.unwrap();
    db.insert_api_key(&second).await.unwrap();
    let (early, late) = (T0 + Duration::hours(1), T0 + Duration::hours(2));

    db.record_key_uses(&[(first.record.id, late), (second.record.id, early)])
        .await
        .unwrap();
    db.record_key_uses(&[(first.record.id, early)])
        .await
        .unwrap();
    let listed = db.list_api_keys(ada).await.unwrap();
    let last_used = |id| listed.iter().find(|key| key.id == id).unwrap().last_used_at;
    assert_eq!(last_used(first.record.id), Some(late));
    assert_eq!(last_used(second.record.id), Some(early));
    db.record_key_uses(&[]).await.unwrap();
}

async fn key_hashes_are_unique(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    db.insert_api_key(&new_key(ada, T0, "same-hash"))
        .await
        .unwrap();
    assert!(
        db.insert_api_key(&new_key(ada, T0, "same-hash"))
            .await
            .is_err()
    );
}

async fn reconnecting_to_a_migrated_database_keeps_its_data(test_db: TestDatabase) {
    let ada = registered(&test_db.database, "ada@example.com").await;
    let reopened = Database::connect(&test_db.url, nb_db::testing::test_pool_options())
        .await
        .unwrap();
    assert!(reopened.find_user_by_id(ada).await.unwrap().is_some());
}

fn generation(
    caller: AuthenticatedApiKey,
    at: OffsetDateTime,
    outcome: GenerationOutcome,
) -> GenerationRecord {
    let models = AllowedModels::new(["gemini-3.1-flash-image".to_owned()]).unwrap();
    GenerationRecord {
        id: GenerationId(Uuid::now_v7()),
        caller,
        prompt: Prompt::parse("a banana".into()).unwrap(),
        size: ImageSize::Square,
        style: ImageStyle::Natural,
        model: models.default_model().clone(),
        latency: std::time::Duration::from_millis(812),
        created_at: at,
        outcome,
    }
}

fn succeeded(caller: AuthenticatedApiKey, at: OffsetDateTime) -> GenerationRecord {
    let outcome = GenerationOutcome::Succeeded {
        object_key: ObjectKey::from_stored("images/2026/11/25/gen_x.png".into()),
        url: None,
        format: ImageFormat::Png,
        bytes: 2048,
    };
    generation(caller, at, outcome)
}

fn failed(caller: AuthenticatedApiKey, at: OffsetDateTime) -> GenerationRecord {
    let outcome = GenerationOutcome::Failed {
        code: "content_rejected",
    };
    generation(caller, at, outcome)
}

async fn caller_with_key(db: &Database, email: &str) -> AuthenticatedApiKey {
    let user_id = registered(db, email).await;
    let key = new_key(user_id, T0, &format!("hash-{email}"));
    db.insert_api_key(&key).await.unwrap();
    AuthenticatedApiKey {
        key_id: key.record.id,
        user_id,
    }
}

async fn successes_are_counted_per_key_per_utc_day_and_failures_are_not(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let bob = caller_with_key(&db, "bob@example.com").await;
    let db = GenerationStore::start(&db);
    let next_day = T0 + Duration::days(1);
    for record in [
        succeeded(ada, T0),
        succeeded(ada, T0 + Duration::hours(1)),
        succeeded(ada, next_day),
        succeeded(bob, T0),
        failed(ada, T0),
    ] {
        db.record(&record).await.unwrap();
    }

    let usage = db.daily_usage(ada.user_id, T0.date()).await.unwrap();
    let counts: Vec<(Date, u64)> = usage.iter().map(|day| (day.day, day.count)).collect();
    assert_eq!(counts, [(next_day.date(), 1), (T0.date(), 2)]);
    assert!(usage.iter().all(|day| day.api_key_id == ada.key_id));
    let only_today = db.daily_usage(ada.user_id, next_day.date()).await.unwrap();
    assert_eq!(only_today.len(), 1);
    assert_eq!(
        db.daily_usage(bob.user_id, T0.date()).await.unwrap()[0].count,
        1
    );
}

async fn a_failed_success_write_leaves_neither_row_nor_count(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let db = GenerationStore::start(&db);
    let record = succeeded(ada, T0);
    db.record(&record).await.unwrap();
    // The same id again: the usage increment runs first, then the insert fails, and the
    // transaction must take the increment back.
    assert!(db.record(&record).await.is_err());
    assert_eq!(
        db.daily_usage(ada.user_id, T0.date()).await.unwrap()[0].count,
        1
    );
}

async fn one_bad_success_among_concurrent_ones_fails_alone(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let db = GenerationStore::start(&db);
    let first = succeeded(ada, T0);
    db.record(&first).await.unwrap();
    let writes: Vec<_> = (0..50)
        .map(|i| {
            let db = db.clone();
            // The 25th repeats an id that is already stored.
            let record = if i == 25 {
                first.clone()
            } else {
                succeeded(ada, T0)
            };
            tokio::spawn(async move { db.record(&record).await })
        })
        .collect();
    let mut failed = 0;
    for write in writes {
        failed += usize::from(write.await.unwrap().is_err());
    }
    assert_eq!(failed, 1);
    assert_eq!(
        db.daily_usage(ada.user_id, T0.date()).await.unwrap()[0].count,
        50
    );
}

async fn concurrent_successes_are_all_counted(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let db = GenerationStore::start(&db);
    let writes = (0..200).map(|_| {
        let db = db.clone();
        tokio::spawn(async move { db.record(&succeeded(ada, T0)).await })
    });
    for write in writes.collect::<Vec<_>>() {
        write.await.unwrap().unwrap();
    }
    assert_eq!(
        db.daily_usage(ada.user_id, T0.date()).await.unwrap()[0].count,
        200
    );
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let test_db = super::TestDatabase::postgres().await;
                super::$name(test_db.database.clone()).await;
            })*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reconnecting_to_a_migrated_database_keeps_its_data() {
                super::reconnecting_to_a_migrated_database_keeps_its_data(
                    super::TestDatabase::postgres().await,
                )
                .await;
            }
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let test_db = super::TestDatabase::sqlite().await;
                super::$name(test_db.database.clone()).await;
            })*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reconnecting_to_a_migrated_database_keeps_its_data() {
                super::reconnecting_to_a_migrated_database_keeps_its_data(
                    super::TestDatabase::sqlite().await,
                )
                .await;
            }
        }
    };
}

contract!(
    users_round_trip_with_every_field,
    a_taken_email_is_reported_and_nothing_is_stored,
    unknown_users_are_none,
    keys_are_listed_newest_first_and_only_for_their_owner,
    deactivating_is_owner_only_and_repeatable,
    active_keys_are_found_by_hash_and_inactive_ones_are_not,
    key_uses_only_move_last_used_forward,
    key_hashes_are_unique,
    successes_are_counted_per_key_per_utc_day_and_failures_are_not,
    a_failed_success_write_leaves_neither_row_nor_count,
    concurrent_successes_are_all_counted,
    one_bad_success_among_concurrent_ones_fails_alone,
);

/// An actix worker runs requests on a single-threaded runtime and drops a request's future
/// when the client goes away or another extractor fails. Dropping a repository call there,
/// mid-statement, must neither panic nor break the pool.
fn abandoning_calls_midway_on_a_single_threaded_runtime_is_safe(
    open: fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = TestDatabase>>>,
) {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let test_db = main.block_on(open());
    let db = test_db.database.clone();
    let worker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    worker.block_on(async {
        let ada = registered(&db, "ada@example.com").await;
        for attempt in 0..200u32 {
            let key = new_key(ada, T0, &format!("hash-{attempt}"));
            let insert = db.insert_api_key(&key);
            let _ = tokio::time::timeout(std::time::Duration::from_micros(50), insert).await;
            let list = db.list_api_keys(ada);
            let _ = tokio::time::timeout(std::time::Duration::from_micros(50), list).await;
        }
        // Abandoned calls still run to completion, and the pool still serves: wait (with a
        // bound) for the last of them to land.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut stored = db.list_api_keys(ada).await.unwrap().len();
        while stored < 200 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            stored = db.list_api_keys(ada).await.unwrap().len();
        }
        assert_eq!(stored, 200);
    });
    drop(test_db);
}

#[test]
fn abandoning_calls_midway_is_safe_on_postgres() {
    abandoning_calls_midway_on_a_single_threaded_runtime_is_safe(|| {
        Box::pin(TestDatabase::postgres())
    });
}

#[test]
fn abandoning_calls_midway_is_safe_on_sqlite() {
    abandoning_calls_midway_on_a_single_threaded_runtime_is_safe(|| {
        Box::pin(TestDatabase::sqlite())
    });
}
