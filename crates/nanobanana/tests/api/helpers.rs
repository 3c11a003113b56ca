//! A real server on a real socket, against a fresh database, for each test.

use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use nanobanana::config::Config;
use nanobanana::config::sections::{AdminEmailList, JwtSecret, ModelNames, StorageBackend};
use nanobanana::startup::{bind, wire_with_clock};
use nb_api::extract::credentials::ApiKeyCaller;
use nb_api::serve;
use nb_api::settings::ListenAddress;
use nb_db::testing::TestDatabase;
use nb_domain::ports::Clock;
use nb_imagen::{GeminiSettings, GoogleApiKey};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::num::{NonZeroU32, NonZeroUsize};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const TEST_JWT_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";
pub const PASSWORD: &str = "correct horse battery staple";
pub const GOOGLE_KEY: &str = "AIzaSy-test-google-api-key-000";
/// The test server's one admin account (`NB_ADMIN_EMAILS`).
pub const ADMIN_EMAIL: &str = "root@example.com";
pub const MODEL: &str = "gemini-3.1-flash-image";
/// The 2x2 PNG of the captured Gemini response (`crates/nb-imagen/tests/wire`).
pub const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4f4IBiBggFAA1zgcdmk6h0gAAAABJRU5ErkJggg==";

pub fn png_bytes() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(PNG_BASE64)
        .unwrap()
}

/// Gemini's answer with one image, as captured from the API.
pub fn gemini_image_answer() -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}]}, "finishReason": "STOP", "index": 0}], "modelVersion": MODEL})
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub struct TestApp {
    pub address: String,
    /// Unique to this app: routes and labels with it in their name are this test's alone,
    /// though every test in the process shares one metrics recorder.
    pub app_id: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    /// A local fake of Google's API; by default every `:generateContent` gets an image.
    pub google: MockServer,
    pub data_dir: tempfile::TempDir,
    /// The server's clock: the system's, moved by what the test adds.
    pub clock: Arc<ShiftedClock>,
    /// The server's history service, for the jobs it runs on its own (the orphan sweep).
    pub history: std::sync::Arc<nb_domain::generation::HistoryService>,
    /// Stops the server's job workers (they stop when it is dropped, too).
    pub _stop_jobs: tokio::sync::watch::Sender<bool>,
    /// The server's job workers (dropping the set aborts them).
    pub _job_workers: tokio::task::JoinSet<()>,
}

/// The system clock plus an offset a test can move (to cross a UTC midnight without
/// waiting for one). Access tokens are checked against the system clock as well, so a test
/// that moves it uses API keys from then on.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset: std::sync::Mutex<time::Duration>,
}

impl ShiftedClock {
    /// Moves the clock to `at` from now on.
    pub fn set(&self, at: time::OffsetDateTime) {
        *self.offset.lock().unwrap() = at - time::OffsetDateTime::now_utc();
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> time::OffsetDateTime {
        nb_domain::ports::to_microseconds(
            time::OffsetDateTime::now_utc() + *self.offset.lock().unwrap(),
        )
    }
}

pub fn test_config(data_dir: PathBuf, db: &TestDatabase, google: &MockServer) -> Config {
    let per_minute = |n| NonZeroU32::new(n).unwrap();
    let mut config = Config {
        data_dir,
        ..Config::default()
    };
    config.upstream = GeminiSettings {
        base_url: google.uri(),
        attempt_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(20),
        max_retries: 2,
        ..GeminiSettings::new(GoogleApiKey::new(GOOGLE_KEY.into()))
    };
    config.models.enabled = ModelNames(vec![MODEL.to_owned(), "gemini-3-pro-image".to_owned()]);
    config.limits.auth_attempts_per_minute_per_ip = per_minute(1000);
    config.limits.auth_attempts_per_minute_per_email_and_ip = per_minute(1000);
    config.limits.auth_attempts_per_minute_per_email = per_minute(1000);
    config.limits.generations_per_minute_per_key = per_minute(1000);
    config.limits.generations_per_minute_per_account = per_minute(1000);
    config.security.admin_emails = AdminEmailList(nb_domain::admin::AdminEmails::new(vec![
        nb_domain::accounts::EmailAddress::parse(ADMIN_EMAIL).unwrap(),
    ]));
    config.security.jwt_secret =
        Some(JwtSecret::try_from(SecretString::from(TEST_JWT_SECRET)).unwrap());
    config.security.access_token_ttl = Duration::from_secs(3600);
    config.security.encryption_key = Some(nanobanana::config::sections::EncryptionKey::from_bytes(
        *b"an encryption key for tests only",
    ));
    config.security.bcrypt_cost = 4;
    config.server.listen = ListenAddress::try_from("127.0.0.1:0".to_owned()).unwrap();
    config.server.workers = NonZeroUsize::new(2);
    config.database.url = Some(db.url.clone());
    use_pool(&mut config, nb_db::testing::test_pool_options());
    config
}

/// The database pool of `options`.
pub fn use_pool(config: &mut Config, options: nb_db::PoolOptions) {
    config.database.pool_size = options.max_connections;
    config.database.acquire_timeout = options.acquire_timeout;
    config.database.statement_timeout = options.statement_timeout;
}

/// Images in the S3 store of `settings`.
pub fn store_in_s3(config: &mut Config, settings: nb_storage::S3Settings) {
    config.storage.backend = Some(StorageBackend::S3);
    config.storage.s3 = Some(settings);
}

/// Answers which key called: a probe of the API-key extractor alone.
async fn api_key_probe(ApiKeyCaller(caller): ApiKeyCaller) -> HttpResponse {
    HttpResponse::Ok().json(
        json!({"key_id": caller.key_id.0.to_string(), "user_id": caller.user_id.0.to_string()}),
    )
}

pub const API_KEY_PROBE: &str = "/test/api-key-caller";

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A server whose configuration `adjust` may change first.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let db = match backend {
            Backend::Postgres => TestDatabase::postgres().await,
            Backend::Sqlite => TestDatabase::sqlite().await,
        };
        Self::spawn_on(db, adjust).await
    }

    /// A server on a database the test made.
    pub async fn spawn_on(db: TestDatabase, adjust: impl FnOnce(&mut Config)) -> Self {
        let google = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/v1beta/models/[^/]+:generateContent$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(gemini_image_answer()))
            .with_priority(u8::MAX)
            .mount(&google)
            .await;
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(data_dir.path().to_owned(), &db, &google);
        adjust(&mut config);
        let listener = bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let clock = Arc::new(ShiftedClock::default());
        let wired = wire_with_clock(&config, db.database.clone(), address, clock.clone()).unwrap();
        wired.maintenance.spawn();
        let history = wired.maintenance.history();
        let (stop_jobs, job_workers) =
            nanobanana::startup::start_workers(&wired.jobs, &wired.webhooks);
        let app_id = uuid::Uuid::new_v4().simple().to_string();
        let echo_route = format!("/test/{app_id}/echo/{{n}}");
        let server = serve(listener, wired.state, move |routes| {
            routes
                .route(API_KEY_PROBE, web::get().to(api_key_probe))
                .route(&echo_route, web::get().to(HttpResponse::NoContent));
        })
        .unwrap();
        tokio::spawn(server);
        Self {
            address: format!("http://{address}"),
            app_id,
            client: reqwest::Client::new(),
            db,
            google,
            data_dir,
            clock,
            history,
            _stop_jobs: stop_jobs,
            _job_workers: job_workers,
        }
    }

    /// `POST /v1/generate` with `key` and `body`.
    pub async fn generate(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/generate"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/generate`, which must succeed: its JSON body.
    pub async fn generated(&self, key: &str, body: &Value) -> Value {
        let response = self.generate(key, body).await;
        assert_eq!(response.status(), 200, "generation failed");
        response.json().await.unwrap()
    }

    /// Sends `bytes` on a raw connection and reads until the server closes it or
    /// `read_timeout` passes: whether the server closed it, and what it answered.
    pub async fn raw_exchange(
        &self,
        bytes: &'static [u8],
        read_timeout: Duration,
    ) -> (bool, String) {
        use std::io::{Read, Write};
        let address = self.address.trim_start_matches("http://").to_owned();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(read_timeout)).unwrap();
            stream.write_all(bytes).unwrap();
            let mut answer = Vec::new();
            let read = stream.read_to_end(&mut answer);
            (read.is_ok(), String::from_utf8_lossy(&answer).into_owned())
        })
        .await
        .unwrap()
    }

    /// A registered user's access token and one of their API keys.
    pub async fn user_with_key(&self, email: &str) -> (String, String) {
        let token = self.signed_up(email).await;
        let (_, key) = self.created_key(&token).await;
        (token, key)
    }

    /// The user's counted usage: `(api_key_id, day, count)` rows.
    /// A signed-in user's GET of `path`, its body as JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        self.get_with(path, token).await.json().await.unwrap()
    }

    pub async fn usage(&self, token: &str) -> Vec<Value> {
        let response = self.get_with("/v1/usage", token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["usage"].as_array().unwrap().clone()
    }

    /// The fake Google's next answer (only) is the model's refusal: text and `IMAGE_SAFETY`,
    /// no image.
    pub async fn refuse_the_next_image(&self) {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"candidates": [{"content": {"parts": [{"text": "no"}]}, "finishReason": "IMAGE_SAFETY"}]}),
            ))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&self.google)
            .await;
    }

    /// How many requests the fake Google received.
    pub async fn google_requests(&self) -> usize {
        self.google.received_requests().await.unwrap().len()
    }

    /// The JSON bodies Google received, in order.
    pub async fn google_bodies(&self) -> Vec<Value> {
        self.google
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|request| serde_json::from_slice(&request.body).unwrap())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/register",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers `email` and returns its access token.
    pub async fn signed_up(&self, email: &str) -> String {
        let response = self.register(email, PASSWORD).await;
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn get_with(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_with(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn create_key(&self, token: &str, body: Option<Value>) -> reqwest::Response {
        let request = self
            .client
            .post(self.url("/v1/keys"))
            .header(AUTHORIZATION, format!("Bearer {token}"));
        let request = match body {
            Some(body) => request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string()),
            None => request,
        };
        request.send().await.unwrap()
    }

    /// Creates a key and returns `(id, full key)`.
    pub async fn created_key(&self, token: &str) -> (String, String) {
        let response = self.create_key(token, Some(json!({"name": "test"}))).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }

    /// The first page of the user's keys (room for all a test makes).
    pub async fn list_keys(&self, token: &str) -> Vec<Value> {
        let response = self.get_with("/v1/keys?limit=100", token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["next_cursor"], Value::Null);
        body["keys"].as_array().unwrap().clone()
    }
}

/// Asserts the JSON error shape and returns the body.
/// A response header's value, when it has one.
pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Runs each named async test function once per backend, as `postgres::name` and
/// `sqlite::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await).await;
            })*
        }
    };
}

pub const S3_ACCESS_KEY: &str = "nb-test-r2-access";
pub const S3_SECRET_KEY: &str = "nb-test-r2-secret-0123456789abcdef";
pub const S3_BUCKET: &str = "nanobanana-images";

/// Settings for an S3 test server (a real, SigV4-checking S3 protocol server on loopback).
pub fn s3_settings(server: &nb_storage::testing::S3TestServer) -> nb_storage::S3Settings {
    nb_storage::S3Settings {
        account_id: None,
        endpoint: Some(server.endpoint.clone()),
        region: "auto".into(),
        access_key: S3_ACCESS_KEY.into(),
        secret_key: nb_storage::S3Secret::new(S3_SECRET_KEY.into()),
        bucket: S3_BUCKET.into(),
        public_url: None,
        presign_expiry: Duration::from_secs(900),
        request_timeout: Duration::from_secs(10),
    }
}

/// Runs each named async test function once per backend, on a server whose configuration the
/// given closure adjusts first: `configured::<name>::postgres` and `configured::<name>::sqlite`.
#[macro_export]
macro_rules! configured_on_both_backends {
    ($($name:ident => $adjust:expr),* $(,)?) => {
        mod configured {
            $(mod $name {
                #[allow(unused_imports)]
                use super::super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let app = $crate::helpers::TestApp::spawn_with($crate::helpers::Backend::Postgres, $adjust).await;
                    super::super::$name(app).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::helpers::TestApp::spawn_with($crate::helpers::Backend::Sqlite, $adjust).await;
                    super::super::$name(app).await;
                }
            })*
        }
    };
}
