//! Safe retries and a record: test-mode keys, `Idempotency-Key`, the history of generations
//! and its deletion (local disk and S3), the orphan sweep, and usage reports.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    Backend, MODEL, PASSWORD, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, TestApp, assert_error,
    gemini_image_answer, png_bytes, s3_settings,
};

const REPLAYED: &str = "idempotent-replayed";

/// A new key of `mode` for the signed-in user: `(id, full key)`.
async fn key_of_mode(app: &TestApp, token: &str, mode: &str) -> (String, String) {
    let response = app
        .create_key(token, Some(json!({"name": mode, "mode": mode})))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["mode"], mode);
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

/// `POST /v1/generate` with an `Idempotency-Key`.
async fn generate_once(app: &TestApp, key: &str, idempotency_key: &str, body: &str) -> Response {
    let response = app
        .client
        .post(app.url("/v1/generate"))
        .bearer_auth(key)
        .header("Idempotency-Key", idempotency_key)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    Response::read(response).await
}

/// What a test looks at in an answer.
struct Response {
    status: u16,
    replayed: bool,
    body: Value,
    raw: Vec<u8>,
}

impl Response {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get(REPLAYED)
            .is_some_and(|value| value == "true");
        let raw = response.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Self {
            status,
            replayed,
            body,
            raw,
        }
    }
}

/// A PNG's width and height, from its header.
fn png_dimensions(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (width, height)
}

async fn fetched(app: &TestApp, url: &str) -> Vec<u8> {
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.bytes().await.unwrap().to_vec()
}

// ---- Test-mode keys ----

async fn test_keys_make_deterministic_images_without_google(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (_, test_key) = key_of_mode(&app, &token, "test").await;
    assert!(test_key.starts_with("nb_test_"), "{test_key}");
    assert_eq!(test_key.len(), "nb_test_".len() + 32);
    assert!(
        test_key["nb_test_".len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit())
    );

    let wide = json!({"prompt": "a banana on a desk", "size": "1536x1024"});
    let first = app.generated(&test_key, &wide).await;
    let second = app.generated(&test_key, &wide).await;
    assert_ne!(first["id"], second["id"]);
    let first_image = fetched(&app, first["url"].as_str().unwrap()).await;
    let second_image = fetched(&app, second["url"].as_str().unwrap()).await;
    assert_eq!(
        first_image, second_image,
        "the same request, the same bytes"
    );
    let (width, height) = png_dimensions(&first_image);
    assert_eq!(width, 128);
    assert!(
        (84..=86).contains(&height),
        "3:2 makes 128x85, got {height}"
    );

    let tall = app
        .generated(
            &test_key,
            &json!({"prompt": "a banana on a desk", "size": "1024x1536"}),
        )
        .await;
    let tall_image = fetched(&app, tall["url"].as_str().unwrap()).await;
    let (width, height) = png_dimensions(&tall_image);
    assert!(width < height, "{width}x{height}");
    let other = app
        .generated(
            &test_key,
            &json!({"prompt": "two bananas", "size": "1536x1024"}),
        )
        .await;
    assert_ne!(
        fetched(&app, other["url"].as_str().unwrap()).await,
        first_image
    );

    // The server has no GOOGLE_API_KEY: live keys cannot generate, and nothing reached Google.
    let (_, live_key) = key_of_mode(&app, &token, "live").await;
    assert_error(
        app.generate(&live_key, &json!({"prompt": "a banana"}))
            .await,
        503,
        "generation_not_configured",
    )
    .await;
    assert_eq!(app.google_requests().await, 0);

    // Test generations are in the history and the usage, marked as such.
    let listed = app.get_with("/v1/generations?mode=test", &token).await;
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["generations"].as_array().unwrap().len(), 4);
    assert!(
        listed["generations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|generation| generation["mode"] == "test")
    );
    let usage = app.get_with("/v1/usage?group_by=mode", &token).await;
    let usage: Value = usage.json().await.unwrap();
    // Test-mode images cost nothing.
    assert_eq!(
        usage["usage"],
        json!([{"mode": "test", "count": 4, "cost_usd": "0.000000"}])
    );
}

async fn magic_prompts_give_every_failure(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (_, test_key) = key_of_mode(&app, &token, "test").await;
    for (marker, status, code, retry_after) in [
        ("nb-test:content_rejected", 422, "content_rejected", None),
        ("nb-test:upstream_busy", 503, "upstream_busy", Some("5")),
        (
            "nb-test:upstream_rate_limited",
            503,
            "upstream_rate_limited",
            Some("30"),
        ),
        ("nb-test:upstream_failed", 502, "upstream_failed", None),
        ("nb-test:upstream_timeout", 504, "upstream_timeout", None),
        ("nb-test:model_unavailable", 502, "model_unavailable", None),
    ] {
        let response = app
            .generate(&test_key, &json!({"prompt": format!("a banana {marker}")}))
            .await;
        let header = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), retry_after, "{marker}");
        assert_error(response, status, code).await;
    }
    // The OpenAI-compatible route renders the same failures its own way.
    let response = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&test_key)
        .json(&json!({"prompt": "nb-test:content_rejected"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_policy_violation");
    assert_eq!(app.google_requests().await, 0);
}

// ---- Idempotency-Key ----

async fn a_repeat_is_replayed_without_a_second_image(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let body = r#"{"prompt": "a banana", "size": "1024x1024"}"#;
    let first = generate_once(&app, &key, "order-1", body).await;
    assert_eq!(first.status, 200);
    assert!(!first.replayed);
    let again = generate_once(&app, &key, "order-1", body).await;
    assert_eq!(again.status, 200);
    assert!(again.replayed);
    assert_eq!(again.raw, first.raw, "the same id and url");
    // Another encoding of the same request (key order, whitespace) is the same request.
    let reordered = generate_once(
        &app,
        &key,
        "order-1",
        r#"{"size":"1024x1024","prompt":"a banana"}"#,
    )
    .await;
    assert!(reordered.replayed);
    assert_eq!(reordered.body["id"], first.body["id"]);
    assert_eq!(app.google_requests().await, 1);
    let usage = app.usage(&token).await;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["count"], 1);
    let listed: Value = app
        .get_with("/v1/generations", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["generations"].as_array().unwrap().len(), 1);

    // The same key for another request is refused.
    let other = generate_once(&app, &key, "order-1", r#"{"prompt": "a cherry"}"#).await;
    assert_eq!(other.status, 422);
    assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
    // Keys are scoped to the API key: another key's "order-1" is its own.
    let (_, other_key) = app.created_key(&token).await;
    let elsewhere = generate_once(&app, &other_key, "order-1", body).await;
    assert_eq!(elsewhere.status, 200);
    assert!(!elsewhere.replayed);
    assert_ne!(elsewhere.body["id"], first.body["id"]);
    assert_eq!(app.google_requests().await, 2);
}

async fn refused_and_failed_requests_are_not_kept_but_rejections_are(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (_, key) = key_of_mode(&app, &token, "test").await;
    // A malformed Idempotency-Key.
    let long = "k".repeat(256);
    let response = generate_once(&app, &key, &long, r#"{"prompt": "a banana"}"#).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["error"]["code"], "invalid_idempotency_key");
    // A request refused by validation keeps nothing: the key is free for the right request.
    let invalid = generate_once(&app, &key, "v-1", r#"{"prompt": "x", "size": "13x7"}"#).await;
    assert_eq!(invalid.status, 422);
    let valid = generate_once(&app, &key, "v-1", r#"{"prompt": "a banana"}"#).await;
    assert_eq!(valid.status, 200);
    assert!(!valid.replayed);
    // An upstream failure (5xx) keeps nothing: a retry runs again.
    let failing = r#"{"prompt": "a banana nb-test:upstream_failed"}"#;
    let failed = generate_once(&app, &key, "f-1", failing).await;
    assert_eq!(failed.status, 502);
    let retried = generate_once(&app, &key, "f-1", failing).await;
    assert_eq!(retried.status, 502);
    assert!(!retried.replayed, "a 5xx must not be replayed");
    // A content rejection is kept: the same request would be refused again.
    let rejected_body = r#"{"prompt": "a banana nb-test:content_rejected"}"#;
    let rejected = generate_once(&app, &key, "c-1", rejected_body).await;
    assert_eq!(rejected.status, 422);
    assert_eq!(rejected.body["error"]["code"], "content_rejected");
    let replayed = generate_once(&app, &key, "c-1", rejected_body).await;
    assert_eq!(replayed.status, 422);
    assert!(replayed.replayed);
    assert_eq!(replayed.raw, rejected.raw);
    let history: Value = app
        .get_with("/v1/generations?status=failed", &token)
        .await
        .json()
        .await
        .unwrap();
    // Two upstream failures and one rejection ran; the replay made no record.
    assert_eq!(history["generations"].as_array().unwrap().len(), 3);
}

async fn concurrent_repeats_make_one_upstream_call(app: TestApp) {
    Mock::given(method("POST"))
        .and(path_regex(r":generateContent$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(gemini_image_answer())
                .set_delay(Duration::from_millis(1_500)),
        )
        .with_priority(1)
        .mount(&app.google)
        .await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    let body = r#"{"prompt": "a banana"}"#;
    let answers = join_all((0..20).map(|_| generate_once(&app, &key, "burst", body))).await;
    let succeeded: Vec<&Response> = answers.iter().filter(|a| a.status == 200).collect();
    let in_progress = answers.iter().filter(|a| a.status == 409).count();
    assert!(!succeeded.is_empty());
    assert_eq!(succeeded.len() + in_progress, 20, "only 200s and 409s");
    for answer in answers.iter().filter(|a| a.status == 409) {
        assert_eq!(answer.body["error"]["code"], "idempotency_in_progress");
    }
    assert_eq!(app.google_requests().await, 1);
    let after = generate_once(&app, &key, "burst", body).await;
    assert!(after.replayed);
    assert_eq!(after.body["id"], succeeded[0].body["id"]);
    assert_eq!(app.usage(&token).await[0]["count"], 1);
}

async fn a_request_whose_client_gave_up_finishes_and_is_replayed(app: TestApp) {
    Mock::given(method("POST"))
        .and(path_regex(r":generateContent$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(gemini_image_answer())
                .set_delay(Duration::from_millis(1_000)),
        )
        .with_priority(1)
        .mount(&app.google)
        .await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let sent = impatient
        .post(app.url("/v1/generate"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "impatient")
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await;
    assert!(sent.unwrap_err().is_timeout());
    // The client is gone; the image is still made, recorded and kept for the retry, which
    // is told to come back (409) while the first request is still running.
    let retried = nb_testkit::eventually(
        "the abandoned request's answer is kept",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let retried = generate_once(&app, &key, "impatient", r#"{"prompt": "a banana"}"#).await;
            (retried.status != 409).then_some(retried)
        },
    )
    .await;
    assert_eq!(retried.status, 200);
    assert!(retried.replayed, "the retry made a second image");
    assert_eq!(app.google_requests().await, 1);
    assert_eq!(app.usage(&token).await[0]["count"], 1);
}

async fn kept_answers_expire(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let body = r#"{"prompt": "a banana"}"#;
    let first = generate_once(&app, &key, "daily", body).await;
    assert_eq!(first.status, 200);
    app.clock
        .set(time::OffsetDateTime::now_utc() + time::Duration::hours(25));
    let later = generate_once(&app, &key, "daily", body).await;
    assert_eq!(later.status, 200);
    assert!(!later.replayed, "kept for 24 hours only");
    assert_ne!(later.body["id"], first.body["id"]);
}

fn form(boundary: &str, prompt: &str, image: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n{prompt}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(image);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

async fn the_openai_routes_replay_too(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let generate = |idempotency_key: &'static str, body: Value| {
        let request = app
            .client
            .post(app.url("/v1/images/generations"))
            .bearer_auth(&key)
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        async move { Response::read(request.send().await.unwrap()).await }
    };
    // A key of the shape SDK-generated keys have (Stainless clients: `stainless-…-retry-<uuid>`).
    let sdk_key = "stainless-python-retry-0b9d4c1e-7f52-4c6f-9f0e-1d2c3b4a5e6f";
    let first = generate(sdk_key, json!({"prompt": "a banana", "n": 2})).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["data"].as_array().unwrap().len(), 2);
    let again = generate(sdk_key, json!({"prompt": "a banana", "n": 2})).await;
    assert!(again.replayed);
    assert_eq!(again.raw, first.raw);
    assert_eq!(app.google_requests().await, 2);
    // OpenAI's surface answers every invalid request with 400 (the SDKs' BadRequestError).
    let reused = generate(sdk_key, json!({"prompt": "a banana", "n": 1})).await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    assert_eq!(reused.body["error"]["type"], "invalid_request_error");

    // An SDK builds a new multipart body (a new boundary) for each retry: still the same
    // request.
    let edit = |boundary: &'static str, prompt: &'static str| {
        let request = app
            .client
            .post(app.url("/v1/images/edits"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "edit-1")
            .header(
                CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(form(boundary, prompt, &png_bytes()));
        async move { Response::read(request.send().await.unwrap()).await }
    };
    let edited = edit("boundary-one", "make it yellow").await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    let retried = edit("another-boundary-2", "make it yellow").await;
    assert!(retried.replayed);
    assert_eq!(retried.raw, edited.raw);
    let changed = edit("boundary-three", "make it green").await;
    assert_eq!(changed.status, 400);
    assert_eq!(changed.body["error"]["code"], "idempotency_key_reused");
    assert_eq!(app.google_requests().await, 3);
}

// ---- History and deletion ----

async fn history_pages_and_scopes(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (first_key_id, first_key) = key_of_mode(&app, &token, "live").await;
    let (_, second_key) = key_of_mode(&app, &token, "live").await;
    let mut made = Vec::new();
    for n in 0..3 {
        let body = app
            .generated(&first_key, &json!({"prompt": format!("banana {n}")}))
            .await;
        made.push(body["id"].as_str().unwrap().to_owned());
    }
    let from_second = app
        .generated(
            &second_key,
            &json!({"prompt": "cherry", "model": "gemini-3-pro-image"}),
        )
        .await;
    made.push(from_second["id"].as_str().unwrap().to_owned());

    // Newest first, two at a time, with the account's token.
    let page: Value = app
        .get_with("/v1/generations?limit=2", &token)
        .await
        .json()
        .await
        .unwrap();
    let ids = |page: &Value| -> Vec<String> {
        page["generations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page), [made[3].clone(), made[2].clone()]);
    let newest = &page["generations"][0];
    assert_eq!(newest["prompt"], "cherry");
    assert_eq!(newest["model"], "gemini-3-pro-image");
    assert_eq!(newest["status"], "succeeded");
    assert_eq!(newest["mime_type"], "image/png");
    assert!(newest["url"].as_str().unwrap().contains("/images/"));
    // A generation made meanwhile does not shift the next page.
    app.generated(&first_key, &json!({"prompt": "late"})).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = app
        .get_with(&format!("/v1/generations?limit=2&cursor={cursor}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&next), [made[1].clone(), made[0].clone()]);
    assert_eq!(next["next_cursor"], Value::Null);

    // An API key sees its own only, whatever it asks.
    let own: Value = app
        .get_with(
            &format!("/v1/generations?key_id={first_key_id}"),
            &second_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(own["generations"].as_array().unwrap().is_empty());
    let own: Value = app
        .get_with("/v1/generations", &second_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&own), [made[3].clone()]);
    let path = format!("/v1/generations/{}", made[0]);
    assert_error(
        app.get_with(&path, &second_key).await,
        404,
        "generation_not_found",
    )
    .await;
    let one: Value = app.get_with(&path, &first_key).await.json().await.unwrap();
    assert_eq!(one["id"], made[0]);
    assert_eq!(one["key_id"], first_key_id);

    // Filters.
    let by_key: Value = app
        .get_with(&format!("/v1/generations?key_id={first_key_id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_key["generations"].as_array().unwrap().len(), 4);
    let today = time::OffsetDateTime::now_utc().date();
    let today_only: Value = app
        .get_with(&format!("/v1/generations?from={today}&to={today}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(today_only["generations"].as_array().unwrap().len(), 5);
    let before: Value = app
        .get_with(
            &format!("/v1/generations?to={}", today.previous_day().unwrap()),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(before["generations"].as_array().unwrap().is_empty());
    for (query, field) in [
        ("status=done", "status"),
        ("mode=sandbox", "mode"),
        ("from=yesterday", "from"),
        ("key_id=nope", "key_id"),
        ("limit=0", "limit"),
    ] {
        let body = assert_error(
            app.get_with(&format!("/v1/generations?{query}"), &token)
                .await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    for missing in ["gen_nope", "0190d6f0-0000-7000-8000-000000000000"] {
        assert_error(
            app.get_with(&format!("/v1/generations/{missing}"), &token)
                .await,
            404,
            "generation_not_found",
        )
        .await;
    }
    assert_error(
        app.client
            .get(app.url("/v1/generations"))
            .send()
            .await
            .unwrap(),
        401,
        "missing_credentials",
    )
    .await;
}

async fn deleting_a_generation_removes_its_image_and_keeps_the_record(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let made = app.generated(&key, &json!({"prompt": "a banana"})).await;
    let id = made["id"].as_str().unwrap();
    let url = made["url"].as_str().unwrap();
    assert_eq!(fetched(&app, url).await, png_bytes());
    let path = format!("/v1/generations/{id}");

    // Not someone else's to delete.
    let (_, bobs_key) = app.user_with_key("bob@example.com").await;
    assert_error(
        app.delete_with(&path, &bobs_key).await,
        404,
        "generation_not_found",
    )
    .await;
    assert_eq!(fetched(&app, url).await, png_bytes());

    let deleted = app.delete_with(&path, &key).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.client.get(url).send().await.unwrap().status(), 404);
    let record: Value = app.get_with(&path, &token).await.json().await.unwrap();
    assert_eq!(record["status"], "deleted");
    assert_eq!(record["url"], Value::Null);
    assert!(record["deleted_at"].is_string());
    assert_eq!(record["prompt"], "a banana");
    // Repeatable, and the usage stays.
    assert_eq!(app.delete_with(&path, &token).await.status(), 204);
    assert_eq!(app.usage(&token).await[0]["count"], 1);
    let deleted_only: Value = app
        .get_with("/v1/generations?status=deleted", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deleted_only["generations"].as_array().unwrap().len(), 1);
}

async fn orphaned_local_images_are_swept(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let made = app
        .generated(
            &key,
            &json!({"prompt": "a banana", "images": [base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png_bytes())]}),
        )
        .await;
    let id = made["id"].as_str().unwrap();
    let url = made["url"].as_str().unwrap().to_owned();
    // An image no generation names, as a crash between storing and recording leaves.
    let relative = url.split_once("/images/").unwrap().1;
    let kept = app.data_dir.path().join("images").join(relative);
    let orphan = kept.with_file_name("gen_0190d6f0-0000-7000-8000-000000000000.png");
    std::fs::write(&orphan, png_bytes()).unwrap();
    // The input kept to continue the generation, and one whose generation was never recorded.
    let day = relative.rsplit_once('/').unwrap().0;
    let inputs = app.data_dir.path().join("inputs").join(day);
    let kept_input = inputs.join(id).join("0.png");
    assert!(kept_input.exists(), "{}", kept_input.display());
    let orphan_input = inputs
        .join("gen_0190d6f0-0000-7000-8000-000000000001")
        .join("0.png");
    std::fs::create_dir_all(orphan_input.parent().unwrap()).unwrap();
    std::fs::write(&orphan_input, png_bytes()).unwrap();

    // Too young to be judged: its row may still be on its way.
    let report = app.history.sweep_orphans().await.unwrap();
    assert_eq!(report.removed, 0);
    assert!(orphan.exists());
    app.clock
        .set(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    let report = app.history.sweep_orphans().await.unwrap();
    assert_eq!(report.removed, 2);
    assert!(!orphan.exists() && !orphan_input.exists());
    assert!(kept_input.exists(), "a live generation's input stays");
    assert_eq!(fetched(&app, &url).await, png_bytes());
}

async fn s3_deletion_and_sweep(backend: Backend) {
    let s3 =
        nb_storage::testing::S3TestServer::start(S3_ACCESS_KEY, S3_SECRET_KEY, &[S3_BUCKET]).await;
    let settings = s3_settings(&s3);
    let app = TestApp::spawn_with(backend, |config| {
        crate::helpers::store_in_s3(config, settings);
    })
    .await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    let deleted = app.generated(&key, &json!({"prompt": "a banana"})).await;
    let kept = app.generated(&key, &json!({"prompt": "a cherry"})).await;
    let object_of = |made: &Value| {
        let url = made["url"].as_str().unwrap();
        let key = url
            .split_once(&format!("/{S3_BUCKET}/"))
            .unwrap()
            .1
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        s3.root().join(S3_BUCKET).join(key)
    };
    let (deleted_object, kept_object) = (object_of(&deleted), object_of(&kept));
    assert!(deleted_object.exists() && kept_object.exists());

    let path = format!("/v1/generations/{}", deleted["id"].as_str().unwrap());
    assert_eq!(app.delete_with(&path, &token).await.status(), 204);
    assert!(!deleted_object.exists());
    let url = deleted["url"].as_str().unwrap();
    assert_eq!(app.client.get(url).send().await.unwrap().status(), 404);
    // A fresh presigned URL for what is kept.
    let record: Value = app
        .get_with(
            &format!("/v1/generations/{}", kept["id"].as_str().unwrap()),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    let fresh = record["url"].as_str().unwrap();
    assert!(fresh.contains("X-Amz-Signature="), "{fresh}");
    assert_eq!(fetched(&app, fresh).await, png_bytes());

    // An object no generation names is swept once old enough.
    let orphan = kept_object.with_file_name("gen_0190d6f0-0000-7000-8000-000000000000.png");
    std::fs::write(&orphan, png_bytes()).unwrap();
    app.clock
        .set(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    let report = app.history.sweep_orphans().await.unwrap();
    assert_eq!(report.removed, 1);
    assert!(!orphan.exists());
    assert!(kept_object.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_deletion_and_sweep_on_postgres() {
    s3_deletion_and_sweep(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_deletion_and_sweep_on_sqlite() {
    s3_deletion_and_sweep(Backend::Sqlite).await;
}

// ---- Deleting an account ----

async fn deleting_an_account_leaves_nothing_that_identifies_it(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let response = app
        .create_key(&token, Some(json!({"name": "Ada's laptop key"})))
        .await;
    let key: Value = response.json().await.unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let (_, test_key) = key_of_mode(&app, &token, "test").await;
    let made = generate_once(
        &app,
        &key,
        "erase-1",
        r#"{"prompt": "a secret banana recipe"}"#,
    )
    .await;
    assert_eq!(made.status, 200);
    let image_url = made.body["url"].as_str().unwrap().to_owned();
    app.generated(&test_key, &json!({"prompt": "a secret cherry"}))
        .await;
    let second_session = app.login("ada@example.com", PASSWORD).await;
    let second_token: Value = second_session.json().await.unwrap();
    let second_token = second_token["access_token"].as_str().unwrap().to_owned();
    // Someone else, untouched.
    let (bobs_token, bobs_key) = app.user_with_key("bob@example.com").await;
    app.generated(&bobs_key, &json!({"prompt": "bob's banana"}))
        .await;

    let delete = |password: &'static str| {
        app.client
            .delete(app.url("/v1/auth/me"))
            .bearer_auth(&token)
            .json(&json!({ "password": password }))
            .send()
    };
    let wrong = assert_error(
        delete("not the password").await.unwrap(),
        422,
        "wrong_password",
    )
    .await;
    assert_eq!(wrong["error"]["field"], "password");
    assert_eq!(
        app.generate(&key, &json!({"prompt": "still here"}))
            .await
            .status(),
        200
    );

    assert_eq!(delete(PASSWORD).await.unwrap().status(), 204);
    // Its keys, tokens and password stop working at once; its images are gone.
    for credential in [&key, &test_key] {
        assert_error(
            app.generate(credential, &json!({"prompt": "a banana"}))
                .await,
            401,
            "invalid_api_key",
        )
        .await;
    }
    for access_token in [&token, &second_token] {
        assert_eq!(
            app.get_with("/v1/auth/me", access_token).await.status(),
            401
        );
    }
    assert_error(
        app.login("ada@example.com", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.client.get(&image_url).send().await.unwrap().status(),
        404
    );

    // Nothing stored names her, her keys or her prompts; the anonymous counts stay.
    let stored = app.db.every_stored_value().await;
    for secret in [
        "ada@example.com",
        "secret banana",
        "secret cherry",
        "Ada's laptop",
        "erase-1",
    ] {
        let found: Vec<&String> = stored
            .iter()
            .filter(|value| value.contains(secret))
            .collect();
        assert!(found.is_empty(), "{secret} is still stored: {found:?}");
    }
    assert!(
        stored
            .iter()
            .any(|value| value.starts_with("usage_daily.count="))
    );
    assert!(stored.iter().any(|value| value.contains("bob's banana")));
    assert_eq!(app.usage(&bobs_token).await[0]["count"], 1);
    // The email is free again.
    assert_eq!(
        app.register("ada@example.com", PASSWORD).await.status(),
        201
    );
    // Without a password, or without a token: refused.
    assert_eq!(
        app.client
            .delete(app.url("/v1/auth/me"))
            .json(&json!({"password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

// ---- Usage ----

async fn usage_is_reported_by_the_dimensions_asked_for(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (live_id, live_key) = key_of_mode(&app, &token, "live").await;
    let (_, test_key) = key_of_mode(&app, &token, "test").await;
    app.generated(&live_key, &json!({"prompt": "a"})).await;
    app.generated(&live_key, &json!({"prompt": "b"})).await;
    app.generated(
        &live_key,
        &json!({"prompt": "c", "model": "gemini-3-pro-image"}),
    )
    .await;
    app.generated(&test_key, &json!({"prompt": "d"})).await;
    let report = |query: &'static str| {
        let (app, token) = (&app, &token);
        async move {
            let response = app.get_with(&format!("/v1/usage?{query}"), token).await;
            assert_eq!(response.status(), 200, "{query}");
            response.json::<Value>().await.unwrap()
        }
    };
    let by_model = report("group_by=model").await;
    assert_eq!(
        by_model["usage"],
        json!([
            {"model": "gemini-3-pro-image", "count": 1, "cost_usd": "0.134400"},
            // Two live images at $0.0672 and a test key's, free.
            {"model": MODEL, "count": 3, "cost_usd": "0.134400"},
        ])
    );
    assert_eq!(by_model["group_by"], json!(["model"]));
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let by_day_and_key = report("days=7").await;
    let rows = by_day_and_key["usage"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let live_row = rows
        .iter()
        .find(|row| row["api_key_id"] == live_id)
        .unwrap();
    assert_eq!(live_row["day"], today);
    assert_eq!(live_row["count"], 3);
    assert_eq!(by_day_and_key["to"], today);
    let by_mode = report("group_by=mode").await;
    assert_eq!(
        by_mode["usage"],
        json!([
            {"mode": "live", "count": 3, "cost_usd": "0.268800"},
            {"mode": "test", "count": 1, "cost_usd": "0.000000"}
        ])
    );
    let yesterday = time::OffsetDateTime::now_utc()
        .date()
        .previous_day()
        .unwrap();
    let empty = app
        .get_with(
            &format!("/v1/usage?from={yesterday}&to={yesterday}&group_by=day"),
            &token,
        )
        .await;
    let empty: Value = empty.json().await.unwrap();
    assert_eq!(empty["usage"], json!([]));
    for (query, field) in [
        ("group_by=colour", "group_by"),
        ("days=0", "days"),
        ("from=2026-13-01", "from"),
        ("from=2026-11-20&to=2026-11-10", "from"),
    ] {
        let body = assert_error(
            app.get_with(&format!("/v1/usage?{query}"), &token).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["error"]["field"], field, "{query}");
    }
}

crate::on_both_backends!(
    magic_prompts_give_every_failure,
    a_repeat_is_replayed_without_a_second_image,
    refused_and_failed_requests_are_not_kept_but_rejections_are,
    concurrent_repeats_make_one_upstream_call,
    kept_answers_expire,
    a_request_whose_client_gave_up_finishes_and_is_replayed,
    the_openai_routes_replay_too,
    history_pages_and_scopes,
    deleting_a_generation_removes_its_image_and_keeps_the_record,
    orphaned_local_images_are_swept,
    usage_is_reported_by_the_dimensions_asked_for,
    deleting_an_account_leaves_nothing_that_identifies_it,
);

crate::configured_on_both_backends!(
    test_keys_make_deterministic_images_without_google => |config| config.upstream.api_key = None,
);
