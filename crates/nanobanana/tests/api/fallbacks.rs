//! Fallback chains against the fake Google: when 3.1 Flash Image is overloaded (503) the next
//! model of its chain makes the image, named in the answer with the model asked for, and
//! priced and counted as itself; never after a content refusal or another 4xx; a model failing
//! 5 requests in a row is skipped for the cooldown, then tried again.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Backend, MODEL, TestApp, assert_error};

const PRO: &str = "gemini-3-pro-image";

/// 3.1 Flash falls back to 3 Pro (the catalog's chain), without the client's own retries.
async fn chained() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |config| {
        config.upstream.max_retries = 0;
        config.limits.model_cooldown = Duration::from_secs(1);
        config
            .models
            .model
            .push(nanobanana::config::catalog_file::ModelEntry {
                id: MODEL.into(),
                aliases: None,
                api: None,
                aspect_ratios: None,
                resolutions: None,
                max_input_images: None,
                retired_at: None,
                replaced_by: None,
                fallbacks: Some(vec![PRO.into()]),
                provider: None,
                google_model: None,
                price: None,
            });
    })
    .await
}

impl TestApp {
    /// Google answers every call to `model` with `status` and Google's error body.
    async fn model_answers(&self, model: &str, status: u16, google_status: &str) {
        Mock::given(method("POST"))
            .and(path_regex(format!("/models/{model}:generateContent$")))
            .respond_with(
                ResponseTemplate::new(status).set_body_json(json!({"error": {
                "code": status, "message": "The model is overloaded. Please try again later.",
                "status": google_status}})),
            )
            .with_priority(1)
            .mount(&self.google)
            .await;
    }

    /// How many calls Google received for `model`.
    async fn calls_to(&self, model: &str) -> usize {
        self.google
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|request| request.url.path().contains(&format!("/models/{model}:")))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_model_falls_back_and_the_answer_names_both() {
    let app = chained().await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    app.model_answers(MODEL, 503, "UNAVAILABLE").await;
    let made = app.generated(&key, &json!({"prompt": "a banana"})).await;
    assert_eq!(made["model"], PRO, "{made}");
    assert_eq!(made["requested_model"], MODEL, "{made}");
    // Priced as 3 Pro's 1K image, and counted as 3 Pro's.
    assert_eq!(made["cost_usd"], "0.134400", "{made}");
    assert_eq!((app.calls_to(MODEL).await, app.calls_to(PRO).await), (1, 1));
    let history: Value = app
        .get_with(
            &format!("/v1/generations/{}", made["id"].as_str().unwrap()),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["model"], PRO);
    let usage: Value = app
        .get_with("/v1/usage?group_by=model", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(usage["usage"][0]["model"], PRO, "{usage}");
    // Without a failure, the model asked for makes it and the answer names no other.
    let direct = app
        .generated(&key, &json!({"prompt": "a banana", "model": PRO}))
        .await;
    assert_eq!(direct["model"], PRO);
    assert!(direct.get("requested_model").is_none(), "{direct}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_names_its_own_chain_among_enabled_models() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| config.upstream.max_retries = 0).await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    app.model_answers(MODEL, 500, "INTERNAL").await;
    // No chain in the catalog: the failure is the answer.
    let failed = app.generate(&key, &json!({"prompt": "a banana"})).await;
    assert_error(failed, 502, "upstream_failed").await;
    let made = app
        .generated(
            &key,
            &json!({"prompt": "a banana", "fallback_models": [PRO]}),
        )
        .await;
    assert_eq!(
        (made["model"].as_str(), made["requested_model"].as_str()),
        (Some(PRO), Some(MODEL))
    );
    let refused = app
        .generate(
            &key,
            &json!({"prompt": "a banana", "fallback_models": ["imagen-9"]}),
        )
        .await;
    let body = assert_error(refused, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "fallback_models");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_or_another_4xx_never_falls_back() {
    let app = chained().await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    app.refuse_the_next_image().await;
    let refused = app.generate(&key, &json!({"prompt": "a banana"})).await;
    assert_error(refused, 422, "content_rejected").await;
    app.model_answers(MODEL, 400, "INVALID_ARGUMENT").await;
    let bad = app.generate(&key, &json!({"prompt": "a banana"})).await;
    assert_error(bad, 502, "upstream_failed").await;
    assert_eq!(app.calls_to(PRO).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failing_five_times_in_a_row_is_skipped_for_the_cooldown() {
    let app = chained().await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    app.model_answers(MODEL, 503, "UNAVAILABLE").await;
    for _ in 0..5 {
        let made = app.generated(&key, &json!({"prompt": "a banana"})).await;
        assert_eq!(made["model"], PRO);
    }
    assert_eq!(app.calls_to(MODEL).await, 5);
    // Open: 3.1 Flash is not called, 3 Pro serves at once.
    for _ in 0..3 {
        app.generated(&key, &json!({"prompt": "a banana"})).await;
    }
    assert_eq!(app.calls_to(MODEL).await, 5);
    assert_eq!(app.calls_to(PRO).await, 8);
    // After the cooldown (1 s here) it is tried again; failing, it is skipped again at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.generated(&key, &json!({"prompt": "a banana"})).await;
    app.generated(&key, &json!({"prompt": "a banana"})).await;
    assert_eq!(app.calls_to(MODEL).await, 6);
}
