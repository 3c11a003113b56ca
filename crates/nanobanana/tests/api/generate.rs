//! `POST /v1/generate`, `GET /v1/usage` and `GET /images/…`, against a fake of Google's API.
//! Includes the acceptance cases of the generation route by name.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Backend, GOOGLE_KEY, MODEL, TestApp, assert_error, png_bytes};
use crate::on_both_backends;

const GEMINI_PATH: &str = "/v1beta/models/gemini-3.1-flash-image:generateContent";

async fn google_answers(app: &TestApp, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(response)
        .mount(&app.google)
        .await;
}

fn google_error(code: u16, status: &str, details: Value) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({"error": {
        "code": code, "status": status, "details": details,
        "message": "UPSTREAM-INTERNAL-DETAIL: quota project 1234 key AIza-leak",
    }}))
}

/// Asserts that nothing of the upstream's body or our Google key reached the client.
async fn assert_error_hides_upstream(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> Value {
    let body = assert_error(response, status, code).await;
    let text = body.to_string();
    assert!(
        !text.contains("UPSTREAM-INTERNAL-DETAIL") && !text.contains(GOOGLE_KEY),
        "{text}"
    );
    body
}

async fn test_generate_success(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let response = app
        .generate(&key, &json!({"prompt": "a banana on the moon"}))
        .await;
    assert_eq!(response.status(), 200);
    // Server-Timing: upstream;dur=…, storage;dur=…, db;dur=…, total;dur=… (milliseconds).
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let durations: Vec<(String, f64)> = timing
        .split(", ")
        .map(|entry| {
            let (name, duration) = entry.split_once(";dur=").unwrap();
            (name.to_owned(), duration.parse().unwrap())
        })
        .collect();
    let names: Vec<&str> = durations.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["upstream", "storage", "db", "total"], "{timing}");
    let parts: f64 = durations[..3].iter().map(|(_, ms)| ms).sum();
    assert!(
        durations[3].1 + 0.2 >= parts,
        "total is less than its parts: {timing}"
    );
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert!(
        id.starts_with("gen_") && uuid::Uuid::parse_str(&id[4..]).is_ok(),
        "{id}"
    );
    assert_eq!(body["prompt"], "a banana on the moon");
    assert_eq!(body["size"], "1024x1024");
    assert_eq!(body["style"], "natural");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["mime_type"], "image/png");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));

    // The URL gives back exactly the bytes the provider returned, as a PNG, cacheable.
    let url = body["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/images/", app.address))
            && url.ends_with(&format!("/{id}.png")),
        "{url}"
    );
    let image = app.client.get(url).send().await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert!(
        image.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(image.bytes().await.unwrap().as_ref(), png_bytes());
}

async fn the_provider_gets_the_sdk_request_with_size_style_and_model(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-3-pro-image:generateContent"))
        .and(header("x-goog-api-key", GOOGLE_KEY))
        .and(body_partial_json(json!({
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "3:4"}},
            "contents": [{"role": "user"}],
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(crate::helpers::gemini_image_answer()))
        .expect(1)
        .mount(&app.google)
        .await;
    let body = json!({"prompt": "a fox", "size": "768x1024", "style": "artistic", "model": "gemini-3-pro-image"});
    let response: Value = app.generate(&key, &body).await.json().await.unwrap();
    assert_eq!(response["model"], "gemini-3-pro-image");
    assert_eq!(
        (response["size"].as_str(), response["style"].as_str()),
        (Some("768x1024"), Some("artistic"))
    );
    let sent: Value = app.google.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    let text = sent["contents"][0]["parts"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("a fox\n\nStyle: artistic"), "{text}");
}

async fn test_generate_invalid_api_key(app: TestApp) {
    let unknown = format!("nb_live_{}", "a".repeat(32));
    for key in [unknown.as_str(), "nb_live_nope", "garbage"] {
        let response = app.generate(key, &json!({"prompt": "a banana"})).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(response.status(), 401);
    }
    let missing = app
        .client
        .post(app.url("/v1/generate"))
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(missing, 401, "missing_credentials").await;
    assert_eq!(app.google_requests().await, 0);
}

async fn an_access_token_cannot_generate(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    assert_error(
        app.generate(&token, &json!({"prompt": "x"})).await,
        401,
        "wrong_credential_type",
    )
    .await;
}

async fn test_generate_revoked_key_rejected(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (id, key) = app.created_key(&token).await;
    assert_eq!(
        app.generate(&key, &json!({"prompt": "a banana"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.delete_with(&format!("/v1/keys/{id}"), &token)
            .await
            .status(),
        204
    );
    assert_error(
        app.generate(&key, &json!({"prompt": "a banana"})).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(app.google_requests().await, 1);
}

async fn test_generate_missing_prompt(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    for body in [
        json!({}),
        json!({"prompt": null}),
        json!({"prompt": "   "}),
        json!({"prompt": "\u{0}\u{0}\u{0}"}),
        json!({"prompt": "\u{200b}\u{200b} \u{feff}"}),
        json!({"prompt": "x".repeat(10_001)}),
        json!({"prompt": 5}),
    ] {
        let error = assert_error(app.generate(&key, &body).await, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], "prompt", "{body}");
    }
    assert_eq!(app.google_requests().await, 0);
}

async fn bad_sizes_styles_and_models_are_422_naming_the_field(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let size = assert_error(
        app.generate(&key, &json!({"prompt": "x", "size": "32x32"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(size["error"]["field"], "size");
    assert!(
        size["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 to 8192"),
        "what is accepted is said"
    );
    let style = assert_error(
        app.generate(&key, &json!({"prompt": "x", "style": "cubist"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(style["error"]["field"], "style");
    let model = assert_error(
        app.generate(&key, &json!({"prompt": "x", "model": "dall-e-3"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(model["error"]["field"], "model");
    assert!(model["error"]["message"].as_str().unwrap().contains(MODEL));
    assert_eq!(app.google_requests().await, 0);
}

async fn test_generate_usage_recorded(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let (_, other_key) = app.created_key(&token).await;
    assert!(app.usage(&token).await.is_empty());
    for _ in 0..2 {
        assert_eq!(
            app.generate(&key, &json!({"prompt": "a banana"}))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        app.generate(&other_key, &json!({"prompt": "a banana"}))
            .await
            .status(),
        200
    );
    let keys = app.list_keys(&token).await;
    let usage = app.usage(&token).await;
    let today = time::OffsetDateTime::now_utc().date();
    let today = format!(
        "{:04}-{:02}-{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    let count_for = |key_id: &Value| {
        usage
            .iter()
            .find(|row| &row["api_key_id"] == key_id)
            .map(|row| (row["day"].clone(), row["count"].clone()))
    };
    // keys are listed newest first: [other_key, key]
    assert_eq!(count_for(&keys[1]["id"]), Some((json!(today), json!(2))));
    assert_eq!(count_for(&keys[0]["id"]), Some((json!(today), json!(1))));
    // Each use stamped the key.
    assert!(keys[1]["last_used_at"].is_string());
    // Another user sees none of it.
    let bob = app.signed_up("bob@example.com").await;
    assert!(app.usage(&bob).await.is_empty());
}

async fn usage_days_are_checked(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    for days in ["0", "367", "-1", "many"] {
        let response = app
            .get_with(&format!("/v1/usage?days={days}"), &token)
            .await;
        assert_error(response, 422, "validation_failed").await;
    }
    assert_eq!(app.get_with("/v1/usage?days=1", &token).await.status(), 200);
}

async fn a_refused_prompt_is_422_and_not_counted(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    google_answers(
        &app,
        ResponseTemplate::new(200)
            .set_body_json(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
    )
    .await;
    let body = assert_error_hides_upstream(
        app.generate(&key, &json!({"prompt": "something bad"}))
            .await,
        422,
        "content_rejected",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SAFETY")
    );
    assert!(app.usage(&token).await.is_empty());
}

async fn an_answer_without_an_image_is_422_and_not_counted(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let answer = json!({"candidates": [{"content": {"parts": [{"text": "I cannot make that picture."}]}, "finishReason": "STOP"}]});
    google_answers(&app, ResponseTemplate::new(200).set_body_json(answer)).await;
    let body = assert_error(
        app.generate(&key, &json!({"prompt": "x"})).await,
        422,
        "content_rejected",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("I cannot make that picture.")
    );
    assert!(app.usage(&token).await.is_empty());
}

async fn without_a_google_key_generation_is_503_before_any_upstream_call(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let response = app.generate(&key, &json!({"prompt": "a banana"})).await;
    let body = assert_error(response, 503, "generation_not_configured").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GOOGLE_API_KEY")
    );
    assert_eq!(app.google_requests().await, 0);
    assert!(app.usage(&token).await.is_empty());
}

async fn upstream_429_is_503_with_retry_after(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let details =
        json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.500s"}]);
    google_answers(&app, google_error(429, "RESOURCE_EXHAUSTED", details)).await;
    let response = app.generate(&key, &json!({"prompt": "x"})).await;
    assert_eq!(response.headers()["retry-after"], "2");
    assert_error_hides_upstream(response, 503, "upstream_rate_limited").await;
    assert!(app.usage(&token).await.is_empty());
}

async fn upstream_5xx_and_garbage_are_502(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    google_answers(&app, google_error(500, "INTERNAL", json!([]))).await;
    assert_error_hides_upstream(
        app.generate(&key, &json!({"prompt": "x"})).await,
        502,
        "upstream_failed",
    )
    .await;
    app.google.reset().await;
    google_answers(
        &app,
        ResponseTemplate::new(200).set_body_string("<html>UPSTREAM-INTERNAL-DETAIL</html>"),
    )
    .await;
    assert_error_hides_upstream(
        app.generate(&key, &json!({"prompt": "x"})).await,
        502,
        "upstream_failed",
    )
    .await;
}

async fn an_unreachable_upstream_is_502(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    assert_error(
        app.generate(&key, &json!({"prompt": "x"})).await,
        502,
        "upstream_failed",
    )
    .await;
}

async fn an_upstream_timeout_is_504(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    google_answers(
        &app,
        ResponseTemplate::new(200)
            .set_body_json(crate::helpers::gemini_image_answer())
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    assert_error(
        app.generate(&key, &json!({"prompt": "x"})).await,
        504,
        "upstream_timeout",
    )
    .await;
}

async fn a_retired_model_is_502_naming_it(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    google_answers(&app, google_error(404, "NOT_FOUND", json!([]))).await;
    let body = assert_error_hides_upstream(
        app.generate(&key, &json!({"prompt": "x"})).await,
        502,
        "model_unavailable",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains(MODEL));
}

async fn rejected_credentials_are_502(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let details =
        json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]);
    google_answers(&app, google_error(400, "INVALID_ARGUMENT", details)).await;
    assert_error_hides_upstream(
        app.generate(&key, &json!({"prompt": "x"})).await,
        502,
        "upstream_auth_failed",
    )
    .await;
}

async fn inline_storage_answers_a_data_url(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let body = app.generated(&key, &json!({"prompt": "x"})).await;
    let url = body["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("data:image/png;base64,{}", crate::helpers::PNG_BASE64)
    );
}

async fn two_hundred_concurrent_generations_are_all_counted(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let app = std::sync::Arc::new(app);
    let requests = (0..200).map(|i| {
        let (app, key) = (app.clone(), key.clone());
        tokio::spawn(async move {
            app.generate(&key, &json!({"prompt": format!("banana {i}")}))
                .await
                .status()
        })
    });
    for request in requests.collect::<Vec<_>>() {
        assert_eq!(request.await.unwrap(), 200);
    }
    let usage = app.usage(&token).await;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["count"], 200);
}

async fn local_images_cannot_be_listed_or_escaped(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let body = app.generated(&key, &json!({"prompt": "x"})).await;
    let url = body["url"].as_str().unwrap();
    let folder = &url[..url.rfind('/').unwrap() + 1];
    std::fs::write(app.data_dir.path().join("secret.txt"), "not an image").unwrap();
    for probe in [
        folder.to_owned(),
        app.url("/images/"),
        app.url("/images/../secret.txt"),
        app.url("/images/%2e%2e/secret.txt"),
        app.url("/images/..%2Fsecret.txt"),
        app.url("/images/2026/01/01/gen_missing.png"),
    ] {
        let response = app.client.get(&probe).send().await.unwrap();
        let body = assert_error(response, 404, "not_found").await;
        assert!(!body.to_string().contains("not an image"), "{probe}");
    }
}

/// Only the exact path shape images are stored under is served; answers carry validators a
/// cache can use, and HEAD gives the head of the answer alone.
async fn local_images_are_served_by_their_exact_path_with_validators(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let body = app.generated(&key, &json!({"prompt": "x"})).await;
    let url = body["url"].as_str().unwrap().to_owned();
    let relative = url.split_once("/images/").unwrap().1;
    let file = app.data_dir.path().join("images").join(relative);

    let image = app.client.get(&url).send().await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(image.headers()["x-content-type-options"], "nosniff");
    // The tag is the file's size and modification time (never its inode).
    let metadata = std::fs::metadata(&file).unwrap();
    let modified = time::OffsetDateTime::from(metadata.modified().unwrap());
    let tag = format!(
        "\"{:x}-{:x}\"",
        metadata.len(),
        modified.unix_timestamp_nanos()
    );
    assert_eq!(image.headers()["etag"], tag.as_str());
    assert!(image.headers().contains_key("last-modified"));
    assert_eq!(image.bytes().await.unwrap().as_ref(), png_bytes());

    let revalidated = app
        .client
        .get(&url)
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert!(revalidated.bytes().await.unwrap().is_empty());

    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "image/png");
    assert_eq!(
        head.headers()["content-length"],
        png_bytes().len().to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    // A file planted beside the images, or under an image's name, is not served.
    let folder = file.parent().unwrap();
    std::fs::write(folder.join("evil.html"), "<script>alert(1)</script>").unwrap();
    let evil_url = url.replace(
        &format!("{}.png", body["id"].as_str().unwrap()),
        "evil.html",
    );
    assert_error(
        app.client.get(&evil_url).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let planted = url.replace(
        body["id"].as_str().unwrap(),
        &format!("gen_{}", uuid::Uuid::now_v7()),
    );
    let planted_file = folder.join(planted.rsplit('/').next().unwrap());
    std::fs::write(&planted_file, "<html>not an image</html>").unwrap();
    assert_error(
        app.client.get(&planted).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
}

on_both_backends!(
    local_images_are_served_by_their_exact_path_with_validators,
    test_generate_success,
    the_provider_gets_the_sdk_request_with_size_style_and_model,
    test_generate_invalid_api_key,
    an_access_token_cannot_generate,
    test_generate_revoked_key_rejected,
    test_generate_missing_prompt,
    bad_sizes_styles_and_models_are_422_naming_the_field,
    test_generate_usage_recorded,
    usage_days_are_checked,
    a_refused_prompt_is_422_and_not_counted,
    an_answer_without_an_image_is_422_and_not_counted,
    upstream_429_is_503_with_retry_after,
    upstream_5xx_and_garbage_are_502,
    a_retired_model_is_502_naming_it,
    rejected_credentials_are_502,
    two_hundred_concurrent_generations_are_all_counted,
    local_images_cannot_be_listed_or_escaped,
);

crate::configured_on_both_backends!(
    without_a_google_key_generation_is_503_before_any_upstream_call => |config| config.upstream.api_key = None,
    an_unreachable_upstream_is_502 => |config| config.upstream.base_url = "http://127.0.0.1:9".into(),
    an_upstream_timeout_is_504 => |config| {
        config.upstream.attempt_timeout = std::time::Duration::from_millis(500);
    },
    inline_storage_answers_a_data_url => |config| config.storage.backend = Some(nanobanana::config::sections::StorageBackend::Inline),
);

async fn generation_with_s3_storage(backend: Backend) {
    use crate::helpers::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, s3_settings};
    let s3 =
        nb_storage::testing::S3TestServer::start(S3_ACCESS_KEY, S3_SECRET_KEY, &[S3_BUCKET]).await;
    let settings = s3_settings(&s3);
    let app = TestApp::spawn_with(backend, |config| {
        crate::helpers::store_in_s3(config, settings);
    })
    .await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    let body = app.generated(&key, &json!({"prompt": "a banana"})).await;
    let url = body["url"].as_str().unwrap();
    let id = body["id"].as_str().unwrap();
    assert!(
        url.starts_with(&s3.endpoint) && url.contains("X-Amz-Signature="),
        "{url}"
    );
    let image = app.client.get(url).send().await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(image.bytes().await.unwrap().as_ref(), png_bytes());
    // The object key is images/<yyyy>/<mm>/<dd>/gen_<uuid>.png in the bucket.
    let today = time::OffsetDateTime::now_utc().date();
    let object = s3.root().join(S3_BUCKET).join(format!(
        "images/{:04}/{:02}/{:02}/{id}.png",
        today.year(),
        u8::from(today.month()),
        today.day()
    ));
    assert_eq!(std::fs::read(object).unwrap(), png_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_with_s3_storage_on_postgres() {
    generation_with_s3_storage(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_with_s3_storage_on_sqlite() {
    generation_with_s3_storage(Backend::Sqlite).await;
}
