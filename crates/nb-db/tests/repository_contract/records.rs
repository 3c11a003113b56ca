//! Contracts of the records kept for retries and for the user: idempotency entries, the
//! history of generations, and usage by model.

use std::sync::Arc;

use bytes::Bytes;
use nb_db::{Database, GenerationStore};
use nb_domain::api_keys::{ApiKeyId, AuthenticatedApiKey};
use nb_domain::generation::{
    GenerationOutcome, GenerationRecord, GenerationStatus, HistoryFilter, ImageFormat, ObjectKey,
};
use nb_domain::idempotency::{
    ClaimOutcome, FingerprintBuilder, IdempotencyKey, IdempotencyLease, KeptAnswer, NewClaim,
    RequestFingerprint,
};
use nb_domain::pagination::PageRequest;
use nb_domain::ports::{GenerationRepository, HistoryRepository, IdempotencyRepository};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{T0, caller_with_key, generation};

fn fingerprint(body: &str) -> RequestFingerprint {
    let mut builder = FingerprintBuilder::new("POST", "/v1/generate");
    builder.piece(body.as_bytes());
    builder.finish()
}

fn claim_at(api_key_id: ApiKeyId, key: &str, body: &str, now: OffsetDateTime) -> NewClaim {
    NewClaim {
        lease: IdempotencyLease {
            api_key_id,
            key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
            lease_id: Uuid::now_v7(),
        },
        fingerprint: fingerprint(body),
        now,
        locked_until: now + Duration::minutes(5),
        expires_at: now + Duration::hours(24),
    }
}

fn answer(body: &'static str) -> KeptAnswer {
    KeptAnswer {
        status: 200,
        content_type: "application/json".into(),
        body: Bytes::from_static(body.as_bytes()),
    }
}

fn existing(outcome: ClaimOutcome) -> nb_domain::idempotency::ExistingEntry {
    match outcome {
        ClaimOutcome::Existing(entry) => entry,
        other => panic!("expected an existing entry, got {other:?}"),
    }
}

pub(crate) async fn an_idempotency_entry_is_claimed_once_then_replayed(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let first = claim_at(ada.key_id, "order-1", "a", T0);
    assert!(matches!(
        db.claim(&first).await.unwrap(),
        ClaimOutcome::Claimed
    ));
    // Running: another claim sees it, without an answer.
    let running = existing(
        db.claim(&claim_at(
            ada.key_id,
            "order-1",
            "a",
            T0 + Duration::seconds(1),
        ))
        .await
        .unwrap(),
    );
    assert_eq!(running.fingerprint, fingerprint("a"));
    assert!(running.answer.is_none());
    // Only the holder completes it.
    let stranger = IdempotencyLease {
        lease_id: Uuid::now_v7(),
        ..first.lease.clone()
    };
    let kept = answer(r#"{"id":"gen_1"}"#);
    assert!(
        !db.complete(&stranger, &kept, T0 + Duration::hours(24))
            .await
            .unwrap()
    );
    assert!(
        db.complete(&first.lease, &kept, T0 + Duration::hours(24))
            .await
            .unwrap()
    );
    // A release after completion changes nothing.
    db.release(&first.lease).await.unwrap();
    let done = existing(
        db.claim(&claim_at(
            ada.key_id,
            "order-1",
            "b",
            T0 + Duration::hours(1),
        ))
        .await
        .unwrap(),
    );
    assert_eq!(done.fingerprint, fingerprint("a"));
    assert_eq!(done.answer, Some(kept));
    // Keys are scoped to their API key.
    let bob = caller_with_key(&db, "bob@example.com").await;
    assert!(matches!(
        db.claim(&claim_at(bob.key_id, "order-1", "a", T0))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    ));
}

pub(crate) async fn a_released_or_lapsed_idempotency_entry_is_claimed_afresh(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let first = claim_at(ada.key_id, "k", "a", T0);
    db.claim(&first).await.unwrap();
    db.release(&first.lease).await.unwrap();
    let second = claim_at(ada.key_id, "k", "b", T0);
    assert!(matches!(
        db.claim(&second).await.unwrap(),
        ClaimOutcome::Claimed
    ));
    // The holder vanished: once its lease lapsed, a new request takes over, and the old
    // holder can no longer complete it.
    let after_lapse = claim_at(ada.key_id, "k", "c", second.locked_until);
    assert!(matches!(
        db.claim(&after_lapse).await.unwrap(),
        ClaimOutcome::Claimed
    ));
    assert!(
        !db.complete(&second.lease, &answer("{}"), T0 + Duration::hours(24))
            .await
            .unwrap()
    );
    assert!(
        db.complete(&after_lapse.lease, &answer("{}"), T0 + Duration::hours(24))
            .await
            .unwrap()
    );
    // A completed entry is replayed until it expires, then claimed afresh.
    let before_expiry = T0 + Duration::hours(24) - Duration::seconds(1);
    assert!(matches!(
        db.claim(&claim_at(ada.key_id, "k", "c", before_expiry))
            .await
            .unwrap(),
        ClaimOutcome::Existing(_)
    ));
    assert!(matches!(
        db.claim(&claim_at(ada.key_id, "k", "d", T0 + Duration::hours(24)))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    ));
}

pub(crate) async fn expired_idempotency_entries_are_deleted(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let kept = claim_at(ada.key_id, "kept", "a", T0);
    let old = claim_at(ada.key_id, "old", "a", T0 - Duration::hours(30));
    db.claim(&kept).await.unwrap();
    db.claim(&old).await.unwrap();
    assert_eq!(db.delete_expired(T0).await.unwrap(), 1);
    assert!(matches!(
        db.claim(&claim_at(ada.key_id, "kept", "a", T0))
            .await
            .unwrap(),
        ClaimOutcome::Existing(_)
    ));
    assert_eq!(db.delete_expired(T0).await.unwrap(), 0);
}

pub(crate) async fn one_of_many_concurrent_idempotency_claims_wins(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let db = Arc::new(db);
    let claims = (0..20).map(|_| {
        let db = db.clone();
        let claim = claim_at(ada.key_id, "same", "a", T0);
        tokio::spawn(async move { db.claim(&claim).await.unwrap() })
    });
    let outcomes = futures_util::future::join_all(claims).await;
    let won = outcomes
        .into_iter()
        .filter(|outcome| matches!(outcome.as_ref().unwrap(), ClaimOutcome::Claimed))
        .count();
    assert_eq!(won, 1);
}

fn succeeded_as(
    caller: AuthenticatedApiKey,
    at: OffsetDateTime,
    object_key: &str,
    model: &str,
) -> GenerationRecord {
    let mut record = generation(
        caller,
        at,
        GenerationOutcome::Succeeded {
            object_key: ObjectKey::from_stored(object_key.into()),
            url: Some(format!("http://localhost/images/{object_key}")),
            format: ImageFormat::Png,
            bytes: 2048,
            dimensions: None,
            // A micro-dollar and a half: sums must keep every nano-dollar.
            cost: nb_domain::money::Usd::from_nanos(1_500),
        },
    );
    record.model = nb_domain::generation::AllowedModels::new([model.to_owned()])
        .unwrap()
        .default_model()
        .clone();
    record
}

pub(crate) async fn history_lists_a_users_generations_newest_first_with_filters(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let ada_second_key = {
        let key = super::new_key(ada.user_id, T0, "hash-ada-2");
        use nb_domain::ports::ApiKeyRepository;
        db.insert_api_key(&key, super::MAX_ACTIVE).await.unwrap();
        AuthenticatedApiKey::unlimited(key.record.id, ada.user_id)
    };
    let bob = caller_with_key(&db, "bob@example.com").await;
    let store = GenerationStore::start(&db);
    let mut made = Vec::new();
    for minute in 0..5 {
        let caller = if minute % 2 == 0 { ada } else { ada_second_key };
        let record = succeeded_as(
            caller,
            T0 + Duration::minutes(minute),
            &format!("images/a{minute}.png"),
            "gemini-3.1-flash-image",
        );
        store.record(&record).await.unwrap();
        made.push(record.id);
    }
    let failed = generation(
        ada,
        T0 + Duration::minutes(10),
        GenerationOutcome::Failed {
            code: "content_rejected",
        },
    );
    store.record(&failed).await.unwrap();
    store
        .record(&succeeded_as(
            bob,
            T0,
            "images/b.png",
            "gemini-3.1-flash-image",
        ))
        .await
        .unwrap();

    // Newest first, page after page, only Ada's.
    let first = store
        .list_generations(
            ada.user_id,
            &HistoryFilter::default(),
            PageRequest::first(4),
        )
        .await
        .unwrap();
    let ids: Vec<_> = first.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, [failed.id, made[4], made[3], made[2]]);
    assert_eq!(first.items[0].status, GenerationStatus::Failed);
    assert_eq!(
        first.items[0].error_code.as_deref(),
        Some("content_rejected")
    );
    // A generation made meanwhile does not shift the next page.
    store
        .record(&succeeded_as(
            ada,
            T0 + Duration::minutes(20),
            "images/late.png",
            "gemini-3.1-flash-image",
        ))
        .await
        .unwrap();
    let mut next = PageRequest::first(4);
    next.after = first.next;
    let second = store
        .list_generations(ada.user_id, &HistoryFilter::default(), next)
        .await
        .unwrap();
    let ids: Vec<_> = second.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, [made[1], made[0]]);
    assert!(second.next.is_none());

    let by_key = HistoryFilter {
        key_id: Some(ada_second_key.key_id),
        ..HistoryFilter::default()
    };
    let listed = store
        .list_generations(ada.user_id, &by_key, PageRequest::first(10))
        .await
        .unwrap();
    let ids: Vec<_> = listed.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, [made[3], made[1]]);
    let in_range = HistoryFilter {
        status: Some(GenerationStatus::Succeeded),
        from: Some(T0 + Duration::minutes(1)),
        to: Some(T0 + Duration::minutes(3)),
        ..HistoryFilter::default()
    };
    let listed = store
        .list_generations(ada.user_id, &in_range, PageRequest::first(10))
        .await
        .unwrap();
    let ids: Vec<_> = listed.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, [made[2], made[1]]);
}

pub(crate) async fn a_deleted_generation_stays_as_a_record_without_its_url(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let bob = caller_with_key(&db, "bob@example.com").await;
    let store = GenerationStore::start(&db);
    let record = succeeded_as(ada, T0, "images/x.png", "gemini-3.1-flash-image");
    store.record(&record).await.unwrap();
    let found = store
        .find_generation(ada.user_id, record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.status, GenerationStatus::Succeeded);
    assert_eq!(found.object_key.as_ref().unwrap().as_str(), "images/x.png");
    assert!(found.url.is_some());
    assert!(
        store
            .find_generation(bob.user_id, record.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .mark_generation_deleted(bob.user_id, record.id, T0)
            .await
            .unwrap()
    );
    let at = T0 + Duration::minutes(1);
    assert!(
        store
            .mark_generation_deleted(ada.user_id, record.id, at)
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_generation_deleted(ada.user_id, record.id, at + Duration::minutes(1))
            .await
            .unwrap()
    );
    let deleted = store
        .find_generation(ada.user_id, record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.status, GenerationStatus::Deleted);
    assert_eq!(deleted.deleted_at, Some(at));
    assert!(deleted.url.is_none());
    let only_deleted = HistoryFilter {
        status: Some(GenerationStatus::Deleted),
        ..HistoryFilter::default()
    };
    let listed = store
        .list_generations(ada.user_id, &only_deleted, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    // Its usage stays.
    let usage = store
        .usage_facts(ada.user_id, T0.date(), T0.date(), false)
        .await
        .unwrap();
    assert_eq!(usage.iter().map(|fact| fact.count).sum::<u64>(), 1);
    // Deleted or not, the row still names its object (the sweep keeps it).
    let named = store
        .named_object_keys(&[
            ObjectKey::from_stored("images/x.png".into()),
            ObjectKey::from_stored("images/stray.png".into()),
        ])
        .await
        .unwrap();
    let named: Vec<&str> = named.iter().map(ObjectKey::as_str).collect();
    assert_eq!(named, ["images/x.png"]);
}

pub(crate) async fn usage_is_read_by_model_over_a_range_of_days(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let store = GenerationStore::start(&db);
    for (at, key, model) in [
        (T0, "images/1.png", "gemini-3-pro-image"),
        (
            T0 + Duration::minutes(1),
            "images/2.png",
            "gemini-3-pro-image",
        ),
        (
            T0 + Duration::minutes(2),
            "images/3.png",
            "gemini-3.1-flash-lite-image",
        ),
        (
            T0 + Duration::days(1),
            "images/4.png",
            "gemini-3.1-flash-lite-image",
        ),
        (
            T0 + Duration::days(3),
            "images/5.png",
            "gemini-3.1-flash-lite-image",
        ),
    ] {
        store
            .record(&succeeded_as(ada, at, key, model))
            .await
            .unwrap();
    }
    let mut facts = store
        .usage_facts(
            ada.user_id,
            T0.date(),
            (T0 + Duration::days(1)).date(),
            true,
        )
        .await
        .unwrap();
    facts.sort_by(|a, b| a.day.cmp(&b.day).then(a.model.cmp(&b.model)));
    let seen: Vec<_> = facts
        .iter()
        .map(|fact| (fact.day, fact.model.clone().unwrap(), fact.count))
        .collect();
    assert_eq!(
        seen,
        [
            (T0.date(), "gemini-3-pro-image".to_owned(), 2),
            (T0.date(), "gemini-3.1-flash-lite-image".to_owned(), 1),
            (
                (T0 + Duration::days(1)).date(),
                "gemini-3.1-flash-lite-image".to_owned(),
                1
            ),
        ]
    );
    assert!(facts.iter().all(|fact| fact.api_key_id == ada.key_id));
    // Costs are summed exactly, by model and without (from the daily counts).
    let cost: Vec<i64> = facts.iter().map(|fact| fact.cost.nanos()).collect();
    assert_eq!(cost, [3_000, 1_500, 1_500]);
    let by_day = store
        .usage_facts(
            ada.user_id,
            T0.date(),
            (T0 + Duration::days(3)).date(),
            false,
        )
        .await
        .unwrap();
    let total: nb_domain::money::Usd = by_day.iter().map(|fact| fact.cost).sum();
    assert_eq!(total.nanos(), 5 * 1_500);
    let key_usage = store.key_usage(&[ada.key_id], T0).await.unwrap();
    assert_eq!(key_usage[0].1.spend_today.nanos(), 3 * 1_500);
    assert_eq!(key_usage[0].1.spend_this_month.nanos(), 5 * 1_500);
}

/// The shared per-minute limiter exists on PostgreSQL only (with SQLite, one instance, the
/// limits are counted in memory); its contract is in `rate_limiter.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_rate_limiter_is_postgresql_only() {
    let test_db = nb_db::testing::TestDatabase::postgres().await;
    assert!(test_db.database.shared_rate_limiter().is_some());
    let sqlite = nb_db::testing::TestDatabase::sqlite().await;
    assert!(sqlite.database.shared_rate_limiter().is_none());
}

pub(crate) async fn what_was_made_round_trips_with_its_shape_size_and_tokens(db: Database) {
    let ada = caller_with_key(&db, "ada@example.com").await;
    let store = GenerationStore::start(&db);
    let mut record = succeeded_as(ada, T0, "images/4k.png", "gemini-3-pro-image");
    record.size = "3840x2160".into();
    record.shape = nb_domain::generation::ImageShape {
        aspect_ratio: nb_domain::generation::AspectRatio::parse("16:9").ok(),
        resolution: nb_domain::generation::Resolution::K4,
    };
    if let GenerationOutcome::Succeeded { dimensions, .. } = &mut record.outcome {
        *dimensions = Some((5504, 3072));
    }
    let usage = nb_domain::generation::TokenUsage {
        input_tokens: 12,
        input_text_tokens: Some(12),
        input_image_tokens: None,
        output_tokens: 2000,
        output_image_tokens: Some(2000),
        output_text_tokens: None,
        thinking_tokens: 150,
        total_tokens: 2162,
    };
    record.usage = Some(usage);
    let earlier = succeeded_as(ada, T0, "images/earlier.png", "gemini-3-pro-image");
    store.record(&earlier).await.unwrap();
    record.previous = Some(earlier.id);
    let turn = nb_domain::generation::StoredTurn {
        text: "make it 4K".into(),
        input_keys: vec![ObjectKey::from_stored(
            "inputs/2026/11/25/gen_x/0.png".into(),
        )],
        parts: vec![
            nb_domain::generation::ReturnedPart {
                text: Some("Here it is".into()),
                thought_signature: Some("c2ln".into()),
            },
            nb_domain::generation::ReturnedPart {
                text: None,
                thought_signature: None,
            },
        ],
    };
    record.turn = Some(turn.clone());
    store.record(&record).await.unwrap();
    let found = store
        .find_generation(ada.user_id, record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.size, "3840x2160");
    assert_eq!(
        (found.aspect_ratio.as_deref(), found.resolution.as_deref()),
        (Some("16:9"), Some("4K"))
    );
    assert_eq!((found.width, found.height), (Some(5504), Some(3072)));
    assert_eq!(found.usage, Some(usage));
    assert_eq!((found.previous, found.turn), (Some(earlier.id), Some(turn)));
    // The sweep keeps inputs of live rows only.
    store
        .mark_generation_deleted(ada.user_id, earlier.id, T0)
        .await
        .unwrap();
    let unknown = nb_domain::generation::GenerationId(Uuid::now_v7());
    let live = store
        .live_generation_ids(&[record.id, earlier.id, unknown])
        .await
        .unwrap();
    assert_eq!(live, [record.id]);

    // Without counts from Google, and with the model's choice of ratio: nulls.
    let mut plain = succeeded_as(ada, T0, "images/plain.png", "gemini-3.1-flash-image");
    plain.shape.aspect_ratio = None;
    store.record(&plain).await.unwrap();
    let found = store
        .find_generation(ada.user_id, plain.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.aspect_ratio, found.usage, found.width),
        (None, None, None)
    );
}
