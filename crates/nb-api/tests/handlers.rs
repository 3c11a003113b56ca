//! Handler behaviour on failures a real database will not produce on demand: the ports are
//! mockall mocks, the app is the real one (in-process, `actix_web::test`).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, test, web};
use bytes::Bytes;
use nb_domain::RepositoryError;
use nb_domain::accounts::{AccountErasure, ErasurePorts};
use nb_domain::accounts::{AccountPorts, AccountService};
use nb_domain::accounts::{EmailAddress, PasswordHash, Session, SessionId, User, UserId};
use nb_domain::admin::{AdminEmails, AdminPorts, AdminService};
use nb_domain::api_keys::{
    ApiKeyId, ApiKeyPorts, ApiKeyService, AuthenticatedApiKey, KeyAccess, KeyPolicy,
};
use nb_domain::generation::{
    AllowedModels, GeneratedImage, GenerationOutcome, GenerationPorts, GenerationService,
    HistoryPorts, HistoryService, StorageError, StoredImage,
};
use nb_domain::idempotency::{IdempotencyPolicy, IdempotencyPorts, IdempotencyService};
use nb_domain::ports::{
    MockAdminRepository, MockApiKeyRepository, MockGenerationRepository, MockHistoryRepository,
    MockIdempotencyRepository, MockImageProvider, MockKeyInvalidation, MockObjectStorage,
    MockPasswordHasher, MockQuotaRepository, MockRandomSource, MockReadinessCheck,
    MockSessionRepository, MockUserRepository, NotReady, RandomnessUnavailable,
};
use nb_domain::rate_limit::{Limits as RateLimits, PerMinute, Throttle};
use nb_http::auth::AccessTokens;
use nb_http::config::{JwtSecret, Limits};
use nb_http::rate_limit::{ClientAddressSource, MemoryRateLimiter};
use nb_http::startup::configure_app;
use nb_http::state::AppState;
use nb_http::system::{SystemClock, UuidV7Ids};
use serde_json::{Value, json};
use uuid::Uuid;

const USER: Uuid = Uuid::from_u128(99);
const SECRET_CAUSE: &str = "connection to 10.0.0.7 refused: password authentication failed";

struct Mocks {
    users: MockUserRepository,
    sessions: MockSessionRepository,
    keys: MockApiKeyRepository,
    random: MockRandomSource,
    provider: MockImageProvider,
    storage: MockObjectStorage,
    generations: MockGenerationRepository,
    readiness: MockReadinessCheck,
    usage: MockGenerationRepository,
    quotas: MockQuotaRepository,
    admin: MockAdminRepository,
}

impl Mocks {
    fn new() -> Self {
        let mut sessions = MockSessionRepository::new();
        sessions.expect_find_session_user().returning(|id, _, _| {
            Ok(Some(User {
                id,
                email: EmailAddress::parse("ada@example.com").unwrap(),
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                disabled: false,
            }))
        });
        let mut keys = MockApiKeyRepository::new();
        keys.expect_record_key_uses().returning(|_| Ok(()));
        keys.expect_find_active_api_key().returning(|_| {
            Ok(Some(KeyAccess {
                key: AuthenticatedApiKey::unlimited(ApiKeyId(Uuid::from_u128(5)), UserId(USER)),
                expires_at: None,
                account_disabled: false,
            }))
        });
        let mut provider = MockImageProvider::new();
        provider.expect_generate().returning(|_| {
            Ok(GeneratedImage::from_bytes(Bytes::from_static(b"\x89PNG\r\n\x1a\nimage")).unwrap())
        });
        Self {
            users: MockUserRepository::new(),
            sessions,
            keys,
            random: MockRandomSource::new(),
            provider,
            storage: MockObjectStorage::new(),
            generations: MockGenerationRepository::new(),
            readiness: MockReadinessCheck::new(),
            usage: MockGenerationRepository::new(),
            quotas: MockQuotaRepository::new(),
            admin: MockAdminRepository::new(),
        }
    }

    fn into_state(self) -> (web::Data<AppState>, String) {
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .returning(|_| Ok(PasswordHash::new("$2b$04$x".into())));
        let secret = JwtSecret::new(vec![7; 32]).unwrap();
        let tokens = AccessTokens::new(&secret, Duration::from_secs(60), Arc::new(SystemClock));
        let now = time::OffsetDateTime::now_utc();
        let session = Session {
            id: SessionId(Uuid::now_v7()),
            user_id: UserId(USER),
            created_at: now,
            expires_at: now + Duration::from_secs(60),
        };
        let token = tokens.issue(&session).unwrap().token;
        let per_minute = |n| PerMinute::new(n).unwrap();
        let throttle = Throttle::new(
            Arc::new(MemoryRateLimiter::default()),
            RateLimits {
                auth_per_address: per_minute(100),
                auth_per_email_and_address: per_minute(100),
                auth_per_email: per_minute(100),
                generations_per_key: per_minute(100),
                generations_per_account: per_minute(100),
            },
        );
        let keys = Arc::new(self.keys);
        let users = Arc::new(self.users);
        let state = AppState {
            accounts: AccountService::new(
                AccountPorts {
                    users: users.clone(),
                    sessions: Arc::new(self.sessions),
                    hasher: Arc::new(hasher),
                    clock: Arc::new(SystemClock),
                    ids: Arc::new(UuidV7Ids),
                },
                Duration::from_secs(60),
            ),
            erasure: AccountErasure::new(ErasurePorts {
                users: users.clone(),
                hasher: Arc::new(MockPasswordHasher::new()),
                storage: Arc::new(MockObjectStorage::new()),
                invalidation: Arc::new(MockKeyInvalidation::new()),
                clock: Arc::new(SystemClock),
            }),
            api_keys: ApiKeyService::new(
                ApiKeyPorts {
                    keys: keys.clone(),
                    usage: Arc::new(self.usage),
                    random: Arc::new(self.random),
                    clock: Arc::new(SystemClock),
                    ids: Arc::new(UuidV7Ids),
                },
                KeyPolicy::default(),
            ),
            admin: AdminService::new(
                AdminPorts {
                    accounts: Arc::new(self.admin),
                    users,
                    keys,
                    invalidation: Arc::new(MockKeyInvalidation::new()),
                    clock: Arc::new(SystemClock),
                    ids: Arc::new(UuidV7Ids),
                },
                AdminEmails::default(),
            ),
            generations: GenerationService::new(
                GenerationPorts {
                    provider: Arc::new(self.provider),
                    test_provider: Arc::new(nb_imagen::TestModeImages),
                    storage: Arc::new(self.storage),
                    generations: Arc::new(self.generations),
                    quotas: Arc::new(self.quotas),
                    clock: Arc::new(SystemClock),
                    ids: Arc::new(UuidV7Ids),
                },
                AllowedModels::new(["gemini-3.1-flash-image".to_owned()]).unwrap(),
            ),
            history: HistoryService::new(HistoryPorts {
                generations: Arc::new(MockHistoryRepository::new()),
                storage: Arc::new(MockObjectStorage::new()),
                clock: Arc::new(SystemClock),
            }),
            idempotency: IdempotencyService::new(
                IdempotencyPorts {
                    entries: Arc::new(MockIdempotencyRepository::new()),
                    clock: Arc::new(SystemClock),
                    ids: Arc::new(UuidV7Ids),
                },
                IdempotencyPolicy {
                    keep_for: Duration::from_secs(60),
                    lease: Duration::from_secs(60),
                },
            ),
            access_tokens: tokens,
            served_images: None,
            readiness: Arc::new(self.readiness),
            shared_state: None,
            console_policy: nb_http::console::content_security_policy(""),
            limits: Limits::default(),
            input_images: nb_domain::generation::InputImageLimits::default(),
            openai_models: nb_http::openai::OpenAiModelMap::empty(),
            throttle,
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

#[actix_web::test]
async fn an_unreachable_database_is_503_database_unavailable() {
    let mut mocks = Mocks::new();
    mocks
        .users
        .expect_insert_user()
        .returning(|_| Err(unavailable().into()));
    let (state, _) = mocks.into_state();
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
    let mut mocks = Mocks::new();
    mocks
        .keys
        .expect_list_api_keys()
        .returning(|_, _| Err(RepositoryError::Unexpected(SECRET_CAUSE.into())));
    let (state, token) = mocks.into_state();
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
    let mut mocks = Mocks::new();
    mocks
        .random
        .expect_fill_bytes()
        .returning(|_| Err(RandomnessUnavailable));
    mocks.keys.expect_insert_api_key().never();
    let (state, token) = mocks.into_state();
    let request = test::TestRequest::post()
        .uri("/v1/keys")
        .insert_header(("authorization", format!("Bearer {token}")));
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "internal_error");
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

#[actix_web::test]
async fn a_storage_failure_is_502_and_recorded_as_failed() {
    let mut mocks = Mocks::new();
    mocks
        .storage
        .expect_put()
        .returning(|_, _| Err(StorageError::Failed(SECRET_CAUSE.into())));
    mocks
        .generations
        .expect_record()
        .withf(|record| {
            record.outcome
                == GenerationOutcome::Failed {
                    code: "storage_failed",
                }
        })
        .times(1)
        .returning(|_| Ok(()));
    let (state, _) = mocks.into_state();
    let (status, body) = call(state, generate_request()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "storage_failed");
    assert!(!body.to_string().contains("10.0.0.7"));
}

#[actix_web::test]
async fn a_database_outage_while_recording_is_503() {
    let mut mocks = Mocks::new();
    mocks.storage.expect_put().returning(|_, _| {
        Ok(StoredImage {
            url: "http://x/images/a.png".into(),
            url_is_lasting: true,
        })
    });
    mocks
        .generations
        .expect_record()
        .returning(|_| Err(unavailable()));
    // The image no row points at is removed again.
    mocks.storage.expect_delete().times(1).returning(|_| Ok(()));
    let (state, _) = mocks.into_state();
    let (status, body) = call(state, generate_request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "database_unavailable");
}

#[actix_web::test]
async fn api_key_checks_on_an_unreachable_database_are_503_not_401() {
    let mut mocks = Mocks::new();
    mocks.keys = MockApiKeyRepository::new();
    mocks
        .keys
        .expect_find_active_api_key()
        .returning(|_| Err(unavailable()));
    let (state, _) = mocks.into_state();
    let app = test::init_service(
        App::new()
            .route(
                "/probe",
                web::get().to(|_: nb_http::auth::ApiKeyCaller| async { "ok" }),
            )
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
        let mut mocks = Mocks::new();
        let problem = std::sync::Mutex::new(Some(problem));
        mocks
            .readiness
            .expect_check_ready()
            .returning(move || Err(problem.lock().unwrap().take().unwrap()));
        let (state, _) = mocks.into_state();
        let (status, body) = call(state, test::TestRequest::get().uri("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["database"], database);
        assert_eq!(body["checks"]["migrations"], migrations);
    }
}
