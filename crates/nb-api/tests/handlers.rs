//! Handlers over mocked services (mockall): what each route answers for each outcome of the
//! service it calls, on the real app in process (`actix_web::test`). No adapter is in
//! sight: the services' own behaviour is the domain's unit tests, and the whole stack on
//! real databases is the `nanobanana` crate's integration tests.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, test, web};
use nb_api::AppState;
use nb_api::body_budget::BodyBudget;
use nb_api::client_address::ClientAddressSource;
use nb_api::configure_app;
use nb_api::extract::credentials::ApiKeyCaller;
use nb_api::openai::model_map::OpenAiModelMap;
use nb_api::settings::ServerSettings;
use nb_api::tokens::AccessTokens;
use nb_domain::RepositoryError;
use nb_domain::accounts::{
    EmailAddress, MockAccounts, MockErasure, RegisterError, Session, SessionId, User, UserId,
};
use nb_domain::admin::MockAdministration;
use nb_domain::api_keys::{
    ApiKeyId, AuthenticateKeyError, AuthenticatedApiKey, CreateKeyError, MockApiKeys,
};
use nb_domain::generation::{
    AllowedModels, GenerateError, GenerationBatch, GenerationStatus, HistoryError,
    InputImageLimits, MockGenerations, MockHistory, MockJobs, StorageError,
};
use nb_domain::idempotency::MockIdempotency;
use nb_domain::rate_limit::{MockThrottling, RateDecision, RateLimitError, ThrottleError};
use nb_domain::readiness::{MockReadinessCheck, NotReady};
use nb_domain::system::{MockClock, RandomnessUnavailable};
use nb_domain::webhooks::{AttemptResult, MockWebhooks, WebhookError};
use serde_json::{Value, json};
use uuid::Uuid;

const USER: Uuid = Uuid::from_u128(99);
const SECRET_CAUSE: &str = "connection to 10.0.0.7 refused: password authentication failed";

/// Every service the app holds, mocked; each test sets what its route calls.
struct Services {
    accounts: MockAccounts,
    api_keys: MockApiKeys,
    generations: MockGenerations,
    jobs: MockJobs,
    webhooks: MockWebhooks,
    throttle: MockThrottling,
    readiness: MockReadinessCheck,
}

fn ada() -> User {
    User {
        id: UserId(USER),
        email: EmailAddress::parse("ada@example.com").unwrap(),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        disabled: false,
    }
}

fn within_limits() -> RateDecision {
    RateDecision {
        allowed: true,
        limit: 60,
        remaining: 59,
        reset_after: Duration::from_secs(1),
        retry_after: Duration::ZERO,
    }
}

impl Services {
    /// Signed-in sessions are Ada's, keys are valid, limits allow everything.
    fn new() -> Self {
        let mut accounts = MockAccounts::new();
        accounts.expect_signed_in_user().returning(|_, _| Ok(ada()));
        let mut api_keys = MockApiKeys::new();
        api_keys.expect_authenticate().returning(|_| {
            Ok(AuthenticatedApiKey::unlimited(
                ApiKeyId(Uuid::from_u128(5)),
                UserId(USER),
            ))
        });
        let mut generations = MockGenerations::new();
        generations
            .expect_models()
            .return_const(AllowedModels::new(["gemini-3.1-flash-image".to_owned()]).unwrap());
        generations
            .expect_now()
            .return_const(time::macros::datetime!(2026-12-07 12:00 UTC));
        let mut throttle = MockThrottling::new();
        throttle.expect_auth_attempt().returning(|_, _| Ok(()));
        throttle
            .expect_generation()
            .returning(|_| Ok(within_limits()));
        Self {
            accounts,
            api_keys,
            generations,
            jobs: MockJobs::new(),
            webhooks: MockWebhooks::new(),
            throttle,
            readiness: MockReadinessCheck::new(),
        }
    }

    /// The app's state, and an access token of Ada's.
    fn into_state(self) -> (web::Data<AppState>, String) {
        let mut clock = MockClock::new();
        clock.expect_now().returning(time::OffsetDateTime::now_utc);
        let tokens = AccessTokens::new(&[7; 32], Duration::from_secs(60), Arc::new(clock));
        let now = time::OffsetDateTime::now_utc();
        let session = Session {
            id: SessionId(Uuid::now_v7()),
            user_id: UserId(USER),
            created_at: now,
            expires_at: now + Duration::from_secs(60),
        };
        let token = tokens.issue(&session).unwrap().token;
        let state = AppState {
            accounts: Arc::new(self.accounts),
            erasure: Arc::new(MockErasure::new()),
            api_keys: Arc::new(self.api_keys),
            admin: Arc::new(MockAdministration::new()),
            generations: Arc::new(self.generations),
            history: Arc::new(MockHistory::new()),
            jobs: Arc::new(self.jobs),
            webhooks: Arc::new(self.webhooks),
            idempotency: Arc::new(MockIdempotency::new()),
            throttle: Arc::new(self.throttle),
            access_tokens: tokens,
            served_images: None,
            readiness: Arc::new(self.readiness),
            shared_state: None,
            upstream_keys: None,
            console_policy: nb_api::console::content_security_policy(""),
            server: ServerSettings::default(),
            body_budget: BodyBudget::new(
                ServerSettings::default().max_body_bytes_in_flight,
                ServerSettings::default().max_body_bytes,
            ),
            input_images: InputImageLimits::default(),
            max_images_per_request: nb_domain::generation::DEFAULT_MAX_IMAGES_PER_REQUEST,
            openai_models: OpenAiModelMap::empty(),
            client_addresses: ClientAddressSource {
                trusted_proxy_hops: 0,
            },
            metrics_token: None,
            draining: Arc::default(),
        };
        (web::Data::new(state), token)
    }
}

async fn call(state: web::Data<AppState>, request: test::TestRequest) -> (StatusCode, Value) {
    let app = test::init_service(App::new().configure(configure_app(state))).await;
    let response = test::call_service(&app, request.to_request()).await;
    let status = response.status();
    let body: Value = test::read_body_json(response).await;
    (status, body)
}

fn unavailable() -> RepositoryError {
    RepositoryError::Unavailable(SECRET_CAUSE.into())
}

fn generate_request() -> test::TestRequest {
    test::TestRequest::post()
        .uri("/v1/generate")
        .insert_header((
            "authorization",
            format!("Bearer nb_live_{}", "a".repeat(32)),
        ))
        .set_json(json!({"prompt": "a banana"}))
}

fn failed_batch(error: GenerateError) -> GenerationBatch {
    GenerationBatch {
        result: Err(error),
        standings: Default::default(),
    }
}

#[actix_web::test]
async fn an_unreachable_database_is_503_database_unavailable() {
    let mut services = Services::new();
    services
        .accounts
        .expect_register()
        .returning(|_, _| Err(RegisterError::Repository(unavailable())));
    let (state, _) = services.into_state();
    let request = test::TestRequest::post()
        .uri("/v1/auth/register")
        .set_json(json!({"email": "ada@example.com", "password": "long enough"}));
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "database_unavailable");
    assert!(!body.to_string().contains("10.0.0.7"));
}

#[actix_web::test]
async fn an_unexpected_database_error_is_an_opaque_500() {
    let mut services = Services::new();
    services
        .api_keys
        .expect_list()
        .returning(|_, _| Err(RepositoryError::Unexpected(SECRET_CAUSE.into())));
    let (state, token) = services.into_state();
    let request = test::TestRequest::get()
        .uri("/v1/keys")
        .insert_header(("authorization", format!("Bearer {token}")));
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "internal_error");
    assert!(!body.to_string().contains("password authentication"));
}

#[actix_web::test]
async fn no_randomness_means_no_key_and_an_opaque_500() {
    let mut services = Services::new();
    services
        .api_keys
        .expect_create()
        .times(1)
        .returning(|_, _| Err(CreateKeyError::Randomness(RandomnessUnavailable)));
    let (state, token) = services.into_state();
    let request = test::TestRequest::post()
        .uri("/v1/keys")
        .insert_header(("authorization", format!("Bearer {token}")));
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "internal_error");
}

#[actix_web::test]
async fn a_storage_failure_is_502_without_its_cause() {
    let mut services = Services::new();
    services
        .generations
        .expect_generate_images()
        .returning(|_, _, _| {
            failed_batch(GenerateError::Storage(StorageError::Failed(
                SECRET_CAUSE.into(),
            )))
        });
    let (state, _) = services.into_state();
    let (status, body) = call(state, generate_request()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "storage_failed");
    assert!(!body.to_string().contains("10.0.0.7"));
}

#[actix_web::test]
async fn a_database_outage_while_recording_is_503() {
    let mut services = Services::new();
    services
        .generations
        .expect_generate_images()
        .returning(|_, _, _| failed_batch(GenerateError::Repository(unavailable())));
    let (state, _) = services.into_state();
    let (status, body) = call(state, generate_request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "database_unavailable");
}

#[actix_web::test]
async fn api_key_checks_on_an_unreachable_database_are_503_not_401() {
    let mut services = Services::new();
    services.api_keys = MockApiKeys::new();
    services
        .api_keys
        .expect_authenticate()
        .returning(|_| Err(AuthenticateKeyError::Repository(unavailable())));
    let (state, _) = services.into_state();
    let app = test::init_service(
        App::new()
            .route("/probe", web::get().to(|_: ApiKeyCaller| async { "ok" }))
            .configure(configure_app(state)),
    )
    .await;
    let request = test::TestRequest::get()
        .uri("/probe")
        .insert_header((
            "authorization",
            format!("Bearer nb_live_{}", "a".repeat(32)),
        ))
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// The store that counts limits (Redis) is down: a 503 of its own, never a request let
/// through uncounted; the database's own outage keeps its code.
#[actix_web::test]
async fn a_limiter_that_cannot_count_is_503_and_the_work_never_runs() {
    for (error, code) in [
        (
            RateLimitError::Unavailable(SECRET_CAUSE.into()),
            "rate_limiter_unavailable",
        ),
        (
            RateLimitError::Repository(unavailable()),
            "database_unavailable",
        ),
    ] {
        let mut services = Services::new();
        services.throttle = MockThrottling::new();
        let error = std::sync::Mutex::new(Some(error));
        services.throttle.expect_generation().returning(move |_| {
            Err(ThrottleError::Limiter(
                error.lock().unwrap().take().unwrap(),
            ))
        });
        services.generations.expect_generate_images().never();
        let (state, _) = services.into_state();
        let app = test::init_service(App::new().configure(configure_app(state))).await;
        let response = test::call_service(&app, generate_request().to_request()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["error"]["code"], code);
        assert!(!body.to_string().contains("10.0.0.7"));
    }
}

#[actix_web::test]
async fn readiness_reports_which_check_failed() {
    for (problem, database, migrations) in [
        (
            NotReady::DatabaseUnreachable(SECRET_CAUSE.into()),
            "unreachable",
            "unknown",
        ),
        (
            NotReady::MigrationsPending("20261125000002".into()),
            "ok",
            "pending",
        ),
    ] {
        let mut services = Services::new();
        let problem = std::sync::Mutex::new(Some(problem));
        services
            .readiness
            .expect_check_ready()
            .returning(move || Err(problem.lock().unwrap().take().unwrap()));
        let (state, _) = services.into_state();
        let (status, body) = call(state, test::TestRequest::get().uri("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["database"], database);
        assert_eq!(body["checks"]["migrations"], migrations);
        assert!(!body.to_string().contains("10.0.0.7"));
    }
}

/// A browser that opens the server's address lands on the console; an API client (curl,
/// SDKs: `*/*` or JSON) gets a JSON answer saying where things are.
#[actix_web::test]
async fn the_front_door_sends_browsers_to_the_console() {
    let (state, _) = Services::new().into_state();
    let app = test::init_service(App::new().configure(configure_app(state))).await;
    let browser = test::TestRequest::get()
        .uri("/")
        .insert_header((
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ))
        .to_request();
    let response = test::call_service(&app, browser).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers().get("location").unwrap(), "/console/");
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut client = test::TestRequest::get().uri("/");
        if let Some(accept) = accept {
            client = client.insert_header(("accept", accept));
        }
        let response = test::call_service(&app, client.to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{accept:?}");
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["console"], "/console/", "{accept:?}");
        assert_eq!(body["openapi"], "/openapi.json", "{accept:?}");
    }
}

#[actix_web::test]
async fn prefer_respond_async_submits_a_job_instead_of_generating() {
    let mut services = Services::new();
    services.generations.expect_generate_images().never();
    services
        .jobs
        .expect_submit()
        .times(1)
        .returning(|_, _| Err(GenerateError::Repository(unavailable())));
    let (state, _) = services.into_state();
    let request = generate_request().insert_header(("prefer", "respond-async"));
    let (status, body) = call(state, request).await;
    // The refusal is the synchronous route's: the job was never committed.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "database_unavailable");
    assert!(!body.to_string().contains("10.0.0.7"));
}

#[actix_web::test]
async fn canceling_a_running_job_is_409_not_cancelable() {
    let mut services = Services::new();
    services.jobs.expect_cancel().returning(|_, _| {
        Err(HistoryError::NotCancelable {
            status: GenerationStatus::Running,
        })
    });
    let (state, token) = services.into_state();
    let request = test::TestRequest::post()
        .uri(&format!(
            "/v1/generations/gen_{}/cancel",
            Uuid::from_u128(7)
        ))
        .insert_header(("authorization", format!("Bearer {token}")));
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "not_cancelable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running")
    );
}

#[actix_web::test]
async fn a_webhook_test_event_answers_how_it_went() {
    let mut services = Services::new();
    services
        .webhooks
        .expect_send_test()
        .withf(|user, id| *user == UserId(USER) && id.0 == Uuid::from_u128(8))
        .returning(|_, _| {
            Ok(AttemptResult {
                status_code: Some(500),
                error: None,
                duration: Duration::from_millis(7),
            })
        });
    let (state, token) = services.into_state();
    let request = test::TestRequest::post()
        .uri(&format!("/v1/webhooks/wh_{}/test", Uuid::from_u128(8)))
        .insert_header(("authorization", format!("Bearer {token}")));
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"delivered": false, "status_code": 500, "error": null, "duration_ms": 7})
    );
}

#[actix_web::test]
async fn a_webhook_test_event_without_webhooks_configured_is_503() {
    let mut services = Services::new();
    services
        .webhooks
        .expect_send_test()
        .returning(|_, _| Err(WebhookError::NotConfigured));
    let (state, token) = services.into_state();
    let request = test::TestRequest::post()
        .uri(&format!("/v1/webhooks/wh_{}/test", Uuid::from_u128(8)))
        .insert_header(("authorization", format!("Bearer {token}")));
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "webhooks_not_configured");
}
