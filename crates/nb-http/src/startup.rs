//! Building the application: a function a test can call as well as `main`.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use nb_db::{ConnectError, Database, GenerationStore};
use nb_domain::accounts::AccountService;
use nb_domain::api_keys::{ApiKeyService, CachingApiKeyRepository};
use nb_domain::generation::{ConcurrencyLimitedProvider, GenerationPorts, GenerationService};
use nb_domain::ports::{Clock, IdGenerator, ImageProvider, ObjectStorage, RandomSource};
use nb_imagen::{GeminiImageClient, GeminiSettings, UnconfiguredImageProvider};
use nb_storage::{InlineStorage, LocalStorage, S3Storage};

use crate::auth::AccessTokens;
use crate::background::Maintenance;
use crate::config::{Config, ConfigError, JwtSecret, StorageConfig};
use crate::json::{json_config, query_config};
use crate::rate_limit::RateLimits;
use crate::request_context::request_context;
use crate::routes;
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
    #[error("cannot set up the image provider")]
    ImageProvider(#[source] nb_imagen::ClientBuildError),
    #[error("cannot set up image storage")]
    Storage(#[source] nb_storage::S3ConfigError),
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
}

impl Application {
    /// Connects to the database (running migrations), wires the services and binds the port.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        tracing::info!(database = %config.database_url, "opening the database");
        let database = Database::connect(&config.database_url, config.database_pool).await?;
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
        let server =
            serve(listener, state, &config, |_| {}).map_err(|source| StartupError::Bind {
                address: config.listen.clone(),
                source,
            })?;
        Ok(Self {
            port: address.port(),
            server,
            maintenance,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is asked to stop (SIGINT/SIGTERM), then writes what is still
    /// only in memory (the keys' last uses).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.maintenance.spawn();
        let served = self.server.await;
        self.maintenance.at_shutdown().await;
        served
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
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(request_context))
            .configure(extra_routes.clone())
            .configure(configure_app(state.clone()))
    })
    // Room for bursts of thousands of new connections (the kernel caps it at somaxconn).
    .backlog(8192)
    .client_request_timeout(limits.client_request_timeout)
    .keep_alive(limits.keep_alive)
    .shutdown_timeout(limits.shutdown_grace.as_secs());
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    Ok(server.listen(listener)?.run())
}

pub fn bind(address: &str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address).map_err(|source| StartupError::Bind {
        address: address.to_owned(),
        source,
    })
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
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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
            let client = GeminiImageClient::new(settings).map_err(StartupError::ImageProvider)?;
            Arc::new(ConcurrencyLimitedProvider::new(
                client,
                config.limits.upstream_concurrency,
                config.limits.upstream_queue_timeout,
            ))
        }
        None => {
            tracing::warn!("GOOGLE_API_KEY is not set: POST /v1/generate will answer 503");
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
    let key_cache = Arc::new(CachingApiKeyRepository::new(
        database.clone(),
        clock.clone(),
        config.limits.key_cache_ttl,
    ));
    // Install the metrics recorder before the first request records anything.
    crate::metrics::handle();
    let rate_limits = RateLimits::new(&config.limits);
    let generations = GenerationService::new(
        GenerationPorts {
            provider,
            storage: storage.clone(),
            generations: Arc::new(GenerationStore::start(&database)),
            clock: clock.clone(),
            ids: ids.clone(),
        },
        config.image_models.clone(),
    );
    let state = web::Data::new(AppState {
        readiness: database.clone(),
        limits: config.limits,
        rate_limits: rate_limits.clone(),
        metrics_token: config.metrics_token.clone(),
        accounts: AccountService::new(
            database.clone(),
            Arc::new(BcryptPasswordHasher::new(config.bcrypt_cost)),
            clock.clone(),
            ids.clone(),
        ),
        api_keys: ApiKeyService::new(key_cache.clone(), random, clock.clone(), ids),
        generations,
        access_tokens: AccessTokens::new(&jwt_secret, config.access_token_ttl, clock),
        served_images: served_images.then_some(storage),
    });
    Ok(Wired {
        state,
        maintenance: Maintenance::new(key_cache, rate_limits),
    })
}

/// Everything an `App` serves: state, body limits, routes, local images and the JSON 404.
pub fn configure_app(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let max_body_bytes = state.limits.max_body_bytes;
        cfg.app_data(state)
            .app_data(json_config(max_body_bytes))
            .app_data(query_config())
            .service(routes::openapi::docs())
            .route("/docs", web::get().to(routes::openapi::docs_redirect))
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
    std::fs::create_dir_all(data_dir).map_err(file_error)?;
    let mut bytes = [0u8; 32];
    random
        .fill_bytes(&mut bytes)
        .map_err(|error| file_error(std::io::Error::other(error)))?;
    let encoded = hex::encode(bytes);
    write_private_file(&path, encoded.as_bytes()).map_err(file_error)?;
    tracing::info!(path = %path.display(), "generated a JWT secret (set JWT_SECRET to choose one)");
    Ok(JwtSecret::new(encoded.into_bytes())?)
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

    #[test]
    fn secrets_differ_between_data_folders() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = load_or_create_jwt_secret(a.path(), &OsRandom).unwrap();
        let second = load_or_create_jwt_secret(b.path(), &OsRandom).unwrap();
        assert_ne!(first.expose_secret(), second.expose_secret());
    }
}
