//! The repository ports' contracts, run against PostgreSQL and SQLite alike.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use nb_db::testing::TestDatabase;
use nb_db::{Database, GenerationStore};
use nb_domain::api_keys::AuthenticatedApiKey;
use std::num::NonZeroU32;

use nb_domain::accounts::{EmailAddress, NewUser, PasswordHash, Session, SessionId, User, UserId};
use nb_domain::admin::{ACCOUNT_UPDATE, AccountChanges, AccountSettings, AuditEntry};
use nb_domain::api_keys::{
    ApiKeyHash, ApiKeyId, ApiKeyName, ApiKeyRecord, KeyChanges, KeyLimits, KeyMode, KeyUsage,
    LimitChanges, NewApiKey, RollRefusal,
};
use nb_domain::generation::{
    AllowedModels, GenerationId, GenerationOutcome, GenerationRecord, ImageFormat, ImageShape,
    ImageStyle, ObjectKey, PixelSize, Prompt,
};
use nb_domain::money::Usd;
use nb_domain::pagination::PageRequest;
use nb_domain::ports::{
    AdminRepository, ApiKeyRepository, GenerationRepository, InsertKeyError, InsertUserError,
    QuotaRepository, RollApiKeyError, SessionRepository, UserRepository,
};
use nb_domain::quota::{
    Ask, PeriodLimits, QuotaLimit, QuotaPeriod, QuotaScope, QuotaStanding, ReserveError, Reserved,
    Settlement,
};
use nb_domain::usage::UsageFact;
use time::macros::datetime;
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

#[path = "repository_contract/records.rs"]
mod records;
use records::*;

/// Room for every key these tests make, unless a test is about the cap.
const MAX_ACTIVE: u32 = 1_000;
const T0: OffsetDateTime = datetime!(2026-11-25 10:00:00.123456 UTC);

fn new_user(email: &str) -> NewUser {
    NewUser {
        user: User {
            id: UserId(Uuid::now_v7()),
            email: EmailAddress::parse(email).unwrap(),
            created_at: T0,
            disabled: false,
        },
        password_hash: PasswordHash::new("$2b$04$hash".into()),
        limits: PeriodLimits::default(),
    }
}

fn new_key(user_id: UserId, created_at: OffsetDateTime, hash: &str) -> NewApiKey {
    NewApiKey {
        record: ApiKeyRecord {
            id: ApiKeyId(Uuid::now_v7()),
            user_id,
            name: Some("laptop".into()),
            prefix: "nb_live_abcd".into(),
            mode: KeyMode::Live,
            is_active: true,
            expires_at: None,
            limits: KeyLimits::default(),
            rolled_from: None,
            last_used_at: None,
            created_at,
        },
        key_hash: ApiKeyHash::from_stored(hash.into()),
    }
}

/// Every key of the user, page after page.
async fn all_keys(db: &Database, user_id: UserId) -> Vec<ApiKeyRecord> {
    let mut keys = Vec::new();
    let mut page = PageRequest::first(100);
    loop {
        let read = db.list_api_keys(user_id, page).await.unwrap();
        keys.extend(read.items);
        match read.next {
            Some(next) => page.after = Some(next),
            None => return keys,
        }
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

fn session(user_id: UserId, expires_at: OffsetDateTime) -> Session {
    Session {
        id: SessionId(Uuid::now_v7()),
        user_id,
        created_at: T0,
        expires_at,
    }
}

async fn sessions_name_their_user_until_they_end_or_expire(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let bob = registered(&db, "bob@example.com").await;
    let live = session(ada, T0 + Duration::hours(1));
    let other = session(ada, T0 + Duration::hours(1));
    for s in [&live, &other] {
        db.insert_session(s).await.unwrap();
    }
    let found = db
        .find_session_user(ada, live.id, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, ada);
    assert_eq!(found.email.as_str(), "ada@example.com");
    // Not someone else's, not past its expiry, not an unknown one.
    assert_eq!(db.find_session_user(bob, live.id, T0).await.unwrap(), None);
    let after_expiry = T0 + Duration::hours(1);
    assert_eq!(
        db.find_session_user(ada, live.id, after_expiry)
            .await
            .unwrap(),
        None
    );
    let unknown = SessionId(Uuid::now_v7());
    assert_eq!(db.find_session_user(ada, unknown, T0).await.unwrap(), None);
    // Ending one leaves the other; bob cannot end ada's.
    db.delete_session(bob, other.id).await.unwrap();
    assert!(
        db.find_session_user(ada, other.id, T0)
            .await
            .unwrap()
            .is_some()
    );
    db.delete_session(ada, live.id).await.unwrap();
    assert_eq!(db.find_session_user(ada, live.id, T0).await.unwrap(), None);
    assert!(
        db.find_session_user(ada, other.id, T0)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(db.delete_expired_sessions(after_expiry).await.unwrap(), 1);
    assert_eq!(db.delete_expired_sessions(after_expiry).await.unwrap(), 0);
}

async fn a_new_password_ends_every_session(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let bob = registered(&db, "bob@example.com").await;
    let (first, second, bobs) = (
        session(ada, T0 + Duration::hours(1)),
        session(ada, T0 + Duration::hours(1)),
        session(bob, T0 + Duration::hours(1)),
    );
    for s in [&first, &second, &bobs] {
        db.insert_session(s).await.unwrap();
    }
    let new_hash = PasswordHash::new("$2b$04$new".into());
    assert!(db.replace_password(ada, &new_hash).await.unwrap());
    assert_eq!(db.find_session_user(ada, first.id, T0).await.unwrap(), None);
    assert_eq!(
        db.find_session_user(ada, second.id, T0).await.unwrap(),
        None
    );
    assert!(
        db.find_session_user(bob, bobs.id, T0)
            .await
            .unwrap()
            .is_some()
    );
    let stored = db.find_credentials_by_id(ada).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, new_hash);
    assert!(
        !db.replace_password(UserId(Uuid::now_v7()), &new_hash)
            .await
            .unwrap()
    );
}

async fn keys_are_listed_newest_first_and_only_for_their_owner(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let bob = registered(&db, "bob@example.com").await;
    let older = new_key(ada, T0, "hash-older");
    let newer = new_key(ada, T0 + Duration::minutes(1), "hash-newer");
    let bobs = new_key(bob, T0, "hash-bob");
    for key in [&older, &newer, &bobs] {
        db.insert_api_key(key, MAX_ACTIVE).await.unwrap();
    }

    let listed = all_keys(&db, ada).await;
    assert_eq!(listed, vec![newer.record.clone(), older.record.clone()]);
    assert_eq!(all_keys(&db, UserId(Uuid::now_v7())).await, vec![]);
}

async fn deactivating_is_owner_only_and_repeatable(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let bob = registered(&db, "bob@example.com").await;
    let key = new_key(ada, T0, "hash-ada");
    db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();

    assert!(!db.deactivate_api_key(bob, key.record.id).await.unwrap());
    assert!(all_keys(&db, ada).await[0].is_active);
    assert!(
        !db.deactivate_api_key(ada, ApiKeyId(Uuid::now_v7()))
            .await
            .unwrap()
    );

    assert!(db.deactivate_api_key(ada, key.record.id).await.unwrap());
    assert!(db.deactivate_api_key(ada, key.record.id).await.unwrap());
    assert!(!all_keys(&db, ada).await[0].is_active);
}

async fn active_keys_are_found_by_hash_and_inactive_ones_are_not(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let key = new_key(ada, T0, "hash-ada");
    db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();

    let found = db
        .find_active_api_key(&key.key_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.key.key_id, found.key.user_id), (key.record.id, ada));
    assert_eq!(found.expires_at, None);
    assert!(!found.account_disabled);
    assert!(!found.key.quota_applies);
    let unknown = ApiKeyHash::from_stored("no-such-hash".into());
    assert_eq!(db.find_active_api_key(&unknown).await.unwrap(), None);

    db.deactivate_api_key(ada, key.record.id).await.unwrap();
    assert_eq!(db.find_active_api_key(&key.key_hash).await.unwrap(), None);
}

async fn key_uses_only_move_last_used_forward(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let mut first = new_key(ada, T0, "hash-first");
    first.record.limits.quotas.per_day = limit(10);
    let second = new_key(ada, T0, "hash-second");
    db.insert_api_key(&first, MAX_ACTIVE).await.unwrap();
    db.insert_api_key(&second, MAX_ACTIVE).await.unwrap();
    let (early, late) = (T0 + Duration::hours(1), T0 + Duration::hours(2));

    db.record_key_uses(&[(first.record.id, late), (second.record.id, early)])
        .await
        .unwrap();
    db.record_key_uses(&[(first.record.id, early)])
        .await
        .unwrap();
    let listed = all_keys(&db, ada).await;
    let last_used = |id| listed.iter().find(|key| key.id == id).unwrap().last_used_at;
    assert_eq!(last_used(first.record.id), Some(late));
    assert_eq!(last_used(second.record.id), Some(early));
    db.record_key_uses(&[]).await.unwrap();
}

async fn pages_follow_each_other_and_stay_put_while_keys_are_added(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    // Five keys with one creation time (ties are ordered by id) and two later ones.
    let mut made = Vec::new();
    for n in 0..7 {
        let at = if n < 5 { T0 } else { T0 + Duration::minutes(n) };
        let key = new_key(ada, at, &format!("hash-{n}"));
        db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();
        made.push(key.record);
    }
    made.sort_by_key(|key| std::cmp::Reverse((key.created_at, key.id.0)));
    let first = db.list_api_keys(ada, PageRequest::first(3)).await.unwrap();
    assert_eq!(first.items, made[..3]);
    // A newer key arrives between two page reads: the next page does not shift.
    let newest = new_key(ada, T0 + Duration::hours(1), "hash-newest");
    db.insert_api_key(&newest, MAX_ACTIVE).await.unwrap();
    let second = db
        .list_api_keys(
            ada,
            PageRequest {
                limit: 3,
                after: first.next,
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items, made[3..6]);
    let third = db
        .list_api_keys(
            ada,
            PageRequest {
                limit: 3,
                after: second.next,
            },
        )
        .await
        .unwrap();
    assert_eq!(third.items, made[6..]);
    assert_eq!(third.next, None);
}

async fn the_active_key_cap_holds_under_concurrency(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let attempts: Vec<_> = (0..20)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                db.insert_api_key(&new_key(ada, T0, &format!("hash-{n}")), 5)
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => created += 1,
            Err(InsertKeyError::TooManyActiveKeys { max_active: 5 }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(all_keys(&db, ada).await.len(), 5);
    // A revoked key frees its place.
    let revoked = all_keys(&db, ada).await[0].id;
    db.deactivate_api_key(ada, revoked).await.unwrap();
    db.insert_api_key(&new_key(ada, T0, "hash-after"), 5)
        .await
        .unwrap();
}

async fn key_hashes_are_unique(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    db.insert_api_key(&new_key(ada, T0, "same-hash"), MAX_ACTIVE)
        .await
        .unwrap();
    assert!(
        db.insert_api_key(&new_key(ada, T0, "same-hash"), MAX_ACTIVE)
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
        size: "1024x1024".into(),
        shape: ImageShape::for_size(models.default_model(), Some(PixelSize::SQUARE_1K)),
        style: ImageStyle::Natural,
        model: models.default_model().clone(),
        latency: std::time::Duration::from_millis(812),
        created_at: at,
        usage: None,
        previous: None,
        turn: None,
        outcome,
    }
}

fn succeeded(caller: AuthenticatedApiKey, at: OffsetDateTime) -> GenerationRecord {
    let outcome = GenerationOutcome::Succeeded {
        object_key: ObjectKey::from_stored("images/2026/11/25/gen_x.png".into()),
        url: None,
        format: ImageFormat::Png,
        bytes: 2048,
        dimensions: None,
        cost: Usd::ZERO,
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
    db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();
    AuthenticatedApiKey::unlimited(key.record.id, user_id)
}

/// The user's usage per key and day from `since`, newest day first.
async fn daily_usage(db: &GenerationStore, user: UserId, since: Date) -> Vec<UsageFact> {
    let mut facts = db
        .usage_facts(user, since, since + Duration::days(365), false)
        .await
        .unwrap();
    facts.sort_by(|a, b| b.day.cmp(&a.day).then(a.api_key_id.0.cmp(&b.api_key_id.0)));
    facts
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

    let usage = daily_usage(&db, ada.user_id, T0.date()).await;
    let counts: Vec<(Date, u64)> = usage.iter().map(|day| (day.day, day.count)).collect();
    assert_eq!(counts, [(next_day.date(), 1), (T0.date(), 2)]);
    assert!(usage.iter().all(|day| day.api_key_id == ada.key_id));
    let only_today = daily_usage(&db, ada.user_id, next_day.date()).await;
    assert_eq!(only_today.len(), 1);
    assert_eq!(daily_usage(&db, bob.user_id, T0.date()).await[0].count, 1);
}

async fn a_failed_success_write_leaves_neither_row_nor_count(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let db = GenerationStore::start(&db);
    let record = succeeded(ada, T0);
    db.record(&record).await.unwrap();
    // The same id again: the usage increment runs first, then the insert fails, and the
    // transaction must take the increment back.
    assert!(db.record(&record).await.is_err());
    assert_eq!(daily_usage(&db, ada.user_id, T0.date()).await[0].count, 1);
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
    assert_eq!(daily_usage(&db, ada.user_id, T0.date()).await[0].count, 50);
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
    assert_eq!(daily_usage(&db, ada.user_id, T0.date()).await[0].count, 200);
}

/// Thousands of generations answered by Google at the same moment: more successes than the group
/// commit queues at once (2,048), every one written and counted, none refused.
async fn a_burst_of_successes_past_the_writers_queue_is_all_written(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let db = GenerationStore::start(&db);
    let writes: Vec<_> = (0..5000)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.record(&succeeded(ada, T0)).await })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    assert_eq!(
        daily_usage(&db, ada.user_id, T0.date()).await[0].count,
        5000
    );
}

// Spend control: quotas, key changes, rolling, and the operator's changes.

fn limit(n: u64) -> Option<QuotaLimit> {
    QuotaLimit::new(n)
}

/// A key of `user_id` with day and month quotas.
async fn key_with_quotas(
    db: &Database,
    user_id: UserId,
    hash: &str,
    per_day: Option<u64>,
    per_month: Option<u64>,
) -> AuthenticatedApiKey {
    let mut key = new_key(user_id, T0, hash);
    key.record.limits.quotas = PeriodLimits {
        per_day: per_day.and_then(limit),
        per_month: per_month.and_then(limit),
        ..PeriodLimits::default()
    };
    db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();
    AuthenticatedApiKey {
        quota_applies: true,
        ..AuthenticatedApiKey::unlimited(key.record.id, user_id)
    }
}

/// A reservation of `n` images at no cost.
fn images(n: u64) -> Ask {
    Ask {
        images: n,
        estimate: Usd::ZERO,
    }
}

/// A settlement giving back `n` images, at no cost.
fn give_back(n: u64) -> Settlement {
    Settlement {
        unmade_images: n,
        cost_change_nanos: 0,
    }
}

fn refused_by(result: Result<Reserved, ReserveError>) -> QuotaStanding {
    match result {
        Err(ReserveError::Exceeded(standing)) => standing,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn reservations_never_pass_a_quota_under_concurrency(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let caller = key_with_quotas(&db, ada, "hash-ada", Some(10), None).await;
    let attempts = (0..50).map(|_| {
        let db = db.clone();
        tokio::spawn(async move { db.reserve(&caller, images(1), T0).await })
    });
    let mut granted = Vec::new();
    for attempt in futures_util::future::join_all(attempts).await {
        match attempt.unwrap() {
            Ok(reserved) => granted.push(reserved),
            Err(ReserveError::Exceeded(standing)) => {
                assert_eq!(
                    (standing.scope, standing.period),
                    (QuotaScope::Key, QuotaPeriod::Day)
                );
                assert_eq!((standing.limit, standing.used), (10, 10));
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted.len(), 10);
    let mut left: Vec<u64> = granted
        .iter()
        .map(|reserved| reserved.tightest.unwrap().remaining())
        .collect();
    left.sort_unstable();
    assert_eq!(left, (0..10).collect::<Vec<_>>());
    // What is given back can be spent again, once.
    db.settle(&granted[0].reservation, give_back(1))
        .await
        .unwrap();
    let again = db.reserve(&caller, images(1), T0).await.unwrap();
    assert_eq!(again.tightest.unwrap().remaining(), 0);
    refused_by(db.reserve(&caller, images(1), T0).await);
    // Several images at once are all or nothing.
    let bob = registered(&db, "bob@example.com").await;
    let bobs = key_with_quotas(&db, bob, "hash-bob", Some(3), None).await;
    db.reserve(&bobs, images(2), T0).await.unwrap();
    let standing = refused_by(db.reserve(&bobs, images(2), T0).await);
    assert_eq!(standing.remaining(), 1);
    db.reserve(&bobs, images(1), T0).await.unwrap();
}

/// A key of `user_id` with a day budget and its account with a month budget.
async fn key_with_budgets(
    db: &Database,
    user_id: UserId,
    hash: &str,
    key_per_day: &str,
    account_per_month: Option<&str>,
) -> AuthenticatedApiKey {
    let mut key = new_key(user_id, T0, hash);
    key.record.limits.quotas.budget_per_day = Some(Usd::parse(key_per_day).unwrap());
    db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();
    if let Some(month) = account_per_month {
        let changes = AccountChanges {
            budget_per_month: Some(Some(Usd::parse(month).unwrap())),
            ..AccountChanges::default()
        };
        db.update_account(user_id, &changes, &audit_entry(user_id, user_id))
            .await
            .unwrap()
            .unwrap();
    }
    AuthenticatedApiKey {
        quota_applies: true,
        ..AuthenticatedApiKey::unlimited(key.record.id, user_id)
    }
}

async fn budgets_are_never_passed_under_concurrency_and_settle_to_the_real_cost(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    // Ten images of $0.0672 fit the day exactly.
    let caller = key_with_budgets(&db, ada, "hash-ada", "0.672", None).await;
    let one = Ask {
        images: 1,
        estimate: Usd::parse("0.0672").unwrap(),
    };
    let attempts = (0..50).map(|_| {
        let db = db.clone();
        tokio::spawn(async move { db.reserve(&caller, one, T0).await })
    });
    let mut granted = Vec::new();
    for attempt in futures_util::future::join_all(attempts).await {
        match attempt.unwrap() {
            Ok(reserved) => granted.push(reserved),
            Err(ReserveError::OverBudget(standing)) => {
                assert_eq!(
                    (standing.scope, standing.period),
                    (QuotaScope::Key, QuotaPeriod::Day)
                );
                assert_eq!(standing.spent.to_string(), "0.672000");
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted.len(), 10);
    let tightest = granted[0].tightest_budget.unwrap();
    assert_eq!(tightest.budget.to_string(), "0.672000");
    // A dry run decides the same and reserves nothing.
    assert!(matches!(
        db.check(&caller, one, T0).await,
        Err(ReserveError::OverBudget(_))
    ));
    // One image was not made, another cost a tenth of a cent less than estimated: both go
    // back, and exactly that much can be spent again.
    db.settle(
        &granted[0].reservation,
        granted[0].reservation.settlement(0, Usd::ZERO),
    )
    .await
    .unwrap();
    db.settle(
        &granted[1].reservation,
        granted[1]
            .reservation
            .settlement(1, Usd::parse("0.0662").unwrap()),
    )
    .await
    .unwrap();
    let checked = db.check(&caller, one, T0).await.unwrap();
    assert_eq!(
        checked.tightest_budget.unwrap().spent.to_string(),
        "0.671000"
    );
    db.reserve(&caller, one, T0).await.unwrap();
    let small = Ask {
        images: 1,
        estimate: Usd::parse("0.001").unwrap(),
    };
    db.reserve(&caller, small, T0).await.unwrap();
    assert!(matches!(
        db.reserve(&caller, small, T0).await,
        Err(ReserveError::OverBudget(_))
    ));
    // The next UTC day starts afresh.
    db.reserve(&caller, one, T0 + Duration::days(1))
        .await
        .unwrap();

    // An account's month budget counts all its keys, and resets on the 1st.
    let bob = registered(&db, "bob@example.com").await;
    let laptop = key_with_budgets(&db, bob, "hash-laptop", "100", Some("0.2")).await;
    let server = key_with_budgets(&db, bob, "hash-server", "100", None).await;
    let tenth = Ask {
        images: 1,
        estimate: Usd::parse("0.1").unwrap(),
    };
    db.reserve(&laptop, tenth, T0).await.unwrap();
    db.reserve(&server, tenth, T0).await.unwrap();
    match db.reserve(&laptop, tenth, T0).await {
        Err(ReserveError::OverBudget(standing)) => {
            assert_eq!(
                (standing.scope, standing.period),
                (QuotaScope::Account, QuotaPeriod::Month)
            );
            assert_eq!(standing.resets_at, datetime!(2026-12-01 00:00 UTC));
        }
        other => panic!("{other:?}"),
    }
    db.reserve(&server, tenth, datetime!(2026-12-01 00:00 UTC))
        .await
        .unwrap();
}

async fn quotas_start_afresh_at_utc_midnight_and_on_the_first(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let caller = key_with_quotas(&db, ada, "hash-ada", Some(2), Some(3)).await;
    let last_second = datetime!(2026-11-30 23:59:59.999 UTC);
    db.reserve(&caller, images(2), last_second).await.unwrap();
    let day = refused_by(db.reserve(&caller, images(1), last_second).await);
    assert_eq!(day.period, QuotaPeriod::Day);
    assert_eq!(day.resets_at, datetime!(2026-12-01 00:00 UTC));
    assert_eq!(day.seconds_to_reset(), 1);

    // A new day and a new month: both counters start from zero.
    let midnight = datetime!(2026-12-01 00:00 UTC);
    let first = db.reserve(&caller, images(1), midnight).await.unwrap();
    let tightest = first.tightest.unwrap();
    assert_eq!(
        (tightest.period, tightest.remaining()),
        (QuotaPeriod::Day, 1)
    );
    let next_day = datetime!(2026-12-02 08:00 UTC);
    db.reserve(&caller, images(2), next_day).await.unwrap();
    let month = refused_by(db.reserve(&caller, images(1), next_day).await);
    assert_eq!(
        (month.period, month.used, month.limit),
        (QuotaPeriod::Month, 3, 3)
    );
    assert_eq!(month.resets_at, datetime!(2027-01-01 00:00 UTC));
    // A release counts in the periods the reservation was made in, not in today's.
    db.settle(&first.reservation, give_back(1)).await.unwrap();
    let third_day = datetime!(2026-12-03 08:00 UTC);
    db.reserve(&caller, images(1), third_day).await.unwrap();
    let month = refused_by(db.reserve(&caller, images(1), third_day).await);
    assert_eq!(month.period, QuotaPeriod::Month);
}

async fn an_accounts_quota_counts_all_its_keys(db: Database) {
    let mut user = new_user("ada@example.com");
    user.limits.per_day = limit(3);
    db.insert_user(&user).await.unwrap();
    let ada = user.user.id;
    let laptop = key_with_quotas(&db, ada, "hash-laptop", None, None).await;
    let server = key_with_quotas(&db, ada, "hash-server", Some(10), None).await;
    db.reserve(&laptop, images(2), T0).await.unwrap();
    let reserved = db.reserve(&server, images(1), T0).await.unwrap();
    let tightest = reserved.tightest.unwrap();
    assert_eq!(
        (tightest.scope, tightest.remaining()),
        (QuotaScope::Account, 0)
    );
    let refused = refused_by(db.reserve(&laptop, images(1), T0).await);
    assert_eq!(refused.scope, QuotaScope::Account);
    // Another account is not touched.
    let bob = registered(&db, "bob@example.com").await;
    let bobs = key_with_quotas(&db, bob, "hash-bob", Some(1), None).await;
    db.reserve(&bobs, images(1), T0).await.unwrap();
}

async fn reservations_read_the_key_and_account_as_they_are(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let mut key = new_key(ada, T0, "hash-ada");
    key.record.expires_at = Some(T0 + Duration::hours(1));
    db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();
    let caller = AuthenticatedApiKey::unlimited(key.record.id, ada);
    // No quota: granted, with nothing to report.
    assert_eq!(
        db.reserve(&caller, images(1), T0).await.unwrap().tightest,
        None
    );
    let expired = db
        .reserve(&caller, images(1), T0 + Duration::hours(1))
        .await;
    assert!(
        matches!(expired, Err(ReserveError::KeyExpired)),
        "{expired:?}"
    );

    let other = key_with_quotas(&db, ada, "hash-other", Some(5), None).await;
    let root = registered(&db, "root@example.com").await;
    let disable = AccountChanges {
        disabled: Some(true),
        ..AccountChanges::default()
    };
    db.update_account(ada, &disable, &audit_entry(root, ada))
        .await
        .unwrap()
        .unwrap();
    let disabled = db.reserve(&other, images(1), T0).await;
    assert!(
        matches!(disabled, Err(ReserveError::AccountDisabled)),
        "{disabled:?}"
    );
    db.deactivate_api_key(ada, other.key_id).await.unwrap();
    let revoked = db.reserve(&other, images(1), T0).await;
    assert!(
        matches!(revoked, Err(ReserveError::KeyRevoked)),
        "{revoked:?}"
    );
}

async fn a_new_quota_counts_what_was_already_made(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let key = new_key(ada, T0, "hash-ada");
    db.insert_api_key(&key, MAX_ACTIVE).await.unwrap();
    let caller = AuthenticatedApiKey::unlimited(key.record.id, ada);
    let store = GenerationStore::start(&db);
    for record in [
        succeeded(caller, T0),
        succeeded(caller, T0),
        failed(caller, T0),
    ] {
        store.record(&record).await.unwrap();
    }
    store
        .record(&succeeded(caller, T0 - Duration::days(1)))
        .await
        .unwrap();
    let usage = store.key_usage(&[key.record.id], T0).await.unwrap();
    let made = KeyUsage {
        today: 2,
        this_month: 3,
        ..KeyUsage::default()
    };
    assert_eq!(usage, vec![(key.record.id, made)]);

    let changes = KeyChanges {
        name: Some(ApiKeyName::parse(Some("server")).unwrap()),
        expires_at: Some(Some(T0 + Duration::days(30))),
        limits: LimitChanges {
            per_minute: Some(NonZeroU32::new(7)),
            per_day: Some(limit(3)),
            per_month: None,
            budget_per_day: Some(Some(Usd::parse("2.5").unwrap())),
            budget_per_month: None,
        },
    };
    let updated = db
        .update_api_key(ada, key.record.id, &changes, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.name.as_deref(), Some("server"));
    assert_eq!(updated.expires_at, Some(T0 + Duration::days(30)));
    assert_eq!(updated.limits.per_minute, NonZeroU32::new(7));
    assert_eq!(updated.limits.quotas.per_day, limit(3));
    assert_eq!(
        updated
            .limits
            .quotas
            .budget_per_day
            .map(|usd| usd.to_string()),
        Some("2.500000".to_owned())
    );
    assert_eq!(
        db.find_api_key(ada, key.record.id).await.unwrap(),
        Some(updated)
    );
    // Two made today, so one is left.
    let caller = AuthenticatedApiKey {
        quota_applies: true,
        ..caller
    };
    db.reserve(&caller, images(1), T0).await.unwrap();
    refused_by(db.reserve(&caller, images(1), T0).await);

    // Left out keeps; null removes.
    let clear = KeyChanges {
        expires_at: Some(None),
        limits: LimitChanges {
            per_day: Some(None),
            ..LimitChanges::default()
        },
        ..KeyChanges::default()
    };
    let cleared = db
        .update_api_key(ada, key.record.id, &clear, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.name.as_deref(), Some("server"));
    assert_eq!(cleared.expires_at, None);
    assert_eq!(cleared.limits.per_minute, NonZeroU32::new(7));
    assert_eq!(cleared.limits.quotas.per_day, None);
    // As stored, not only as answered.
    assert_eq!(
        db.find_api_key(ada, key.record.id).await.unwrap(),
        Some(cleared)
    );
    // Only the settings: a revocation made meanwhile stays.
    db.deactivate_api_key(ada, key.record.id).await.unwrap();
    let renamed = KeyChanges {
        name: Some(ApiKeyName::parse(Some("after")).unwrap()),
        ..KeyChanges::default()
    };
    let after = db
        .update_api_key(ada, key.record.id, &renamed, T0)
        .await
        .unwrap()
        .unwrap();
    assert!(!after.is_active);
    assert!(
        !db.find_api_key(ada, key.record.id)
            .await
            .unwrap()
            .unwrap()
            .is_active
    );
    // Not someone else's.
    let bob = registered(&db, "bob@example.com").await;
    assert_eq!(
        db.update_api_key(bob, key.record.id, &clear, T0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.find_api_key(bob, key.record.id).await.unwrap(), None);
}

async fn rolling_stores_the_successor_and_ends_the_old_key(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let mut old = new_key(ada, T0, "hash-old");
    old.record.expires_at = Some(T0 + Duration::hours(1));
    db.insert_api_key(&old, MAX_ACTIVE).await.unwrap();
    let mut successor = new_key(ada, T0 + Duration::minutes(1), "hash-new");
    successor.record.rolled_from = Some(old.record.id);

    // Not bob's to roll: nothing stored.
    let bob = registered(&db, "bob@example.com").await;
    assert!(matches!(
        db.roll_api_key(bob, old.record.id, &successor, T0, MAX_ACTIVE)
            .await,
        Err(RollApiKeyError::Refused(RollRefusal::NotFound))
    ));
    assert_eq!(all_keys(&db, ada).await.len(), 1);

    // A later end than the key already has does not extend it.
    let later = T0 + Duration::days(1);
    db.roll_api_key(ada, old.record.id, &successor, later, MAX_ACTIVE)
        .await
        .unwrap();
    let keys = all_keys(&db, ada).await;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].id, successor.record.id);
    assert_eq!(keys[0].rolled_from, Some(old.record.id));
    assert_eq!(keys[1].expires_at, Some(T0 + Duration::hours(1)));
    let found = db
        .find_active_api_key(&successor.key_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key.key_id, successor.record.id);

    // An earlier one ends it sooner; a revoked key cannot be rolled.
    let mut third = new_key(ada, T0 + Duration::minutes(2), "hash-third");
    third.record.rolled_from = Some(successor.record.id);
    db.roll_api_key(ada, successor.record.id, &third, T0, MAX_ACTIVE)
        .await
        .unwrap();
    let found = db
        .find_active_api_key(&successor.key_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.expires_at, Some(T0));
    db.deactivate_api_key(ada, third.record.id).await.unwrap();
    let mut fourth = new_key(ada, T0, "hash-fourth");
    fourth.record.rolled_from = Some(third.record.id);
    assert!(matches!(
        db.roll_api_key(ada, third.record.id, &fourth, T0, MAX_ACTIVE)
            .await,
        Err(RollApiKeyError::Refused(RollRefusal::NotFound))
    ));
    assert_eq!(all_keys(&db, ada).await.len(), 3);
}

/// A roll adds an active key (the old one works through its grace), so it counts against
/// the cap; a key is rolled once, and not once it expired; and its successor starts with
/// what the old key spent of its day and month quotas.
async fn rolling_counts_against_the_cap_once_and_carries_the_quotas(db: Database) {
    let ada = registered(&db, "ada@example.com").await;
    let mut first = new_key(ada, T0, "hash-first");
    first.record.limits.quotas.per_day = limit(10);
    let second = new_key(ada, T0, "hash-second");
    db.insert_api_key(&first, 2).await.unwrap();
    db.insert_api_key(&second, 2).await.unwrap();
    let grace = T0 + Duration::hours(1);
    let successor = |n: &str, of: &NewApiKey| {
        let mut key = new_key(ada, T0 + Duration::minutes(1), n);
        key.record.rolled_from = Some(of.record.id);
        key.record.limits = of.record.limits;
        key
    };
    let over = successor("hash-over", &first);
    assert!(matches!(
        db.roll_api_key(ada, first.record.id, &over, grace, 2).await,
        Err(RollApiKeyError::Refused(RollRefusal::TooManyActiveKeys {
            max_active: 2
        }))
    ));
    assert_eq!(all_keys(&db, ada).await.len(), 2);
    // Spend three of the first key's day quota, then roll it with room for one more key.
    let caller = AuthenticatedApiKey {
        quota_applies: true,
        ..AuthenticatedApiKey::unlimited(first.record.id, ada)
    };
    db.reserve(&caller, images(3), T0).await.unwrap();
    let next = successor("hash-next", &first);
    db.roll_api_key(ada, first.record.id, &next, grace, 3)
        .await
        .unwrap();
    let successor_caller = AuthenticatedApiKey {
        quota_applies: true,
        ..AuthenticatedApiKey::unlimited(next.record.id, ada)
    };
    let reserved = db
        .reserve(&successor_caller, images(7), T0 + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(reserved.tightest.map(|standing| standing.used), Some(10));
    assert!(matches!(
        db.reserve(&successor_caller, images(1), T0 + Duration::minutes(2))
            .await,
        Err(ReserveError::Exceeded(_))
    ));
    // Once only; and not after it expired.
    let again = successor("hash-again", &first);
    assert!(matches!(
        db.roll_api_key(ada, first.record.id, &again, grace, 10)
            .await,
        Err(RollApiKeyError::Refused(RollRefusal::AlreadyRolled))
    ));
    let mut ending = new_key(ada, T0, "hash-ending");
    ending.record.expires_at = Some(T0 + Duration::seconds(30));
    db.insert_api_key(&ending, 10).await.unwrap();
    let late = successor("hash-late", &ending);
    assert!(matches!(
        db.roll_api_key(ada, ending.record.id, &late, grace, 10)
            .await,
        Err(RollApiKeyError::Refused(RollRefusal::Expired))
    ));
    assert_eq!(all_keys(&db, ada).await.len(), 4);
}

fn audit_entry(actor: UserId, target: UserId) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7(),
        actor,
        action: ACCOUNT_UPDATE.to_owned(),
        target,
        before: AccountSettings::default(),
        after: AccountSettings::default(),
        at: T0,
    }
}

async fn account_changes_are_audited_with_before_and_after(db: Database) {
    let root = registered(&db, "root@example.com").await;
    let ada = caller_with_key(&db, "ada@example.com").await;
    let store = GenerationStore::start(&db);
    store.record(&succeeded(ada, T0)).await.unwrap();

    let changes = AccountChanges {
        per_day: Some(limit(5)),
        per_month: Some(limit(50)),
        budget_per_month: Some(Some(Usd::parse("50").unwrap())),
        disabled: Some(true),
        ..AccountChanges::default()
    };
    let (before, after) = db
        .update_account(ada.user_id, &changes, &audit_entry(root, ada.user_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, AccountSettings::default());
    let expected = AccountSettings {
        limits: PeriodLimits {
            per_day: limit(5),
            per_month: limit(50),
            budget_per_month: Some(Usd::parse("50").unwrap()),
            ..PeriodLimits::default()
        },
        disabled: true,
    };
    assert_eq!(after, expected);
    let enable = AccountChanges {
        disabled: Some(false),
        ..AccountChanges::default()
    };
    let mut second = audit_entry(root, ada.user_id);
    second.at = T0 + Duration::minutes(1);
    db.update_account(ada.user_id, &enable, &second)
        .await
        .unwrap()
        .unwrap();
    // An unknown account: nothing changed, nothing audited.
    let nobody = UserId(Uuid::now_v7());
    assert_eq!(
        db.update_account(nobody, &enable, &audit_entry(root, nobody))
            .await
            .unwrap(),
        None
    );

    let audit = db.list_audit(PageRequest::first(10)).await.unwrap();
    assert_eq!(audit.items.len(), 2);
    let newest = &audit.items[0];
    assert_eq!((newest.actor, newest.target), (root, ada.user_id));
    assert_eq!(newest.action, ACCOUNT_UPDATE);
    assert_eq!(newest.before, expected);
    assert_eq!(
        newest.after,
        AccountSettings {
            disabled: false,
            ..expected
        }
    );
    assert_eq!(audit.items[1].before, AccountSettings::default());
    assert_eq!(audit.items[1].after, expected);
    let first_only = db.list_audit(PageRequest::first(1)).await.unwrap();
    let rest = db
        .list_audit(PageRequest {
            after: first_only.next,
            ..PageRequest::first(10)
        })
        .await
        .unwrap();
    assert_eq!(rest.items, audit.items[1..]);

    let accounts = db.list_accounts(PageRequest::first(10), T0).await.unwrap();
    let listed: Vec<_> = accounts
        .items
        .iter()
        .map(|overview| overview.user.email.as_str())
        .collect();
    assert_eq!(listed.len(), 2);
    let ada_overview = accounts
        .items
        .iter()
        .find(|overview| overview.user.id == ada.user_id)
        .unwrap();
    assert_eq!(ada_overview.settings.limits, expected.limits);
    assert!(!ada_overview.settings.disabled);
    assert_eq!(
        ada_overview.usage,
        KeyUsage {
            today: 1,
            this_month: 1,
            ..KeyUsage::default()
        }
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
    what_was_made_round_trips_with_its_shape_size_and_tokens,
    users_round_trip_with_every_field,
    sessions_name_their_user_until_they_end_or_expire,
    a_new_password_ends_every_session,
    a_taken_email_is_reported_and_nothing_is_stored,
    unknown_users_are_none,
    keys_are_listed_newest_first_and_only_for_their_owner,
    deactivating_is_owner_only_and_repeatable,
    active_keys_are_found_by_hash_and_inactive_ones_are_not,
    key_uses_only_move_last_used_forward,
    key_hashes_are_unique,
    pages_follow_each_other_and_stay_put_while_keys_are_added,
    the_active_key_cap_holds_under_concurrency,
    successes_are_counted_per_key_per_utc_day_and_failures_are_not,
    a_failed_success_write_leaves_neither_row_nor_count,
    concurrent_successes_are_all_counted,
    a_burst_of_successes_past_the_writers_queue_is_all_written,
    one_bad_success_among_concurrent_ones_fails_alone,
    reservations_never_pass_a_quota_under_concurrency,
    budgets_are_never_passed_under_concurrency_and_settle_to_the_real_cost,
    quotas_start_afresh_at_utc_midnight_and_on_the_first,
    an_accounts_quota_counts_all_its_keys,
    reservations_read_the_key_and_account_as_they_are,
    a_new_quota_counts_what_was_already_made,
    rolling_stores_the_successor_and_ends_the_old_key,
    rolling_counts_against_the_cap_once_and_carries_the_quotas,
    account_changes_are_audited_with_before_and_after,
    an_idempotency_entry_is_claimed_once_then_replayed,
    a_released_or_lapsed_idempotency_entry_is_claimed_afresh,
    expired_idempotency_entries_are_deleted,
    one_of_many_concurrent_idempotency_claims_wins,
    history_lists_a_users_generations_newest_first_with_filters,
    a_deleted_generation_stays_as_a_record_without_its_url,
    usage_is_read_by_model_over_a_range_of_days,
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
            let insert = db.insert_api_key(&key, MAX_ACTIVE);
            let _ = tokio::time::timeout(std::time::Duration::from_micros(50), insert).await;
            let list = db.list_api_keys(ada, PageRequest::first(10));
            let _ = tokio::time::timeout(std::time::Duration::from_micros(50), list).await;
        }
        // Abandoned calls still run to completion, and the pool still serves: wait (with a
        // bound) for the last of them to land.
        nb_testkit::eventually_true(
            "every abandoned insert lands",
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(10),
            || async { all_keys(&db, ada).await.len() >= 200 },
        )
        .await;
        assert_eq!(all_keys(&db, ada).await.len(), 200);
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
