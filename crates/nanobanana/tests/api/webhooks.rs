//! Webhooks over real sockets on both databases: endpoints and their secrets (shown once),
//! events of every generation (synchronous or not) delivered to a receiver that verifies them
//! with the Standard Webhooks reference library, retries on a schedule with the same
//! `webhook-id`, rotation signing with both secrets, a failing endpoint, and targets inside the
//! network refused (literally at registration, after DNS at delivery).

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, assert_error};

impl TestApp {
    async fn create_webhook(&self, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/webhooks"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn created_webhook(&self, token: &str, url: &str) -> Value {
        let response = self.create_webhook(token, &json!({"url": url})).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn webhook_deliveries(&self, token: &str, id: &str) -> Vec<Value> {
        let response = self
            .get_with(&format!("/v1/webhooks/{id}/deliveries"), token)
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["deliveries"].as_array().unwrap().clone()
    }

    /// The endpoint's attempts once there are `n` (polled up to 20 s).
    async fn attempts_when(&self, token: &str, id: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let attempts = self.webhook_deliveries(token, id).await;
            if attempts.len() >= n {
                return attempts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} attempts of {n}: {attempts:?}",
                attempts.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A receiver: `/hook` answers `failures` 500s, then 204.
async fn receiver(failures: u64) -> MockServer {
    let receiver = MockServer::start().await;
    if failures > 0 {
        Mock::given(method("POST"))
            .and(path("/hook"))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(failures)
            .with_priority(1)
            .mount(&receiver)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(2)
        .mount(&receiver)
        .await;
    receiver
}

/// Every request the receiver got, each checked with the Standard Webhooks library and the
/// secret: its `webhook-id` and JSON body.
async fn verified(receiver: &MockServer, secret: &str) -> Vec<(String, Value)> {
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| {
            verifier
                .verify(&request.body, &request.headers)
                .unwrap_or_else(|error| panic!("not verified: {error:?}"));
            (
                request.headers["webhook-id"].to_str().unwrap().to_owned(),
                serde_json::from_slice(&request.body).unwrap(),
            )
        })
        .collect()
}

async fn events_are_signed_retried_and_listed(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let receiver = receiver(2).await;
    let created = app
        .created_webhook(&token, &format!("{}/hook", receiver.uri()))
        .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["events"],
        json!([
            "generation.succeeded",
            "generation.failed",
            "generation.canceled"
        ])
    );
    let id = created["id"].as_str().unwrap();
    // The secret is shown once.
    let listed: Value = app
        .get_with("/v1/webhooks", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["webhooks"][0]["id"], created["id"]);
    assert!(!listed.to_string().contains(secret));

    let generation = app.generated(&key, &json!({"prompt": "a banana"})).await;
    // Two 500s, then delivered on the third attempt (NB_WEBHOOK_RETRY_SCHEDULE=1,1,1).
    let attempts = app.attempts_when(&token, id, 3).await;
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(statuses, [&json!(204), &json!(500), &json!(500)]);
    assert_eq!(attempts[0]["delivered"], true);
    assert_eq!(attempts[0]["attempt"], 3);
    assert_eq!(attempts[0]["event"], "generation.succeeded");
    let requests = verified(&receiver, secret).await;
    assert_eq!(requests.len(), 3);
    // One event: the same webhook-id and body on every attempt.
    assert!(
        requests
            .iter()
            .all(|(id, body)| *id == requests[0].0 && *body == requests[0].1)
    );
    assert_eq!(attempts[0]["webhook_id"], requests[0].0);
    let body = &requests[0].1;
    assert_eq!(body["type"], "generation.succeeded");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["id"], generation["id"]);
    assert_eq!(body["data"]["status"], "succeeded");
    assert_eq!(body["data"]["cost_usd"], "0.067200");
    // No API key or token travels with an event.
    for request in receiver.received_requests().await.unwrap() {
        assert!(request.headers.get("authorization").is_none());
        let text = String::from_utf8_lossy(&request.body);
        assert!(!text.contains(&key) && !text.contains(&token) && !text.contains(secret));
    }
    let endpoint: Value = app
        .get_with(&format!("/v1/webhooks/{id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(endpoint["status"], "active");
}

async fn a_failure_is_an_event_and_endpoints_choose_theirs(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let receiver = receiver(0).await;
    let created = app
        .created_webhook(&token, &format!("{}/hook", receiver.uri()))
        .await;
    let id = created["id"].as_str().unwrap();
    app.refuse_the_next_image().await;
    let refused = app.generate(&key, &json!({"prompt": "a banana"})).await;
    assert_eq!(refused.status(), 422);
    // Only failures, from now on.
    let patched = app
        .client
        .patch(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&token)
        .json(&json!({"events": ["generation.failed"], "description": "failures"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["events"], json!(["generation.failed"]));
    assert_eq!(patched["description"], "failures");
    app.generated(&key, &json!({"prompt": "a banana"})).await;
    let attempts = app.attempts_when(&token, id, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let attempts_later = app.webhook_deliveries(&token, id).await;
    assert_eq!(attempts_later.len(), 1, "{attempts_later:?}");
    assert_eq!(attempts[0]["event"], "generation.failed");
    let requests = verified(&receiver, created["secret"].as_str().unwrap()).await;
    assert_eq!(requests[0].1["data"]["error"]["code"], "content_rejected");
}

async fn a_canceled_job_is_an_event(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let receiver = receiver(0).await;
    let created = app
        .created_webhook(&token, &format!("{}/hook", receiver.uri()))
        .await;
    let queued: Value = app
        .client
        .post(app.url("/v1/generate"))
        .bearer_auth(&key)
        .header("prefer", "respond-async")
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let canceled = app
        .client
        .post(app.url(&format!(
            "/v1/generations/{}/cancel",
            queued["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    let attempts = app
        .attempts_when(&token, created["id"].as_str().unwrap(), 1)
        .await;
    assert_eq!(attempts[0]["event"], "generation.canceled");
    assert_eq!(attempts[0]["generation_id"], queued["id"]);
}

async fn a_rotated_secret_signs_beside_the_new_one(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let receiver = receiver(0).await;
    let created = app
        .created_webhook(&token, &format!("{}/hook", receiver.uri()))
        .await;
    let id = created["id"].as_str().unwrap();
    let rotated = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/rotate")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert_ne!(rotated["secret"], created["secret"]);
    assert!(rotated["previous_secret_expires_at"].is_string());
    app.generated(&key, &json!({"prompt": "a banana"})).await;
    app.attempts_when(&token, id, 1).await;
    // Verifiable with either secret: two signatures.
    verified(&receiver, created["secret"].as_str().unwrap()).await;
    verified(&receiver, rotated["secret"].as_str().unwrap()).await;
    let request = &receiver.received_requests().await.unwrap()[0];
    let signatures = request.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
}

/// "Send test event": one signed `webhook.test` POST now, verifiable with the secret, whatever
/// events the endpoint takes; its outcome is the answer (a receiver that refuses it too), and
/// it is neither an outbox delivery nor retried. Another account's endpoint is a 404.
async fn a_test_event_is_signed_sent_now_and_answered(app: TestApp) {
    let (token, _) = app.user_with_key("ada@example.com").await;
    let (other, _) = app.user_with_key("bob@example.com").await;
    let receiver = receiver(1).await;
    let response = app
        .create_webhook(
            &token,
            &json!({"url": format!("{}/hook", receiver.uri()), "events": ["generation.canceled"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let send_test = |token: String| {
        let request = app
            .client
            .post(app.url(&format!("/v1/webhooks/{id}/test")))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    // The receiver answers its first request 500: said so, not retried.
    let refused = send_test(token.clone()).await;
    assert_eq!(refused.status(), 200);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["delivered"], false, "{refused}");
    assert_eq!(refused["status_code"], 500, "{refused}");
    let delivered = send_test(token.clone()).await;
    let delivered: Value = delivered.json().await.unwrap();
    assert_eq!(delivered["delivered"], true, "{delivered}");
    assert_eq!(delivered["status_code"], 204, "{delivered}");
    assert!(delivered["duration_ms"].is_u64(), "{delivered}");
    let events = verified(&receiver, created["secret"].as_str().unwrap()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for (message_id, body) in &events {
        assert!(message_id.starts_with("msg_test_"), "{message_id}");
        assert_eq!(body["type"], "webhook.test");
        assert_eq!(body["data"]["webhook_id"], id);
        assert!(body["timestamp"].is_string());
    }
    assert_ne!(
        events[0].0, events[1].0,
        "each test event is a message of its own"
    );
    assert!(app.webhook_deliveries(&token, id).await.is_empty());
    let foreign = send_test(other).await;
    assert_error(foreign, 404, "webhook_not_found").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received_requests().await.unwrap().len(), 2);
}

async fn an_endpoint_failing_every_attempt_is_marked_failing(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let receiver = receiver(100).await;
    let created = app
        .created_webhook(&token, &format!("{}/hook", receiver.uri()))
        .await;
    let id = created["id"].as_str().unwrap();
    app.generated(&key, &json!({"prompt": "a banana"})).await;
    // 1 + 3 retries.
    app.attempts_when(&token, id, 4).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let endpoint: Value = app
            .get_with(&format!("/v1/webhooks/{id}"), &token)
            .await
            .json()
            .await
            .unwrap();
        if endpoint["status"] == "failing" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{endpoint}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received_requests().await.unwrap().len(), 4);
}

async fn endpoints_are_the_accounts_own(app: TestApp) {
    let (token, _) = app.user_with_key("ada@example.com").await;
    let (other, other_key) = app.user_with_key("bob@example.com").await;
    let receiver = receiver(0).await;
    let created = app
        .created_webhook(&token, &format!("{}/hook", receiver.uri()))
        .await;
    let id = created["id"].as_str().unwrap();
    assert_error(
        app.get_with(&format!("/v1/webhooks/{id}"), &other).await,
        404,
        "webhook_not_found",
    )
    .await;
    assert_error(
        app.get_with("/v1/webhooks/wh_nope", &token).await,
        404,
        "webhook_not_found",
    )
    .await;
    // An API key cannot manage webhooks.
    assert_eq!(app.get_with("/v1/webhooks", &other_key).await.status(), 401);
    // Bob's generations are not Ada's events.
    app.generated(&other_key, &json!({"prompt": "a banana"}))
        .await;
    assert_error(
        app.create_webhook(
            &token,
            &json!({"url": format!("{}/hook", receiver.uri()), "events": ["generation.made"]}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        app.delete_with(&format!("/v1/webhooks/{id}"), &token)
            .await
            .status(),
        204
    );
    assert_error(
        app.get_with(&format!("/v1/webhooks/{id}/deliveries"), &token)
            .await,
        404,
        "webhook_not_found",
    )
    .await;
    assert!(receiver.received_requests().await.unwrap().is_empty());
}

async fn targets_inside_the_network_are_refused(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    for url in [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00::1]/hook",
        "https://[::1]/hook",
    ] {
        let refused = app.create_webhook(&token, &json!({"url": url})).await;
        let body = assert_error(refused, 422, "validation_failed").await;
        assert_eq!(body["error"]["field"], "url", "{url}");
    }
    // A name is accepted, but every delivery checks what it resolves to: localhost is
    // loopback, so nothing is ever sent.
    let receiver = receiver(0).await;
    let port = receiver.address().port();
    let created = app
        .created_webhook(&token, &format!("http://localhost:{port}/hook"))
        .await;
    app.generated(&key, &json!({"prompt": "a banana"})).await;
    let attempts = app
        .attempts_when(&token, created["id"].as_str().unwrap(), 1)
        .await;
    assert_eq!(attempts[0]["error"], "blocked_address");
    assert_eq!(attempts[0]["status_code"], Value::Null);
    assert!(receiver.received_requests().await.unwrap().is_empty());
}

async fn plain_http_needs_the_operator(app: TestApp) {
    let (token, _) = app.user_with_key("ada@example.com").await;
    let refused = app
        .create_webhook(&token, &json!({"url": "http://hooks.example.com/nb"}))
        .await;
    let body = assert_error(refused, 422, "validation_failed").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NB_WEBHOOK_ALLOW_HTTP")
    );
    assert_eq!(
        app.create_webhook(&token, &json!({"url": "https://hooks.example.com/nb"}))
            .await
            .status(),
        201
    );
}

async fn without_an_encryption_key_webhooks_are_off(app: TestApp) {
    let (token, _) = app.user_with_key("ada@example.com").await;
    let refused = app
        .create_webhook(&token, &json!({"url": "https://hooks.example.com/nb"}))
        .await;
    assert_error(refused, 503, "webhooks_not_configured").await;
}

fn open_targets(config: &mut nanobanana::config::Config) {
    config.webhooks.allow_http = true;
    config.webhooks.allow_private_targets = true;
    config.webhooks.retry_schedule = nanobanana::config::sections::RetrySeconds(
        nb_domain::webhooks::RetrySchedule(vec![Duration::from_secs(1); 3]),
    );
}

crate::configured_on_both_backends!(
    events_are_signed_retried_and_listed => open_targets,
    a_failure_is_an_event_and_endpoints_choose_theirs => open_targets,
    a_canceled_job_is_an_event => |config| {
        open_targets(config);
        config.jobs.workers = 0;
    },
    a_rotated_secret_signs_beside_the_new_one => open_targets,
    an_endpoint_failing_every_attempt_is_marked_failing => open_targets,
    a_test_event_is_signed_sent_now_and_answered => open_targets,
    endpoints_are_the_accounts_own => open_targets,
    targets_inside_the_network_are_refused => |config| config.webhooks.allow_http = true,
    plain_http_needs_the_operator => |_| {},
);

mod without_a_key {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let app =
            crate::helpers::TestApp::spawn_with(crate::helpers::Backend::Postgres, |config| {
                config.security.encryption_key = None;
            })
            .await;
        super::without_an_encryption_key_webhooks_are_off(app).await;
    }
}
