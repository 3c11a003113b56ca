//! Two processes of the real binary on one PostgreSQL, as behind a load balancer: a day quota
//! hit from both at once holds exactly, and an account disabled through one is refused by
//! the other (its tokens at once, its cached keys within the key cache's lifetime).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod support;

use std::time::Duration;

use nb_testkit::{eventually, eventually_true};
use support::{POLL, ServerProcess};

use nb_db::DatabaseUrl;
use nb_db::testing::TestDatabase;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4f4IBiBggFAA1zgcdmk6h0gAAAABJRU5ErkJggg==";
const ADMIN: &str = "root@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// Long: what reaches the other instance within a second is announced, not timed out.
const KEY_CACHE_TTL_SECONDS: u64 = 300;

type Instance = ServerProcess;

async fn start(database_url: &str, google: &MockServer) -> Instance {
    start_with(database_url, google, &[]).await
}

async fn start_with(
    database_url: &str,
    google: &MockServer,
    settings: &[(&str, &str)],
) -> Instance {
    ServerProcess::start(|command| {
        command
            .envs(settings.iter().copied())
            .env("DATABASE_URL", database_url)
            .env(
                "JWT_SECRET",
                "a shared secret of at least 32 bytes, for both",
            )
            .env("GOOGLE_API_KEY", "test-google-key")
            .env("GOOGLE_GEMINI_BASE_URL", google.uri())
            .env("NB_ADMIN_EMAILS", ADMIN)
            .env("NB_BCRYPT_COST", "4")
            .env(
                "NB_KEY_CACHE_TTL_SECONDS",
                KEY_CACHE_TTL_SECONDS.to_string(),
            )
            .env("NB_GENERATIONS_PER_MINUTE_PER_KEY", "1000")
            .env("NB_GENERATIONS_PER_MINUTE_PER_ACCOUNT", "1000");
    })
    .await
}

async fn signed_up(client: &reqwest::Client, instance: &Instance, email: &str) -> String {
    let response = client
        .post(format!("{}/v1/auth/register", instance.base))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn created_key(
    client: &reqwest::Client,
    instance: &Instance,
    token: &str,
    body: Value,
) -> String {
    let response = client
        .post(format!("{}/v1/keys", instance.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["key"].as_str().unwrap().to_owned()
}

/// How long until `instance` answers `expected` to a generation with `key` (polled every
/// 10 ms); fails past a second.
async fn propagation_time(
    client: &reqwest::Client,
    instance: &Instance,
    key: &str,
    expected: (u16, &str),
    since: tokio::time::Instant,
) -> Duration {
    let within = Duration::from_secs(1).saturating_sub(since.elapsed());
    eventually(
        "the change reaches the other instance within a second",
        within,
        Duration::from_millis(10),
        || async {
            let answer = code(generate(client, instance, key).await).await;
            if (answer.0, answer.1.as_str()) == expected {
                return Some(since.elapsed());
            }
            assert_eq!(answer.0, 200, "{answer:?}");
            None
        },
    )
    .await
}

async fn generate(client: &reqwest::Client, instance: &Instance, key: &str) -> reqwest::Response {
    client
        .post(format!("{}/v1/generate", instance.base))
        .bearer_auth(key)
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap()
}

/// A key created through `first` and cached by `second`, then revoked through `first`: how
/// long until `second` refuses it (fails past a second).
async fn revocation_propagation(
    client: &reqwest::Client,
    first: &Instance,
    second: &Instance,
    token: &str,
) -> Duration {
    let response = client
        .post(format!("{}/v1/keys", first.base))
        .bearer_auth(token)
        .json(&json!({"name": "revoked"}))
        .send()
        .await
        .unwrap();
    let revoked: Value = response.json().await.unwrap();
    let revoked_key = revoked["key"].as_str().unwrap().to_owned();
    assert_eq!(generate(client, second, &revoked_key).await.status(), 200);
    let revoked_at = tokio::time::Instant::now();
    let revoke = client
        .delete(format!(
            "{}/v1/keys/{}",
            first.base,
            revoked["id"].as_str().unwrap()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    propagation_time(
        client,
        second,
        &revoked_key,
        (401, "invalid_api_key"),
        revoked_at,
    )
    .await
}

/// 100 generations at once with `key` (a per-minute limit of 30), alternating between the
/// instances: exactly 30 pass and 70 are 429 `rate_limited`.
async fn exactly_30_of_100_pass(
    client: &reqwest::Client,
    first: &Instance,
    second: &Instance,
    key: &str,
) {
    let requests = (0..100).map(|n| {
        let instance = if n % 2 == 0 { first } else { second };
        async move { code(generate(client, instance, key).await).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let succeeded = answers.iter().filter(|(status, _)| *status == 200).count();
    let rate_limited = answers
        .iter()
        .filter(|answer| *answer == &(429, "rate_limited".to_owned()))
        .count();
    assert_eq!((succeeded, rate_limited), (30, 70), "{answers:?}");
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_revocation_and_disabling_hold_across_two_instances_on_one_postgresql() {
    let database = TestDatabase::postgres().await;
    let DatabaseUrl::Postgres(url) = &database.url else {
        unreachable!("a PostgreSQL test database");
    };
    let google = MockServer::start().await;
    let answer = json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}]}, "finishReason": "STOP"}]});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&google)
        .await;
    let client = reqwest::Client::new();
    let first = start(url, &google).await;
    let second = start(url, &google).await;

    let ada = signed_up(&client, &first, "ada@example.com").await;
    let limited = created_key(&client, &first, &ada, json!({"limits": {"per_day": 10}})).await;
    // 50 requests at once, alternating between the instances.
    let requests = (0..50).map(|n| {
        let instance = if n % 2 == 0 { &first } else { &second };
        let (client, key) = (client.clone(), limited.clone());
        async move { code(generate(&client, instance, &key).await).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let succeeded = answers.iter().filter(|(status, _)| *status == 200).count();
    let refused = answers
        .iter()
        .filter(|answer| *answer == &(429, "quota_exceeded".to_owned()))
        .count();
    assert_eq!((succeeded, refused), (10, 40), "{answers:?}");
    assert_eq!(google.received_requests().await.unwrap().len(), 10);

    // A per-minute limit of 30, hit by 100 requests spread over both instances: counted
    // in PostgreSQL, so exactly 30 pass.
    let per_minute =
        created_key(&client, &first, &ada, json!({"limits": {"per_minute": 30}})).await;
    exactly_30_of_100_pass(&client, &first, &second, &per_minute).await;

    // Disabled through the first instance; the second has both keys in its cache.
    let unlimited = created_key(&client, &first, &ada, json!({})).await;
    assert_eq!(generate(&client, &second, &unlimited).await.status(), 200);
    // A key revoked through the first instance, cached by the second.
    let took = revocation_propagation(&client, &first, &second, &ada).await;
    eprintln!("a revocation reached the other instance in {took:?}");
    let admin = signed_up(&client, &second, ADMIN).await;
    let users: Value = client
        .get(format!("{}/v1/admin/users", first.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ada_entry = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["email"] == "ada@example.com")
        .unwrap();
    assert_eq!(ada_entry["usage"]["today"], 42);
    let disabled_at = tokio::time::Instant::now();
    let disabled = client
        .patch(format!(
            "{}/v1/admin/users/{}",
            first.base,
            ada_entry["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    // Tokens are checked against the database on every request: refused at once.
    let me = client
        .get(format!("{}/v1/auth/me", second.base))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(code(me).await, (403, "account_disabled".to_owned()));
    // A key with a quota reserves in the database on every generation: refused at once.
    let answer = code(generate(&client, &second, &limited).await).await;
    assert_eq!(answer, (403, "account_disabled".to_owned()));
    // Any other key, cached by the second instance, within a second: announced by the
    // first (NOTIFY), not left to the cache's 300 s.
    let took = propagation_time(
        &client,
        &second,
        &unlimited,
        (403, "account_disabled"),
        disabled_at,
    )
    .await;
    eprintln!("account disabling reached the other instance in {took:?}");
    drop((first, second));
}

async fn google_answering_images() -> MockServer {
    let google = MockServer::start().await;
    let answer = json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}]}, "finishReason": "STOP"}]});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&google)
        .await;
    google
}

async fn ready(client: &reqwest::Client, instance: &Instance) -> (u16, Value) {
    let response = client
        .get(format!("{}/readyz", instance.base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// With `NB_REDIS_URL`, two instances count per-minute limits in Redis (not in PostgreSQL)
/// and hear revocations over its pub/sub; Redis down is a clear 503 and `/readyz` says so;
/// the instances recover by themselves when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_limits_and_revocations_hold_across_two_instances() {
    let database = TestDatabase::postgres().await;
    let DatabaseUrl::Postgres(url) = &database.url else {
        unreachable!("a PostgreSQL test database");
    };
    let mut redis = nb_redis::testing::EphemeralRedis::start();
    let google = google_answering_images().await;
    let client = reqwest::Client::new();
    let settings = [("NB_REDIS_URL", redis.url.as_str())];
    let first = start_with(url, &google, &settings).await;
    let second = start_with(url, &google, &settings).await;
    let (status, body) = ready(&client, &first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"], "ok");

    let ada = signed_up(&client, &first, "ada@example.com").await;
    let per_minute =
        created_key(&client, &first, &ada, json!({"limits": {"per_minute": 30}})).await;
    exactly_30_of_100_pass(&client, &first, &second, &per_minute).await;
    // Counted in Redis: PostgreSQL's table holds nothing.
    assert_eq!(database.rows_in("rate_limits").await, 0);

    // A key revoked through the first instance, cached by the second: published on Redis
    // (PostgreSQL announces nothing when Redis is configured).
    let took = revocation_propagation(&client, &first, &second, &ada).await;
    eprintln!("a revocation reached the other instance over Redis in {took:?}");

    // Redis down: generations are refused with a clear 503 (never let through uncounted),
    // and /readyz says which check failed.
    let unlimited = created_key(&client, &first, &ada, json!({})).await;
    assert_eq!(generate(&client, &second, &unlimited).await.status(), 200);
    redis.kill();
    // What this instance leased of the allowance before is its own for up to a second
    // (counted in Redis when it was taken: never more than the allowance); then nothing is
    // let through uncounted.
    tokio::time::sleep(nb_domain::rate_limit::LEASE_LIFETIME + Duration::from_millis(100)).await;
    let response = generate(&client, &second, &unlimited).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        code(response).await,
        (503, "rate_limiter_unavailable".to_owned())
    );
    let (status, body) = ready(&client, &first).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["redis"], "unreachable");
    assert_eq!(body["checks"]["database"], "ok");

    // Back on the same port: both instances recover by themselves.
    let _redis = nb_redis::testing::EphemeralRedis::start_on(redis.port);
    for instance in [&first, &second] {
        eventually_true(
            "an instance recovers when Redis comes back",
            Duration::from_secs(10),
            POLL,
            || async { generate(&client, instance, &unlimited).await.status() == 200 },
        )
        .await;
        assert_eq!(ready(&client, instance).await.0, 200);
    }
    drop((first, second));
}

/// Jobs outlive their instance: the first instance takes four jobs and is killed (`kill -9`)
/// while Google is still answering them; the second takes each again once its lease has run
/// out and runs it to `succeeded`. Every image is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_held_by_a_killed_instance_are_finished_by_another() {
    let database = TestDatabase::postgres().await;
    let DatabaseUrl::Postgres(url) = &database.url else {
        unreachable!("a PostgreSQL test database");
    };
    let google = MockServer::start().await;
    let answer = json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}]}, "finishReason": "STOP"}]});
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(answer)
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&google)
        .await;
    let client = reqwest::Client::new();
    let settings = [
        ("NB_JOB_WORKERS", "4"),
        ("NB_JOB_LEASE_SECONDS", "3"),
        ("NB_JOB_POLL_INTERVAL_MS", "100"),
        (
            "NB_ENCRYPTION_KEY",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ),
        ("NB_WEBHOOK_ALLOW_HTTP", "true"),
        ("NB_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
    ];
    let first = start_with(url, &google, &settings).await;
    let ada = signed_up(&client, &first, "ada@example.com").await;
    let key = created_key(&client, &first, &ada, json!({"limits": {"per_day": 10}})).await;
    // Every event goes to a receiver, signed with the secret both instances can open.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let webhook: Value = client
        .post(format!("{}/v1/webhooks", first.base))
        .bearer_auth(&ada)
        .json(&json!({"url": receiver.uri(), "events": ["generation.succeeded"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let response = client
            .post(format!("{}/v1/generate", first.base))
            .bearer_auth(&key)
            .header("prefer", "respond-async")
            .json(&json!({"prompt": "a banana"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let status_of = |base: String, id: String| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let body: Value = client
                .get(format!("{base}/v1/generations/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["status"].as_str().unwrap().to_owned()
        }
    };
    // Every job is running on the first instance (Google takes 3 s to answer).
    eventually_true(
        "the first instance runs every job",
        Duration::from_secs(10),
        POLL,
        || async {
            let mut running = 0;
            for id in &ids {
                running +=
                    usize::from(status_of(first.base.clone(), id.clone()).await == "running");
            }
            running == ids.len()
        },
    )
    .await;
    let first_base = first.base.clone();
    drop(first); // SIGKILL: nothing is finished or released.
    assert!(
        client
            .get(format!("{first_base}/healthz"))
            .send()
            .await
            .is_err()
    );

    let second = start_with(url, &google, &settings).await;
    eventually_true(
        "the second instance finishes every job",
        Duration::from_secs(30),
        POLL,
        || async {
            for id in &ids {
                if status_of(second.base.clone(), id.clone()).await != "succeeded" {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let usage: Value = client
        .get(format!("{}/v1/usage", second.base))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let counted: u64 = usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 4, "{usage}");
    // Each job was reserved once and settled once: the day's quota of 10 holds 6 more.
    let requests = (0..7).map(|_| {
        let (client, key, second) = (client.clone(), key.clone(), &second);
        async move { code(generate(&client, second, &key).await).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let succeeded = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(succeeded, 6, "{answers:?}");
    assert!(
        answers.contains(&(429, "quota_exceeded".to_owned())),
        "{answers:?}"
    );
    assert_eq!(database.rows_in("generation_jobs").await, 0);
    // Each job's event was delivered (at least once), verifiable, under one webhook-id (the
    // synchronous generations above have events too: they are not the jobs').
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    let delivered = || async {
        let mut events: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for request in receiver.received_requests().await.unwrap() {
            verifier.verify(&request.body, &request.headers).unwrap();
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let generation = body["data"]["id"].as_str().unwrap();
            if !ids.iter().any(|job| job == generation) {
                continue;
            }
            events
                .entry(request.headers["webhook-id"].to_str().unwrap().to_owned())
                .or_default()
                .push(body);
        }
        events
    };
    eventually_true(
        "every job's event is delivered",
        Duration::from_secs(10),
        POLL,
        || async { delivered().await.len() == 4 },
    )
    .await;
    for (webhook_id, bodies) in delivered().await {
        assert!(bodies.iter().all(|body| *body == bodies[0]), "{webhook_id}");
        assert_eq!(bodies[0]["data"]["status"], "succeeded");
    }
    drop(second);
}
