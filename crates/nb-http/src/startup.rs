//! Building the application: a function a test can call as well as `main`.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpServer, web};
use nb_db::{ConnectError, Database, GenerationStore};
use nb_domain::accounts::{AccountPorts, AccountService};
use nb_domain::admin::{AdminEmails, AdminPorts, AdminService};
use nb_domain::api_keys::{ApiKeyPorts, ApiKeyService, CachingApiKeyRepository, KeyPolicy};
use nb_domain::erasure::{AccountErasure, ErasurePorts};
use nb_domain::generation::{
    ConcurrencyLimitedProvider, GenerationPorts, GenerationService, HistoryPorts, HistoryService,
};
use nb_domain::idempotency::{IdempotencyPolicy, IdempotencyPorts, IdempotencyService};
use nb_domain::ports::{
    Clock, IdGenerator, ImageProvider, KeyChangeBroadcast, ObjectStorage, RandomSource,
    ReadinessCheck, UserRepository,
};
use nb_domain::rate_limit::{PerMinute, RateLimiter, Throttle};
use nb_imagen::{GeminiImageClient, GeminiSettings, TestModeImages, UnconfiguredImageProvider};
use nb_storage::{InlineStorage, LocalStorage, S3Storage};

use crate::auth::AccessTokens;
use crate::background::{KeyChangeFeed, Maintenance};
use crate::config::{Config, ConfigError, JwtSecret, RateLimitStore, StorageConfig};
use crate::json::query_config;
use crate::rate_limit::{ClientAddressSource, MemoryRateLimiter};
use crate::request_context::request_context;
use crate::routes;
use crate::security_headers::security_headers;
use crate::state::AppState;
use crate::system::{BcryptPasswordHasher, OsRandom, SystemClock, UuidV7Ids};

const JWT_SECRET_FILE: &str = "jwt_secret";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error("cannot read or create the JWT secret file {path}")]
    JwtSecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare password hashing")]
    PasswordHashing(#[source] bcrypt::BcryptError),
    #[error("cannot set up the image provider")]
    ImageProvider(#[source] nb_imagen::ClientBuildError),
    #[error("cannot set up image storage")]
    Storage(#[source] nb_storage::S3ConfigError),
    #[error(transparent)]
    Redis(#[from] nb_redis::InvalidRedisUrl),
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    server: Server,
    maintenance: Maintenance,
    draining: Arc<std::sync::atomic::AtomicBool>,
    drain: Duration,
}

impl Application {
    /// Connects to the database (running migrations), wires the services and binds the port.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        tracing::info!(database = %config.database_url, "opening the database");
        let database = Database::connect(&config.database_url, config.database_pool).await?;
        warn_of_unregistered_admins(&database, &config.admin_emails).await;
        Self::build_with_database(config, database)
    }

    /// As [`Application::build`], on a database that is already open and migrated.
    pub fn build_with_database(config: Config, database: Database) -> Result<Self, StartupError> {
        let listener = bind(&config.listen)?;
        let address = listener.local_addr().map_err(|source| StartupError::Bind {
            address: config.listen.clone(),
            source,
        })?;
        let Wired { state, maintenance } = build_state(&config, database, address)?;
        let draining = state.draining.clone();
        // Signals are the application's (see `run_until_stopped`), not actix's.
        let server =
            serve(listener, state, &config, |_| {}).map_err(|source| StartupError::Bind {
                address: config.listen.clone(),
                source,
            })?;
        Ok(Self {
            port: address.port(),
            server,
            maintenance,
            draining,
            drain: config.limits.shutdown_drain,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is asked to stop (SIGINT/SIGTERM). Then `/readyz` answers 503
    /// for `NB_SHUTDOWN_DRAIN_SECONDS` while requests are still served (a load balancer takes
    /// the instance out), the listener closes, requests in flight get up to
    /// `NB_SHUTDOWN_GRACE_SECONDS`, and what is still only in memory (the keys' last uses) is
    /// written.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.maintenance.spawn();
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        let served = tokio::select! {
            served = &mut server => served,
            () = shutdown_requested() => {
                self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(drain = ?self.drain, "shutting down: draining");
                tokio::time::sleep(self.drain).await;
                // The server future carries out the stop: poll both.
                let ((), served) = tokio::join!(handle.stop(true), server);
                served
            }
        };
        self.maintenance.at_shutdown().await;
        served
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Without email verification, an admin email nobody registered yet goes to whoever
/// registers it first: say so at every start until the operator has.
async fn warn_of_unregistered_admins(database: &Database, admins: &AdminEmails) {
    for email in admins.iter() {
        if let Ok(None) = database.find_user_by_email(email).await {
            tracing::warn!(
                %email,
                "NB_ADMIN_EMAILS names an email with no account: register it now, before \
                 anyone else does"
            );
        }
    }
}

/// Runs the app on `listener` with the configured timeouts, worker count and shutdown grace;
/// `extra_routes` lets tests mount routes of their own beside the app's.
pub fn serve(
    listener: TcpListener,
    state: web::Data<AppState>,
    config: &Config,
    extra_routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> std::io::Result<Server> {
    let limits = config.limits;
    let cors_origins = config.cors_origins.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(Condition::new(
                !cors_origins.is_empty(),
                cors(&cors_origins),
            ))
            .wrap(from_fn(security_headers))
            .wrap(from_fn(request_context))
            .configure(extra_routes.clone())
            .configure(configure_app(state.clone()))
    })
    .client_request_timeout(limits.client_request_timeout)
    .keep_alive(limits.keep_alive)
    .shutdown_timeout(limits.shutdown_grace.as_secs())
    // The application stops the server itself (see `Application::run_until_stopped`).
    .disable_signals();
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    Ok(server.listen(listener)?.run())
}

/// Cross-origin requests from the configured origins only (`NB_CORS_ORIGINS`): the API's
/// methods and headers, with the headers clients read exposed.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            crate::idempotency::IDEMPOTENCY_KEY,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderName::from_static("server-timing"),
            crate::idempotency::IDEMPOTENT_REPLAYED,
        ])
        .expose_headers(crate::quota_headers::ALL)
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// Connections the kernel queues for the server before it accepts them (capped by
/// `net.core.somaxconn`). `std`'s `TcpListener::bind` queues 128: a burst of a few thousand
/// new clients then had SYNs dropped and waited out 1 s and 3 s retransmissions.
pub const LISTEN_BACKLOG: i32 = 8192;

/// Listens on `address` (the first of its resolutions that works), with [`LISTEN_BACKLOG`].
pub fn bind(address: &str) -> Result<TcpListener, StartupError> {
    let failed = |source| StartupError::Bind {
        address: address.to_owned(),
        source,
    };
    let mut last_error = None;
    for candidate in address.to_socket_addrs().map_err(failed)? {
        match listen_on(candidate) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(failed(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    })))
}

fn listen_on(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // As `std` does: a restarted server can listen again at once.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The application's state and the background work that keeps it.
#[derive(Debug)]
pub struct Wired {
    pub state: web::Data<AppState>,
    pub maintenance: Maintenance,
}

/// Wires the adapters to the domain services. `bound_to` is the server's real address, the
/// default base of local image URLs.
pub fn build_state(
    config: &Config,
    database: Database,
    bound_to: SocketAddr,
) -> Result<Wired, StartupError> {
    build_state_with_clock(config, database, bound_to, Arc::new(SystemClock))
}

/// As [`build_state`], telling time by `clock` (tests move it across a UTC midnight).
pub fn build_state_with_clock(
    config: &Config,
    database: Database,
    bound_to: SocketAddr,
    clock: Arc<dyn Clock>,
) -> Result<Wired, StartupError> {
    let ids: Arc<dyn IdGenerator> = Arc::new(UuidV7Ids);
    let random: Arc<dyn RandomSource> = Arc::new(OsRandom);
    let database = Arc::new(database);
    let jwt_secret = match &config.jwt_secret {
        Some(secret) => secret.clone(),
        None => load_or_create_jwt_secret(&config.data_dir, random.as_ref())?,
    };
    let provider: Arc<dyn ImageProvider> = match &config.google_api_key {
        Some(key) => {
            let mut settings = GeminiSettings::new(key.clone());
            settings.base_url.clone_from(&config.google_base_url);
            settings.attempt_timeout = config.upstream.attempt_timeout;
            settings.deadline = config.upstream.deadline;
            settings.max_retries = config.upstream.max_retries;
            settings.http2_prior_knowledge = config.google_http2_prior_knowledge;
            settings.streams_per_connection = config.google_streams_per_connection;
            let client = GeminiImageClient::new(settings).map_err(StartupError::ImageProvider)?;
            Arc::new(ConcurrencyLimitedProvider::new(
                client,
                config.limits.upstream_concurrency,
                config.limits.upstream_queue_timeout,
            ))
        }
        None => {
            tracing::warn!(
                "GOOGLE_API_KEY is not set: generation with live keys will answer 503 (test keys work)"
            );
            Arc::new(UnconfiguredImageProvider)
        }
    };
    let public_base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound_to}"));
    let (storage, served_images): (Arc<dyn ObjectStorage>, bool) = match &config.storage {
        StorageConfig::Local => (
            Arc::new(LocalStorage::new(&config.data_dir, &public_base_url)),
            true,
        ),
        StorageConfig::S3(settings) => (
            Arc::new(S3Storage::new(settings.clone()).map_err(StartupError::Storage)?),
            false,
        ),
        StorageConfig::Inline => (Arc::new(InlineStorage), false),
    };
    let hasher = Arc::new(
        BcryptPasswordHasher::new(config.bcrypt_cost).map_err(StartupError::PasswordHashing)?,
    );
    // What instances share besides the database, when the operator runs Redis.
    let redis = config
        .redis_url
        .as_ref()
        .map(|url| nb_redis::Redis::new(url.expose_secret()))
        .transpose()?;
    // Changes are announced to the other instances: Redis pub/sub when it is configured, else
    // PostgreSQL NOTIFY (nothing on SQLite).
    let peers: Arc<dyn KeyChangeBroadcast> = match &redis {
        Some(redis) => Arc::new(redis.clone()),
        None => database.clone(),
    };
    let key_cache = Arc::new(
        CachingApiKeyRepository::new(database.clone(), clock.clone(), config.limits.key_cache_ttl)
            .with_peers(peers),
    );
    // Install the metrics recorder before the first request records anything.
    crate::metrics::handle();
    // Per-minute limits: shared by every instance in Redis or PostgreSQL, unless the
    // operator keeps them per instance; with SQLite and no Redis (one instance) in memory.
    let rate_limiter: Arc<dyn RateLimiter> = match (
        config.limits.rate_limits,
        &redis,
        database.shared_rate_limiter(),
    ) {
        (RateLimitStore::Shared, Some(redis), _) => Arc::new(redis.rate_limiter()),
        (RateLimitStore::Shared, None, Some(shared)) => Arc::new(shared),
        _ => Arc::new(MemoryRateLimiter::default()),
    };
    let throttle = Throttle::new(rate_limiter.clone(), rate_limits(&config.limits));
    let generation_store = Arc::new(GenerationStore::start(&database));
    let generations = GenerationService::new(
        GenerationPorts {
            provider,
            test_provider: Arc::new(TestModeImages),
            storage: storage.clone(),
            generations: generation_store.clone(),
            quotas: database.clone(),
            clock: clock.clone(),
            ids: ids.clone(),
        },
        config.image_models.clone(),
    );
    let state = web::Data::new(AppState {
        console_policy: crate::console::content_security_policy(&image_origins(&config.storage)),
        readiness: database.clone(),
        shared_state: redis
            .clone()
            .map(|redis| Arc::new(redis) as Arc<dyn ReadinessCheck>),
        limits: config.limits,
        input_images: config.input_images,
        openai_models: config.openai_model_map.clone(),
        throttle,
        client_addresses: ClientAddressSource {
            trusted_proxy_hops: config.limits.trusted_proxy_hops,
        },
        metrics_token: config.metrics_token.clone(),
        draining: Arc::default(),
        accounts: AccountService::new(
            AccountPorts {
                users: database.clone(),
                sessions: database.clone(),
                hasher: hasher.clone(),
                clock: clock.clone(),
                ids: ids.clone(),
            },
            config.access_token_ttl,
        )
        .with_new_account_limits(config.default_account_quotas),
        erasure: AccountErasure::new(ErasurePorts {
            users: database.clone(),
            hasher: hasher.clone(),
            storage: storage.clone(),
            invalidation: key_cache.clone(),
            clock: clock.clone(),
        }),
        api_keys: ApiKeyService::new(
            ApiKeyPorts {
                keys: key_cache.clone(),
                usage: generation_store.clone(),
                random,
                clock: clock.clone(),
                ids: ids.clone(),
            },
            KeyPolicy {
                max_active_per_account: config.limits.max_active_keys_per_account,
                default_quotas: config.default_key_quotas,
            },
        ),
        admin: AdminService::new(
            AdminPorts {
                accounts: database.clone(),
                users: database.clone(),
                keys: key_cache.clone(),
                invalidation: key_cache.clone(),
                clock: clock.clone(),
                ids: ids.clone(),
            },
            config.admin_emails.clone(),
        ),
        idempotency: IdempotencyService::new(
            IdempotencyPorts {
                entries: database.clone(),
                clock: clock.clone(),
                ids,
            },
            IdempotencyPolicy {
                keep_for: config.limits.idempotency_ttl,
                // A claim outlives the longest a request can take: the wait for an upstream
                // slot, the upstream deadline, and room for storage and the database.
                lease: config.limits.upstream_queue_timeout
                    + config.upstream.deadline
                    + Duration::from_secs(60),
            },
        ),
        generations,
        history: HistoryService::new(HistoryPorts {
            generations: generation_store.clone(),
            storage: storage.clone(),
            clock: clock.clone(),
        }),
        access_tokens: AccessTokens::new(&jwt_secret, config.access_token_ttl, clock),
        served_images: served_images.then_some(storage),
    });
    Ok(Wired {
        maintenance: Maintenance::new(
            key_cache,
            rate_limiter,
            state.accounts.clone(),
            state.history.clone(),
            state.idempotency.clone(),
            match redis {
                Some(redis) => KeyChangeFeed::Redis(Box::new(redis)),
                None => KeyChangeFeed::Database(config.database_url.clone()),
            },
        ),
        state,
    })
}

/// Where the console's pages load stored images from, besides this origin.
fn image_origins(storage: &StorageConfig) -> String {
    let StorageConfig::S3(settings) = storage else {
        return String::new();
    };
    let endpoint = settings.endpoint.clone().or_else(|| {
        settings
            .account_id
            .as_ref()
            .map(|account| format!("https://{account}.r2.cloudflarestorage.com"))
    });
    [settings.public_url.clone(), endpoint]
        .into_iter()
        .flatten()
        .filter_map(|url| crate::console::origin_of(&url))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The configured allowances (each at least 1: the configuration checks them).
fn rate_limits(limits: &crate::config::Limits) -> nb_domain::rate_limit::Limits {
    let per_minute = |n: u32| PerMinute::new(n).unwrap_or(PerMinute(std::num::NonZeroU32::MIN));
    nb_domain::rate_limit::Limits {
        auth_per_address: per_minute(limits.auth_attempts_per_minute_per_ip),
        auth_per_email_and_address: per_minute(limits.auth_attempts_per_minute_per_email_and_ip),
        auth_per_email: per_minute(limits.auth_attempts_per_minute_per_email),
        generations_per_key: per_minute(limits.generations_per_minute_per_key),
        generations_per_account: per_minute(limits.generations_per_minute_per_account),
    }
}

/// Everything an `App` serves: state (which body extractors read their limits from),
/// routes, local images and the JSON 404.
pub fn configure_app(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .app_data(query_config())
            .service(routes::openapi::docs())
            .route("/docs", web::get().to(routes::openapi::docs_redirect))
            .configure(crate::console::configure)
            .configure(routes::configure)
            .default_service(web::to(routes::not_found));
    }
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Without `JWT_SECRET`, a random secret is generated on first start and kept in the data
/// folder (mode 0600), so tokens survive restarts without a hard-coded default.
fn load_or_create_jwt_secret(
    data_dir: &Path,
    random: &dyn RandomSource,
) -> Result<JwtSecret, StartupError> {
    let path = data_dir.join(JWT_SECRET_FILE);
    let file_error = |source| StartupError::JwtSecretFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(stored) => return Ok(JwtSecret::new(stored.trim().as_bytes().to_vec())?),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(file_error(error));
        }
        Err(_) => {}
    }
    create_private_dir(data_dir).map_err(file_error)?;
    let mut bytes = [0u8; 32];
    random
        .fill_bytes(&mut bytes)
        .map_err(|error| file_error(std::io::Error::other(error)))?;
    let encoded = hex::encode(bytes);
    write_private_file(&path, encoded.as_bytes()).map_err(file_error)?;
    tracing::info!(path = %path.display(), "generated a JWT secret (set JWT_SECRET to choose one)");
    Ok(JwtSecret::new(encoded.into_bytes())?)
}

/// The data folder holds the database, the JWT secret and the images: a new one is entered
/// by this user alone (0700); an existing one keeps its mode.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's accept queue for the server's socket is the one asked for (as `ss` reads
    /// it: a listening socket's Send-Q is its backlog), not `std`'s 128.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_listener_queues_a_burst_of_connections() {
        let listener = bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shown = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) lists listening sockets");
        let line = String::from_utf8(shown.stdout).unwrap();
        let backlog: i32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        let somaxconn: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(backlog, LISTEN_BACKLOG.min(somaxconn), "{line}");
        assert!(backlog > 128, "{line}");
    }

    #[test]
    fn the_generated_jwt_secret_is_kept_and_reused() {
        let folder = tempfile::tempdir().unwrap();
        let first = load_or_create_jwt_secret(folder.path(), &OsRandom).unwrap();
        let second = load_or_create_jwt_secret(folder.path(), &OsRandom).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(folder.path().join(JWT_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_folder_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        load_or_create_jwt_secret(&data, &OsRandom).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn secrets_differ_between_data_folders() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = load_or_create_jwt_secret(a.path(), &OsRandom).unwrap();
        let second = load_or_create_jwt_secret(b.path(), &OsRandom).unwrap();
        assert_ne!(first.expose_secret(), second.expose_secret());
    }
}
