//! A pool of Gemini API keys (`GOOGLE_API_KEYS`) against the fake Google: round-robin, a key
//! answered 429 rests for Google's `retryDelay` while the other serves (the request is
//! retried on it at once), and a key Google rejects is taken out and `/readyz` says so.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{header, method};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Backend, TestApp};

const FIRST: &str = "AIza-pool-key-first";
const SECOND: &str = "AIza-pool-key-second";

async fn pool_of_two() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |config| {
        config.upstream.api_key = None;
        config.upstream.api_keys = Some(nb_imagen::GoogleApiKeys::new(format!("{FIRST},{SECOND}")));
    })
    .await
}

impl TestApp {
    /// Which key each of Google's requests carried, in order.
    async fn keys_used(&self) -> Vec<String> {
        self.google
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|request| {
                request.headers["x-goog-api-key"]
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    async fn ready_keys(&self) -> Value {
        let body: Value = self
            .client
            .get(self.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["upstream_keys"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_round_robin_and_a_rate_limited_key_rests_while_the_other_serves() {
    let app = pool_of_two().await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    assert_eq!(app.ready_keys().await, json!({"usable": 2, "total": 2}));
    for _ in 0..4 {
        app.generated(&key, &json!({"prompt": "a banana"})).await;
    }
    let used = app.keys_used().await;
    assert_eq!(
        used.iter().filter(|used| *used == FIRST).count(),
        2,
        "{used:?}"
    );
    assert_eq!(
        used.iter().filter(|used| *used == SECOND).count(),
        2,
        "{used:?}"
    );

    // The first key's project is out of quota for 2 s.
    Mock::given(method("POST"))
        .and(header("x-goog-api-key", FIRST))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": {
            "code": 429, "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]}})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.google)
        .await;
    let before = app.keys_used().await.len();
    let started = std::time::Instant::now();
    for _ in 0..4 {
        app.generated(&key, &json!({"prompt": "a banana"})).await;
    }
    // The 429 was retried on the other key at once, and the first rested meanwhile.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let used = app.keys_used().await[before..].to_vec();
    assert_eq!(
        used.iter().filter(|used| *used == FIRST).count(),
        1,
        "{used:?}"
    );
    assert_eq!(used.len(), 5, "{used:?}");
    assert_eq!(app.ready_keys().await, json!({"usable": 1, "total": 2}));

    // Rested: it serves again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.ready_keys().await, json!({"usable": 2, "total": 2}));
    let before = app.keys_used().await.len();
    for _ in 0..4 {
        app.generated(&key, &json!({"prompt": "a banana"})).await;
    }
    let used = app.keys_used().await[before..].to_vec();
    assert_eq!(
        used.iter().filter(|used| *used == FIRST).count(),
        2,
        "{used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_google_rejects_is_taken_out_until_restart() {
    let app = pool_of_two().await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    Mock::given(method("POST"))
        .and(header("x-goog-api-key", FIRST))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "code": 400, "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]}})))
        .with_priority(1)
        .mount(&app.google)
        .await;
    for _ in 0..5 {
        app.generated(&key, &json!({"prompt": "a banana"})).await;
    }
    let used = app.keys_used().await;
    assert_eq!(
        used.iter().filter(|used| *used == FIRST).count(),
        1,
        "{used:?}"
    );
    assert_eq!(
        used.iter().filter(|used| *used == SECOND).count(),
        5,
        "{used:?}"
    );
    assert_eq!(app.ready_keys().await, json!({"usable": 1, "total": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_key_is_never_taken_out() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": {
            "code": 403, "message": "Permission denied.", "status": "PERMISSION_DENIED"}})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.google)
        .await;
    let refused = app.generate(&key, &json!({"prompt": "a banana"})).await;
    assert_eq!(refused.status(), 502);
    // Fixed at Google's side: the same key serves again, without a restart.
    app.generated(&key, &json!({"prompt": "a banana"})).await;
    assert_eq!(app.ready_keys().await, json!({"usable": 1, "total": 1}));
}
