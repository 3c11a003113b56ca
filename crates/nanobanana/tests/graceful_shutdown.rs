//! SIGTERM on the real binary: it stops accepting connections, lets the in-flight generation
//! finish (and be recorded), then exits 0.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use nb_db::{Database, DatabaseUrl, GenerationStore, PoolOptions};
use nb_domain::accounts::UserId;
use nb_domain::ports::{ApiKeyRepository, GenerationRepository};
use nb_testkit::eventually_true;
use serde_json::{Value, json};
use support::{POLL, ServerProcess};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4f4IBiBggFAA1zgcdmk6h0gAAAABJRU5ErkJggg==";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_generation_finish_and_be_recorded() {
    let google = MockServer::start().await;
    let answer = json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}]}, "finishReason": "STOP"}]});
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(answer)
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&google)
        .await;
    let server = ServerProcess::start(|command| {
        command
            .env("GOOGLE_API_KEY", "test-google-key")
            .env("GOOGLE_GEMINI_BASE_URL", google.uri())
            .env("NB_BCRYPT_COST", "4")
            .env("NB_SHUTDOWN_GRACE_SECONDS", "20");
    })
    .await;
    let (port, base) = (server.port, server.base.clone());
    let database_path = server.data_dir().join("nanobanana.db");
    let client = reqwest::Client::new();
    let healthcheck = || {
        Command::new(env!("CARGO_BIN_EXE_nanobanana"))
            .arg("healthcheck")
            .env("NB_LISTEN", format!("0.0.0.0:{port}"))
            .status()
            .unwrap()
            .success()
    };
    assert!(
        healthcheck(),
        "`nanobanana healthcheck` failed against a running server"
    );

    let registered: Value = client
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": "ada@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let user_id = uuid::Uuid::parse_str(registered["user"]["id"].as_str().unwrap()).unwrap();
    let created: Value = client
        .post(format!("{base}/v1/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let key_again = key.clone();

    let in_flight = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/v1/generate"))
                .bearer_auth(key)
                .json(&json!({"prompt": "x"}))
                .send()
                .await
        }
    });
    eventually_true(
        "Google gets the call",
        Duration::from_secs(10),
        POLL,
        || async { !google.received_requests().await.unwrap().is_empty() },
    )
    .await;
    // A second use of the key within the minute: its `last_used_at` is only in memory until
    // the shutdown flush writes it.
    let second_use = time::OffsetDateTime::now_utc();
    let refused = client
        .post(format!("{base}/v1/generate"))
        .bearer_auth(&key_again)
        .json(&json!({"prompt": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let mut server = server;
    server.terminate();

    // New connections are refused while the generation is still running.
    eventually_true(
        "the listener closes",
        Duration::from_secs(5),
        POLL,
        || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_err() },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the listener closed only after the generation had finished"
    );

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let exit = server.wait().await;
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        !healthcheck(),
        "`nanobanana healthcheck` passed with no server"
    );

    let database = Database::connect(&DatabaseUrl::Sqlite(database_path), PoolOptions::default())
        .await
        .unwrap();
    let today = time::OffsetDateTime::now_utc().date();
    let usage = GenerationStore::start(&database)
        .usage_facts(UserId(user_id), today, today, false)
        .await
        .unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(
        usage[0].count, 1,
        "the in-flight generation was not recorded"
    );
    let keys = database
        .list_api_keys(
            UserId(user_id),
            nb_domain::pagination::PageRequest::first(1),
        )
        .await
        .unwrap();
    let last_used = keys.items[0].last_used_at.unwrap();
    assert!(
        last_used >= second_use - time::Duration::milliseconds(1),
        "the last use was lost at shutdown: {last_used} < {second_use}"
    );
}

/// `NB_LOG_FORMAT=json`: every line the binary writes is one JSON object, and a request's line
/// carries its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let mut server = ServerProcess::start(|command| {
        command
            .env("NB_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped());
    })
    .await;
    let client = reqwest::Client::new();
    let tagged = client
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "json-log-check-1")
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.status(), 200);
    let mut stdout = server.take_stdout();
    server.terminate();
    let output = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        text
    })
    .await
    .unwrap();
    assert!(server.wait().await.success());
    let lines: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(lines.len() >= 3, "{output}");
    let request_ids: Vec<&Value> = lines
        .iter()
        .filter(|line| line["fields"]["message"] == "request completed")
        .map(|line| &line["span"]["request_id"])
        .collect();
    assert!(
        request_ids.iter().any(|id| *id == "json-log-check-1"),
        "no request line carries the request id: {request_ids:?}"
    );
}

/// Behind a load balancer: after SIGTERM, `/readyz` answers 503 `draining` for
/// `NB_SHUTDOWN_DRAIN_SECONDS` while requests are still served, then the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_first_readyz_503_while_still_serving() {
    let mut server = ServerProcess::start(|command| {
        command.env("NB_SHUTDOWN_DRAIN_SECONDS", "2");
    })
    .await;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let signalled_at = std::time::Instant::now();
    server.terminate();
    let readiness = || async { client.get(format!("{base}/readyz")).send().await.unwrap() };
    eventually_true(
        "/readyz says draining",
        Duration::from_secs(2),
        POLL,
        || async { readiness().await.status() == 503 },
    )
    .await;
    let draining = readiness().await;
    assert_eq!(draining.status(), 503);
    let body: Value = draining.json().await.unwrap();
    assert_eq!(body["status"], "draining");
    // Still serving, on a new connection too.
    let fresh = reqwest::Client::new();
    let health = fresh.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let status = server.wait().await;
    assert!(status.success(), "{status:?}");
    assert!(
        signalled_at.elapsed() >= Duration::from_secs(2),
        "stopped before the drain"
    );
}
