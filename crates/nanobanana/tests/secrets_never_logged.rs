//! No password, access token or full API key appears in the logs, at the most verbose level
//! of every crate (ours, actix, diesel, tokio-postgres through the `log` bridge), during the
//! whole account-and-key flow, on both backends.
//!
//! This file is its own test binary because it installs the process-wide log subscriber.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::{
    API_KEY_PROBE, Backend, GOOGLE_KEY, PASSWORD, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY,
    TEST_JWT_SECRET, TestApp, s3_settings,
};
use serde_json::json;
use wiremock::matchers::body_string_contains;
use wiremock::{Mock, ResponseTemplate};

const NEW_PASSWORD: &str = "a changed password of mine";
const REDIS_PASSWORD: &str = "redis-password-never-logged";

#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn capture_everything() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(logs.clone())
            .with_ansi(false)
            .init();
        logs
    })
}

const SECOND_GOOGLE_KEY: &str = "AIzaSy-second-pooled-google-key-111";
const VERTEX_ACCESS_TOKEN: &str = "ya29.a-vertex-access-token-never-logged";
const SERVICE_ACCOUNT: &str = include_str!("fixtures/vertex-test-service-account.json");

/// A line of the test service account's private key (base64 of the key itself).
fn service_account_key_body() -> &'static str {
    let key: &'static serde_json::Value =
        Box::leak(Box::new(serde_json::from_str(SERVICE_ACCOUNT).unwrap()));
    key["private_key"].as_str().unwrap().lines().nth(2).unwrap()
}

async fn run_flow_and_check_logs(backend: Backend) {
    let logs = capture_everything();
    let s3 =
        nb_storage::testing::S3TestServer::start(S3_ACCESS_KEY, S3_SECRET_KEY, &[S3_BUCKET]).await;
    let settings = s3_settings(&s3);
    let mut redis = nb_redis::testing::EphemeralRedis::start_with_password(REDIS_PASSWORD);
    let redis_url = nb_redis::RedisUrl::try_from(redis.url.clone()).unwrap();
    // Vertex AI: a token endpoint and Vertex's generateContent, with the test service account.
    let vertex = wiremock::MockServer::start().await;
    Mock::given(wiremock::matchers::path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": VERTEX_ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
        ))
        .mount(&vertex)
        .await;
    Mock::given(wiremock::matchers::path_regex(":generateContent$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(helpers::gemini_image_answer()))
        .mount(&vertex)
        .await;
    let mut service_account: serde_json::Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
    service_account["token_uri"] = json!(format!("{}/token", vertex.uri()));
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), service_account.to_string()).unwrap();
    let key_path = key_file.path().to_owned();
    let vertex_base = vertex.uri();
    let app = TestApp::spawn_with(backend, |config| {
        config.vertex = nb_imagen::VertexSettings {
            project: Some("test-project".into()),
            location: "global".into(),
            credentials_file: Some(key_path),
            base_url: Some(vertex_base),
        };
        config.models.enabled.0.push("pro@vertex".into());
        config
            .models
            .model
            .push(nanobanana::config::catalog_file::ModelEntry {
                id: "pro@vertex".into(),
                aliases: None,
                api: None,
                aspect_ratios: Some(vec!["1:1".into()]),
                resolutions: Some(vec!["1K".into()]),
                max_input_images: Some(14),
                retired_at: None,
                replaced_by: None,
                fallbacks: None,
                provider: Some("vertex".into()),
                google_model: Some("gemini-3-pro-image".into()),
                price: None,
            });
        crate::helpers::store_in_s3(config, settings);
        config.redis.url = Some(redis_url);
        config.webhooks.allow_http = true;
        config.webhooks.allow_private_targets = true;
        // A pool of two Google keys: the refused prompt takes the first out of the pool.
        config.upstream.api_key = None;
        config.upstream.api_keys = Some(nb_imagen::GoogleApiKeys::new(format!(
            "{GOOGLE_KEY},{SECOND_GOOGLE_KEY}"
        )));
    })
    .await;
    // Google refuses one prompt with an error, so the error paths log too.
    Mock::given(body_string_contains("refuse me"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "denied"}}),
        ))
        .mount(&app.google)
        .await;
    let email = format!("{backend:?}@example.com").to_lowercase();

    let register = app.register(&email, PASSWORD).await;
    assert_eq!(register.status(), 201);
    let login: serde_json::Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.login(&email, "a wrong password").await.status(), 401);
    // A browser session: the token travels in a cookie.
    let browser = app
        .client
        .post(app.url("/v1/auth/login?session=cookie"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 200);
    let session_cookie = browser
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| {
            value
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned()
        })
        .find(|pair| pair.starts_with("nb_session="))
        .unwrap();
    let me = app
        .client
        .get(app.url("/v1/auth/me"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let cookie_token = session_cookie["nb_session=".len()..].to_owned();
    assert_eq!(app.get_with("/v1/auth/me", &token).await.status(), 200);
    let (key_id, key) = app.created_key(&token).await;
    // Two images from Vertex AI (one token, from the service account).
    for _ in 0..2 {
        let made = app
            .generate(&key, &json!({"prompt": "on vertex", "model": "pro@vertex"}))
            .await;
        assert_eq!(made.status(), 200);
    }
    // A webhook endpoint, its secret rotated, and an event signed with both secrets.
    let receiver = wiremock::MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let webhook: serde_json::Value = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": receiver.uri()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let webhook_secret = webhook["secret"].as_str().unwrap().to_owned();
    let rotated: serde_json::Value = app
        .client
        .post(app.url(&format!(
            "/v1/webhooks/{}/rotate",
            webhook["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rotated_secret = rotated["secret"].as_str().unwrap().to_owned();
    let event = app.generate(&key, &json!({"prompt": "an event"})).await;
    assert_eq!(event.status(), 200);
    nb_testkit::eventually_true(
        "the event is delivered",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        || async { !receiver.received_requests().await.unwrap().is_empty() },
    )
    .await;
    assert_eq!(app.get_with(API_KEY_PROBE, &key).await.status(), 200);
    let request_id = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let generated = app
        .client
        .post(app.url("/v1/generate"))
        .bearer_auth(&key)
        .header("x-request-id", &request_id)
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.status(), 200);
    assert_eq!(generated.headers()["x-request-id"], request_id.as_str());
    let generated: serde_json::Value = generated.json().await.unwrap();
    assert_eq!(
        app.client
            .get(generated["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.generate(&key, &json!({"prompt": "refuse me"}))
            .await
            .status(),
        502
    );
    // The store drops the upload's connection: the failure is logged, and its presigned upload
    // URL (a credential for that object) must not be.
    s3.set_fault(nb_storage::testing::StoreFault::CloseConnections);
    assert_eq!(
        app.generate(&key, &json!({"prompt": "a plum"}))
            .await
            .status(),
        503
    );
    s3.set_fault(nb_storage::testing::StoreFault::None);
    assert_eq!(app.get_with("/v1/usage", &token).await.status(), 200);
    // A key with limits, changed, used, and rolled: the new key is in the answer only.
    let limited: serde_json::Value = app
        .create_key(
            &token,
            Some(json!({"name": "ci", "limits": {"per_day": 5}})),
        )
        .await
        .json()
        .await
        .unwrap();
    let limited_key = limited["key"].as_str().unwrap().to_owned();
    let limited_path = format!("/v1/keys/{}", limited["id"].as_str().unwrap());
    let patched = app
        .client
        .patch(app.url(&limited_path))
        .bearer_auth(&token)
        .json(&json!({"limits": {"per_day": 4}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(
        app.generate(&limited_key, &json!({"prompt": "a pear"}))
            .await
            .status(),
        200
    );
    let rolled: serde_json::Value = app
        .client
        .post(app.url(&format!("{limited_path}/roll")))
        .bearer_auth(&token)
        .json(&json!({"grace_seconds": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rolled_key = rolled["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.generate(&rolled_key, &json!({"prompt": "a fig"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.generate(&limited_key, &json!({"prompt": "a fig"}))
            .await
            .status(),
        401
    );
    // The operator lists the accounts and their keys, and caps this one.
    let admin = app.signed_up(helpers::ADMIN_EMAIL).await;
    assert_eq!(app.get_with("/v1/admin/users", &admin).await.status(), 200);
    let me: serde_json::Value = app
        .get_with("/v1/auth/me", &token)
        .await
        .json()
        .await
        .unwrap();
    let user_id = me["id"].as_str().unwrap();
    let keys_path = format!("/v1/admin/users/{user_id}/keys");
    assert_eq!(app.get_with(&keys_path, &admin).await.status(), 200);
    let capped = app
        .client
        .patch(app.url(&format!("/v1/admin/users/{user_id}")))
        .bearer_auth(&admin)
        .json(&json!({"limits": {"per_month": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(capped.status(), 200);
    assert_eq!(app.get_with("/v1/admin/audit", &admin).await.status(), 200);
    let listing_id = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let listing = app
        .client
        .get(app.url("/v1/keys"))
        .bearer_auth(&token)
        .header("x-request-id", &listing_id)
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    assert_eq!(
        app.delete_with(&format!("/v1/keys/{key_id}"), &token)
            .await
            .status(),
        204
    );
    assert_eq!(app.get_with(API_KEY_PROBE, &key).await.status(), 401);
    assert_eq!(app.get_with(API_KEY_PROBE, &token).await.status(), 401);
    assert_eq!(app.get_with("/v1/auth/me", &key).await.status(), 401);
    // A password change (with a wrong, then the right current password) and a logout.
    let change = |current: &'static str| {
        app.client
            .post(app.url("/v1/auth/password"))
            .bearer_auth(&token)
            .json(&json!({"current_password": current, "new_password": NEW_PASSWORD}))
            .send()
    };
    assert_eq!(change("a wrong password").await.unwrap().status(), 422);
    let changed: serde_json::Value = change(PASSWORD).await.unwrap().json().await.unwrap();
    let new_token = changed["access_token"].as_str().unwrap().to_owned();
    let logout = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    // A test key's idempotent generation, then the account's deletion (with a wrong, then
    // the right password).
    let last: serde_json::Value = app.login(&email, NEW_PASSWORD).await.json().await.unwrap();
    let last_token = last["access_token"].as_str().unwrap().to_owned();
    let created: serde_json::Value = app
        .create_key(&last_token, Some(json!({"name": "ci", "mode": "test"})))
        .await
        .json()
        .await
        .unwrap();
    let test_key = created["key"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/v1/generate"))
            .bearer_auth(&test_key)
            .header("Idempotency-Key", "secrets-1")
            .json(&json!({"prompt": "a banana"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let erase = |password: &'static str| {
        app.client
            .delete(app.url("/v1/auth/me"))
            .bearer_auth(&last_token)
            .json(&json!({ "password": password }))
            .send()
    };
    assert_eq!(erase("a wrong password").await.unwrap().status(), 422);
    assert_eq!(erase(NEW_PASSWORD).await.unwrap().status(), 204);
    // Redis gone: sign-in attempts cannot be counted, and the failure is logged.
    redis.kill();
    // Once what this instance leased of the allowance has expired.
    tokio::time::sleep(
        nb_domain::rate_limit::LEASE_LIFETIME + std::time::Duration::from_millis(100),
    )
    .await;
    assert_eq!(app.login(&email, NEW_PASSWORD).await.status(), 503);

    let text = logs.text();
    // Every line written while serving that request carries its id: the access line, the
    // domain's, the storage adapter's (its HTTP client's lines inside the `put` span) and, on
    // PostgreSQL, the driver's inside the database task (spawned tasks keep the span).
    let tagged: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&request_id))
        .collect();
    for expected in ["request completed", "generation succeeded", "put{"] {
        assert!(
            tagged.iter().any(|line| line.contains(expected)),
            "no {expected} line carries the request id"
        );
    }
    // A query's lines carry the id of the request that made it, from inside the database
    // task (PostgreSQL's driver logs each statement). Successes are the exception: they are
    // committed in batches shared by many requests.
    if matches!(backend, Backend::Postgres) {
        let query_lines = text
            .lines()
            .filter(|line| line.contains(&listing_id) && line.contains("list_api_keys"))
            .count();
        assert!(query_lines > 0, "no database line carries the request id");
    }
    // The capture is live: the flow's requests and queries were logged.
    assert!(text.contains("/v1/keys"), "no request was logged");
    assert!(
        text.contains("generation succeeded"),
        "the generation was not logged"
    );
    assert!(
        text.contains("rate_limiter_unavailable"),
        "the Redis failure was not logged"
    );
    assert!(
        text.contains("upstream_auth_failed"),
        "the upstream failure was not logged"
    );
    assert!(
        text.contains("storage_unavailable"),
        "the storage failure was not logged"
    );
    // Presigned upload URLs carry a signature good for writing that object. (The test's S3
    // server, in this process, logs the requests it receives: its lines are not ours.)
    let presigned: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("X-Amz-Signature") && !line.contains("s3s"))
        .take(3)
        .collect();
    assert!(
        presigned.is_empty(),
        "a presigned URL appears in the logs: {presigned:#?}"
    );
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "verbose levels were not captured"
    );
    for (what, secret) in [
        ("password", PASSWORD),
        ("wrong password", "a wrong password"),
        ("new password", NEW_PASSWORD),
        ("access token", token.as_str()),
        ("new access token", new_token.as_str()),
        ("last access token", last_token.as_str()),
        ("test API key", test_key.as_str()),
        ("test API key's secret part", &test_key[12..]),
        ("access token signature", token.rsplit('.').next().unwrap()),
        ("API key", key.as_str()),
        ("API key's secret part", &key[12..]),
        ("limited API key", limited_key.as_str()),
        ("rolled API key", rolled_key.as_str()),
        ("rolled API key's secret part", &rolled_key[12..]),
        ("admin's access token", admin.as_str()),
        ("JWT secret", TEST_JWT_SECRET),
        ("Google API key", GOOGLE_KEY),
        ("second Google API key", SECOND_GOOGLE_KEY),
        ("Vertex AI access token", VERTEX_ACCESS_TOKEN),
        ("service account private key", service_account_key_body()),
        ("R2/S3 secret key", S3_SECRET_KEY),
        ("Redis password", REDIS_PASSWORD),
        ("browser session's token", cookie_token.as_str()),
        ("webhook secret", webhook_secret.as_str()),
        ("webhook secret's bytes", &webhook_secret["whsec_".len()..]),
        ("rotated webhook secret", rotated_secret.as_str()),
        (
            "rotated webhook secret's bytes",
            &rotated_secret["whsec_".len()..],
        ),
        (
            "encryption key",
            &hex::encode(b"an encryption key for tests only"),
        ),
        ("encryption key (text)", "an encryption key for tests only"),
    ] {
        assert!(!text.contains(secret), "the {what} appears in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_logged_on_postgres() {
    run_flow_and_check_logs(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_logged_on_sqlite() {
    run_flow_and_check_logs(Backend::Sqlite).await;
}
