//! Asynchronous generations over real sockets on both databases: `Prefer: respond-async`
//! answers 202 once the job is committed, a worker runs it to `succeeded` or `failed` (after
//! retries), `wait=N` answers with the finished generation, a queued job can be canceled
//! (its reservation given back) and exactly one of a cancel and a worker's claim wins.

use std::time::Duration;

use nb_domain::generation::GenerationId;
use nb_domain::ports::JobRepository;
use serde_json::{Value, json};
use time::OffsetDateTime;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TestApp, assert_error, header};
use crate::{configured_on_both_backends, on_both_backends};

impl TestApp {
    /// `POST /v1/generate` with `Prefer: prefer` (and any other headers).
    async fn submit(&self, key: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/v1/generate"))
            .bearer_auth(key)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// A job submitted with `Prefer: respond-async`, which must be accepted: its generation.
    async fn submitted(&self, key: &str, body: &Value) -> Value {
        let response = self.submit(key, body, &[("prefer", "respond-async")]).await;
        assert_eq!(response.status(), 202);
        response.json().await.unwrap()
    }

    /// The generation `id`, polled until it has finished (or 30 s have passed).
    async fn finished(&self, credential: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let response = self
                .get_with(&format!("/v1/generations/{id}"), credential)
                .await;
            assert_eq!(response.status(), 200);
            let generation: Value = response.json().await.unwrap();
            let status = generation["status"].as_str().unwrap();
            if !matches!(status, "queued" | "running") {
                return generation;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the job did not finish: {generation}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn cancel(&self, credential: &str, id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/generations/{id}/cancel")))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
    }

    async fn images_counted(&self, token: &str) -> u64 {
        self.usage(token)
            .await
            .iter()
            .map(|row| row["count"].as_u64().unwrap())
            .sum()
    }

    /// The fake Google's next `n` answers are 500s.
    async fn fail_upstream(&self, n: u64) {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500).set_body_json(
                json!({"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}),
            ))
            .up_to_n_times(n)
            .with_priority(1)
            .mount(&self.google)
            .await;
    }
}

async fn a_job_is_accepted_at_once_then_runs_to_succeeded(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let response = app
        .submit(
            &key,
            &json!({"prompt": "a banana", "resolution": "2K"}),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        header(&response, "preference-applied").as_deref(),
        Some("respond-async")
    );
    let location = header(&response, "location").unwrap();
    let queued: Value = response.json().await.unwrap();
    let id = queued["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/generations/{id}"));
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["url"], Value::Null);
    assert_eq!(queued["resolution"], "2K");
    assert_eq!(queued["error"], Value::Null);

    let done = app.finished(&key, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["url"].as_str().unwrap().starts_with("http"));
    assert_eq!(done["id"], queued["id"]);
    assert_eq!(done["created_at"], queued["created_at"]);
    assert_eq!(done["cost_usd"], "0.100800");
    assert_eq!(done["error"], Value::Null);
    // The image is where the URL says, counted once.
    let image = app
        .client
        .get(done["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(app.images_counted(&token).await, 1);
    assert_eq!(app.google_requests().await, 1);
    // The account's history lists it with its final state.
    let listed: Value = app
        .get_with("/v1/generations?status=succeeded", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["generations"][0]["id"], queued["id"]);
}

async fn wait_answers_with_the_finished_generation(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let response = app
        .submit(
            &key,
            &json!({"prompt": "a banana"}),
            &[("prefer", "respond-async, wait=20")],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "preference-applied").as_deref(),
        Some("respond-async")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "succeeded", "{body}");
    assert!(body["url"].as_str().is_some());
}

async fn a_refused_image_fails_the_job_with_an_error_object(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    app.refuse_the_next_image().await;
    let queued = app.submitted(&key, &json!({"prompt": "a banana"})).await;
    let failed = app.finished(&key, queued["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "content_rejected");
    assert!(failed["error"]["message"].as_str().unwrap().len() > 10);
    assert_eq!(failed["error_code"], "content_rejected");
    assert_eq!(failed["cost_usd"], "0.000000");
    assert_eq!(app.images_counted(&token).await, 0);
    // A refusal is final: Google was asked once.
    assert_eq!(app.google_requests().await, 1);
}

async fn a_failing_upstream_is_retried_and_the_job_succeeds(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    app.fail_upstream(2).await;
    let queued = app.submitted(&key, &json!({"prompt": "a banana"})).await;
    let done = app.finished(&key, queued["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(app.google_requests().await, 3);
    assert_eq!(app.images_counted(&token).await, 1);
}

async fn after_its_last_attempt_a_job_fails_with_that_attempts_code(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    app.fail_upstream(10).await;
    let queued = app.submitted(&key, &json!({"prompt": "a banana"})).await;
    let failed = app.finished(&key, queued["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "upstream_failed");
    // NB_JOB_MAX_ATTEMPTS (2 here), each without the client's own retries.
    assert_eq!(app.google_requests().await, 2);
    assert_eq!(app.images_counted(&token).await, 0);
}

async fn a_queued_job_is_canceled_and_gives_its_quota_back(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created: Value = app
        .create_key(&token, Some(json!({"limits": {"per_day": 1}})))
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    // No worker runs here: the job stays queued.
    let response = app
        .submit(
            &key,
            &json!({"prompt": "a banana"}),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(header(&response, "x-quota-remaining").as_deref(), Some("0"));
    let queued: Value = response.json().await.unwrap();
    let id = queued["id"].as_str().unwrap();
    // The quota is decided before the 202: the day's one image is reserved.
    let refused = app
        .submit(
            &key,
            &json!({"prompt": "another"}),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_error(refused, 429, "quota_exceeded").await;
    // A queued generation cannot be deleted.
    assert_error(
        app.delete_with(&format!("/v1/generations/{id}"), &token)
            .await,
        409,
        "generation_not_finished",
    )
    .await;

    let canceled = app.cancel(&key, id).await;
    assert_eq!(canceled.status(), 200);
    let canceled: Value = canceled.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(app.finished(&token, id).await["status"], "canceled");
    assert_error(app.cancel(&token, id).await, 409, "not_cancelable").await;
    // Its image was given back.
    assert_eq!(
        app.submit(
            &key,
            &json!({"prompt": "again"}),
            &[("prefer", "respond-async")]
        )
        .await
        .status(),
        202
    );
    assert_eq!(app.google_requests().await, 0);
    // Another account's generation is not found.
    let (other_token, _) = app.user_with_key("bob@example.com").await;
    assert_error(
        app.cancel(&other_token, id).await,
        404,
        "generation_not_found",
    )
    .await;
    let listed: Value = app
        .get_with("/v1/generations?status=queued", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["generations"].as_array().unwrap().len(), 1);
}

async fn a_cancel_and_a_claim_never_both_win(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let repository = app.db.database.clone();
    for _ in 0..10 {
        let queued = app.submitted(&key, &json!({"prompt": "a banana"})).await;
        let id = queued["id"].as_str().unwrap().to_owned();
        let now = OffsetDateTime::now_utc();
        let claim = {
            let repository = repository.clone();
            tokio::spawn(async move {
                repository
                    .claim(now, now + Duration::from_secs(600))
                    .await
                    .unwrap()
            })
        };
        let canceled = app.cancel(&key, &id).await.status();
        let claimed = claim.await.unwrap();
        let claimed_this = claimed
            .as_ref()
            .is_some_and(|job| job.id == GenerationId::parse(&id).unwrap());
        assert!(
            (canceled == 200) != claimed_this,
            "cancel {canceled}, claimed {claimed_this}"
        );
        let status = app.finished_or_running(&key, &id).await;
        assert_eq!(status, if claimed_this { "running" } else { "canceled" });
    }
}

impl TestApp {
    async fn finished_or_running(&self, key: &str, id: &str) -> String {
        let generation: Value = self
            .get_with(&format!("/v1/generations/{id}"), key)
            .await
            .json()
            .await
            .unwrap();
        generation["status"].as_str().unwrap().to_owned()
    }
}

async fn refusals_are_decided_before_the_202_and_leave_no_job(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let refused = app
        .submit(
            &key,
            &json!({"prompt": "a banana", "resolution": "8K"}),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_error(refused, 422, "validation_failed").await;
    let unknown = app
        .submit(
            &key,
            &json!({"prompt": "a banana", "previous_generation_id": format!("gen_{}", uuid::Uuid::nil())}),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_error(unknown, 404, "generation_not_found").await;
    let listed: Value = app
        .get_with("/v1/generations", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["generations"].as_array().unwrap().len(), 0);
}

async fn a_retried_submission_gets_the_same_job(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let headers = [("prefer", "respond-async"), ("idempotency-key", "job-1")];
    let body = json!({"prompt": "a banana"});
    let first = app.submit(&key, &body, &headers).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = app.submit(&key, &body, &headers).await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        header(&again, "idempotent-replayed").as_deref(),
        Some("true")
    );
    let location = format!("/v1/generations/{}", first["id"].as_str().unwrap());
    assert_eq!(header(&again, "location"), Some(location));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    app.finished(&key, first["id"].as_str().unwrap()).await;
    assert_eq!(app.google_requests().await, 1);
}

async fn a_job_queued_too_long_fails_with_queue_timeout(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let queued = app.submitted(&key, &json!({"prompt": "a banana"})).await;
    let failed = app.finished(&key, queued["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "queue_timeout");
    assert_eq!(app.google_requests().await, 0);
}

async fn a_job_no_worker_reaches_still_times_out(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created: Value = app
        .create_key(&token, Some(json!({"limits": {"per_day": 1}})))
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    // No worker on this instance: only the sweep reaches it, after NB_JOB_TIMEOUT_SECONDS.
    let queued = app.submitted(&key, &json!({"prompt": "a banana"})).await;
    let failed = app.finished(&key, queued["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "queue_timeout");
    assert_eq!(app.google_requests().await, 0);
    // Its reserved image was given back.
    assert_eq!(
        app.submit(
            &key,
            &json!({"prompt": "again"}),
            &[("prefer", "respond-async")]
        )
        .await
        .status(),
        202
    );
}

async fn a_conversation_continues_a_finished_job(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let first = app.submitted(&key, &json!({"prompt": "a banana"})).await;
    let id = first["id"].as_str().unwrap();
    app.finished(&key, id).await;
    let second = app
        .submitted(
            &key,
            &json!({"prompt": "make it blue", "previous_generation_id": id}),
        )
        .await;
    let done = app.finished(&key, second["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["previous_generation_id"], first["id"]);
    // The second request carried the first turn.
    let bodies = app.google_bodies().await;
    assert_eq!(bodies[1]["contents"].as_array().unwrap().len(), 3);
}

on_both_backends!(
    a_job_is_accepted_at_once_then_runs_to_succeeded,
    wait_answers_with_the_finished_generation,
    a_refused_image_fails_the_job_with_an_error_object,
    refusals_are_decided_before_the_202_and_leave_no_job,
    a_retried_submission_gets_the_same_job,
    a_conversation_continues_a_finished_job,
);

configured_on_both_backends!(
    a_queued_job_is_canceled_and_gives_its_quota_back => |config| config.jobs.workers = 0,
    a_cancel_and_a_claim_never_both_win => |config| config.jobs.workers = 0,
    a_failing_upstream_is_retried_and_the_job_succeeds => |config| config.upstream.max_retries = 0,
    a_job_queued_too_long_fails_with_queue_timeout => |config| config.jobs.timeout = std::time::Duration::ZERO,
    a_job_no_worker_reaches_still_times_out => |config| {
        config.jobs.workers = 0;
        config.jobs.timeout = std::time::Duration::from_secs(1);
    },
    after_its_last_attempt_a_job_fails_with_that_attempts_code => |config| {
        config.jobs.max_attempts = 2;
        config.upstream.max_retries = 0;
    },
);
