//! The one place that knows every adapter: it builds each from its settings, puts the
//! domain's services on them, and hands the HTTP adapter its state and the background jobs
//! what they keep. A test can call it with a clock of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nb_api::AppState;
use nb_api::body_budget::BodyBudget;
use nb_api::client_address::ClientAddressSource;
use nb_api::routes::webhooks::JsonEventBodies;
use nb_api::tokens::AccessTokens;
use nb_db::{Database, GenerationStore};
use nb_domain::accounts::{AccountErasure, AccountPorts, AccountService, ErasurePorts};
use nb_domain::admin::{AdminPorts, AdminService};
use nb_domain::api_keys::{ApiKeyPorts, ApiKeyService, CachingApiKeyRepository, KeyPolicy};
use nb_domain::generation::{
    AllowedModels, ConcurrencyLimitedProvider, GenerationPorts, GenerationService, HistoryPorts,
    HistoryService, ImageProvider, JobService, ObjectStorage,
};
use nb_domain::idempotency::{IdempotencyPolicy, IdempotencyPorts, IdempotencyService};
use nb_domain::ports::SecretSealer;
use nb_domain::ports::{KeyChangeBroadcast, ReadinessCheck, UpstreamKeys};
use nb_domain::rate_limit::{LeasePolicy, LeasedRateLimiter, RateLimiter, Throttle};
use nb_domain::system::{Clock, IdGenerator, RandomSource};
use nb_domain::webhooks::{WebhookPorts, WebhookService};
use nb_imagen::{
    GeminiImageClient, ProviderRouter, SpoolFolder, TestModeImages, UnconfiguredImageProvider,
};
use nb_storage::{InlineStorage, LocalStorage, S3Storage};
use nb_system::{BcryptPasswordHasher, MemoryRateLimiter, OsRandom, UuidV7Ids, XChaChaSealer};
use nb_webhook::HttpWebhookSender;
use secrecy::SecretString;

use crate::background::{KeyChangeFeed, Maintenance};
use crate::config::Config;
use crate::config::sections::{EncryptionKey, JwtSecret, RateLimitStore, StorageBackend};
use crate::error::StartupError;
use nb_convert::ImageCrateConverter;

const JWT_SECRET_FILE: &str = "jwt_secret";
const ENCRYPTION_KEY_FILE: &str = "encryption_key";

/// What seals webhook secrets: `NB_ENCRYPTION_KEY`; on SQLite (one instance) without it, a key
/// generated once into the data folder; on PostgreSQL without it, nothing (webhooks answer
/// 503: instances must share the key, so one cannot be made up here).
fn secret_sealer(
    config: &Config,
    random: &dyn RandomSource,
) -> Result<Option<Arc<dyn SecretSealer>>, StartupError> {
    let key = match (&config.security.encryption_key, config.database_url()) {
        (Some(key), _) => key.clone(),
        (None, nb_db::DatabaseUrl::Sqlite(_)) => {
            load_or_create_encryption_key(&config.data_dir, random)?
        }
        (None, _) => {
            tracing::warn!(
                "NB_ENCRYPTION_KEY is not set: webhooks are off (set the same 32-byte key on every instance)"
            );
            return Ok(None);
        }
    };
    Ok(Some(Arc::new(XChaChaSealer::new(key.bytes()))))
}

fn load_or_create_encryption_key(
    data_dir: &Path,
    random: &dyn RandomSource,
) -> Result<EncryptionKey, StartupError> {
    let path = data_dir.join(ENCRYPTION_KEY_FILE);
    let file_error = |source| StartupError::KeyFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(stored) => {
            return EncryptionKey::parse(&stored)
                .map_err(|reason| file_error(std::io::Error::other(reason)));
        }
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
    write_private_file(&path, hex::encode(bytes).as_bytes()).map_err(file_error)?;
    tracing::info!(path = %path.display(), "generated the key that seals webhook secrets (set NB_ENCRYPTION_KEY to choose one)");
    Ok(EncryptionKey::from_bytes(bytes))
}

/// The application's state and the background work that keeps it.
#[derive(Debug)]
pub struct Wired {
    pub state: AppState,
    pub maintenance: Maintenance,
    /// The queue of asynchronous generations, whose workers the server runs.
    pub jobs: Arc<JobService>,
    /// Webhooks, whose deliverer the server runs.
    pub webhooks: Arc<WebhookService>,
}

/// Wires the adapters to the domain services, telling time by `clock`. `bound_to` is the
/// server's real address, the default base of local image URLs.
pub fn wire(
    config: &Config,
    database: Database,
    bound_to: SocketAddr,
    clock: Arc<dyn Clock>,
) -> Result<Wired, StartupError> {
    let ids: Arc<dyn IdGenerator> = Arc::new(UuidV7Ids);
    let random: Arc<dyn RandomSource> = Arc::new(OsRandom);
    let database = Arc::new(database);
    let jwt_secret = match &config.security.jwt_secret {
        Some(secret) => secret.clone(),
        None => load_or_create_jwt_secret(&config.data_dir, random.as_ref())?,
    };
    let models = config.image_models().map_err(StartupError::ModelCatalog)?;
    warn_of_retiring_models(&models, clock.now().date());
    let Upstream {
        provider,
        keys: upstream_keys,
    } = image_provider(config)?;
    let public_base_url = config.storage.public_base_url.as_ref().map_or_else(
        || format!("http://{bound_to}"),
        |url| url.as_str().to_owned(),
    );
    let (storage, served_images): (Arc<dyn ObjectStorage>, bool) = match config.storage.backend() {
        StorageBackend::Local => (
            Arc::new(LocalStorage::new(&config.data_dir, &public_base_url)),
            true,
        ),
        StorageBackend::S3 => {
            let settings = config
                .storage
                .s3
                .clone()
                .ok_or(StartupError::NoS3Settings)?;
            (
                Arc::new(S3Storage::new(settings).map_err(StartupError::Storage)?),
                false,
            )
        }
        StorageBackend::Inline => (Arc::new(InlineStorage), false),
    };
    let hasher = Arc::new(
        BcryptPasswordHasher::new(config.security.bcrypt_cost)
            .map_err(StartupError::PasswordHashing)?,
    );
    // What instances share besides the database, when the operator runs Redis.
    let redis = config
        .redis
        .url
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
    nb_api::metrics::handle();
    // Per-minute limits: shared by every instance in Redis or PostgreSQL, unless the
    // operator keeps them per instance; with SQLite and no Redis (one instance) in memory.
    let shared_rate_limiter: Option<Arc<dyn RateLimiter>> = match (
        config.limits.rate_limits,
        &redis,
        database.shared_rate_limiter(),
    ) {
        (RateLimitStore::Shared, Some(redis), _) => Some(Arc::new(redis.rate_limiter())),
        (RateLimitStore::Shared, None, Some(shared)) => Some(Arc::new(shared)),
        _ => None,
    };
    // A shared allowance is leased in slices, so that most requests are decided here.
    let leased_rate_limiter = shared_rate_limiter.map(|shared| {
        Arc::new(LeasedRateLimiter::new(
            shared,
            clock.clone(),
            LeasePolicy {
                percent: config.limits.rate_limit_lease_percent,
            },
        ))
    });
    let rate_limiter: Arc<dyn RateLimiter> = match &leased_rate_limiter {
        Some(leased) => leased.clone(),
        None => Arc::new(MemoryRateLimiter::default()),
    };
    let generation_store = Arc::new(GenerationStore::start(&database));
    let generations = Arc::new(
        GenerationService::new(
            GenerationPorts {
                provider,
                test_provider: Arc::new(TestModeImages),
                storage: storage.clone(),
                converter: Arc::new(ImageCrateConverter::per_core()),
                generations: generation_store.clone(),
                history: generation_store.clone(),
                quotas: database.clone(),
                clock: clock.clone(),
                ids: ids.clone(),
            },
            models.clone(),
        )
        .with_max_edit_turns(config.limits.max_edit_turns.get())
        .with_image_memory_budget(config.limits.max_image_bytes_in_flight.get())
        .with_fallback_limits(config.limits.model_cooldown, config.upstream.deadline),
    );
    let accounts = Arc::new(
        AccountService::new(
            AccountPorts {
                users: database.clone(),
                sessions: database.clone(),
                hasher: hasher.clone(),
                clock: clock.clone(),
                ids: ids.clone(),
            },
            config.security.access_token_ttl,
        )
        .with_new_account_limits(config.limits.default_account_quotas())
        .with_protected_emails(&config.security.admin_emails.0),
    );
    let history = Arc::new(HistoryService::new(HistoryPorts {
        generations: generation_store.clone(),
        storage: storage.clone(),
        clock: clock.clone(),
    }));
    let idempotency = Arc::new(IdempotencyService::new(
        IdempotencyPorts {
            entries: database.clone(),
            clock: clock.clone(),
            ids: ids.clone(),
        },
        IdempotencyPolicy {
            keep_for: config.limits.idempotency_ttl(),
            // A claim outlives the longest a request can take: the wait for an upstream
            // slot, the upstream deadline, and room for storage and the database.
            lease: config.limits.upstream_queue_timeout
                + config.upstream.deadline
                + Duration::from_secs(60),
        },
    ));
    let jobs = Arc::new(JobService::new(
        generations.clone(),
        history.as_ref().clone(),
        database.clone(),
        config.jobs.settings(),
    ));
    let webhooks = Arc::new(WebhookService::new(
        WebhookPorts {
            webhooks: database.clone(),
            sender: Arc::new(HttpWebhookSender::new(config.webhooks.settings().targets)),
            sealer: secret_sealer(config, random.as_ref())?,
            bodies: Arc::new(JsonEventBodies),
            history: history.as_ref().clone(),
            random: random.clone(),
            clock: clock.clone(),
            ids: ids.clone(),
        },
        config.webhooks.settings(),
    ));
    let openai_models = config
        .openai_model_map(&models)
        .map_err(StartupError::OpenAiModelMap)?;
    let state = AppState {
        console_policy: nb_api::console::content_security_policy(&image_origins(config)),
        readiness: database.clone(),
        upstream_keys,
        shared_state: redis
            .clone()
            .map(|redis| Arc::new(redis) as Arc<dyn ReadinessCheck>),
        server: config.server.clone(),
        body_budget: BodyBudget::new(
            config.server.max_body_bytes_in_flight,
            config.server.max_body_bytes,
        ),
        input_images: config.models.input_images(),
        max_images_per_request: config.limits.max_images_per_request,
        openai_models,
        throttle: Arc::new(Throttle::new(
            rate_limiter.clone(),
            config.limits.rate_limits(),
        )),
        client_addresses: ClientAddressSource {
            trusted_proxy_hops: config.server.trusted_proxy_hops(),
        },
        metrics_token: config.security.metrics_token.clone(),
        draining: Arc::default(),
        accounts: accounts.clone(),
        erasure: Arc::new(AccountErasure::new(
            ErasurePorts {
                users: database.clone(),
                hasher: hasher.clone(),
                storage: storage.clone(),
                invalidation: key_cache.clone(),
                clock: clock.clone(),
                ids: ids.clone(),
            },
            config.security.admin_emails.0.clone(),
        )),
        api_keys: Arc::new(ApiKeyService::new(
            ApiKeyPorts {
                keys: key_cache.clone(),
                usage: generation_store.clone(),
                random,
                clock: clock.clone(),
                ids: ids.clone(),
            },
            KeyPolicy {
                max_active_per_account: config.limits.max_active_keys_per_account.get(),
                default_quotas: config.limits.default_key_quotas(),
            },
        )),
        admin: Arc::new(AdminService::new(
            AdminPorts {
                accounts: database.clone(),
                users: database.clone(),
                keys: key_cache.clone(),
                invalidation: key_cache.clone(),
                clock: clock.clone(),
                ids,
            },
            config.security.admin_emails.0.clone(),
        )),
        idempotency: idempotency.clone(),
        generations,
        history: history.clone(),
        jobs: jobs.clone(),
        webhooks: webhooks.clone(),
        access_tokens: AccessTokens::new(
            jwt_secret.expose_secret(),
            config.security.access_token_ttl,
            clock,
        ),
        served_images: served_images.then_some(storage),
    };
    Ok(Wired {
        jobs,
        webhooks,
        maintenance: Maintenance::new(
            key_cache,
            rate_limiter,
            leased_rate_limiter,
            accounts,
            history,
            idempotency,
            match redis {
                Some(redis) => KeyChangeFeed::Redis(Box::new(redis)),
                None => KeyChangeFeed::Database(config.database_url()),
            },
        ),
        state,
    })
}

/// Every enabled model that is retired or retires within 30 days, told once at start-up.
fn warn_of_retiring_models(models: &AllowedModels, today: time::Date) {
    for model in models.retiring_by(today + time::Duration::days(30)) {
        let spec = model.spec();
        let retired_at = spec
            .retired_at
            .map(|day| day.to_string())
            .unwrap_or_default();
        let replaced_by = spec.replaced_by.as_deref().unwrap_or("none named");
        if spec.is_retired_on(today) {
            tracing::warn!(model = %model, %retired_at, replaced_by, "an enabled model is retired: requests for it are refused (410 model_retired)");
        } else {
            tracing::warn!(model = %model, %retired_at, replaced_by, "an enabled model retires within 30 days");
        }
    }
}

/// Where large images are spooled as they arrive: `.spool` in the data folder (on the same
/// file system as images on local disk, so that they are linked into place). Without it
/// (the folder cannot be made), images are held in memory.
fn spool_folder(config: &Config) -> Option<SpoolFolder> {
    let path = config.data_dir.join(".spool");
    match SpoolFolder::new(&path) {
        Ok(folder) => Some(folder),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot create the spool folder: large images are held in memory");
            None
        }
    }
}

/// Google behind the domain's cap on calls in flight, with its pool of keys, or, without a
/// key, a provider that answers 503 (test keys still work: they never reach it).
fn image_provider(config: &Config) -> Result<Upstream, StartupError> {
    let vertex_models: Vec<String> = config
        .model_catalog()
        .map(|catalog| {
            catalog
                .iter()
                .filter(|spec| spec.provider == nb_domain::generation::UpstreamProvider::Vertex)
                .map(|spec| spec.id.clone())
                .collect()
        })
        .unwrap_or_default();
    let spool = spool_folder(config);
    let spooling = |client: GeminiImageClient| match &spool {
        Some(folder) => client.with_spool(folder.clone()),
        None => client,
    };
    let vertex: Option<Arc<dyn ImageProvider>> = if config.vertex.is_set() {
        let client = GeminiImageClient::vertex(config.upstream.clone(), &config.vertex)
            .map(spooling)
            .map_err(StartupError::ImageProvider)?;
        tracing::info!(location = %config.vertex.location, "Vertex AI is configured");
        Some(Arc::new(client))
    } else {
        if !vertex_models.is_empty() {
            tracing::warn!(models = ?vertex_models, "models with provider = \"vertex\" answer 503 until VERTEX_PROJECT and GOOGLE_APPLICATION_CREDENTIALS are set");
        }
        None
    };
    let (gemini_api, keys): (Arc<dyn ImageProvider>, Option<Arc<dyn UpstreamKeys>>) = if config
        .upstream
        .has_keys()
    {
        let client = GeminiImageClient::new(config.upstream.clone())
            .map(spooling)
            .map_err(StartupError::ImageProvider)?;
        let keys = client.key_pool().map(|pool| pool as Arc<dyn UpstreamKeys>);
        (Arc::new(client), keys)
    } else {
        tracing::warn!(
            "GOOGLE_API_KEY(S) is not set: generation with live keys on the Gemini API will answer 503 (test keys work)"
        );
        (Arc::new(UnconfiguredImageProvider), None)
    };
    if vertex.is_none() && keys.is_none() {
        return Ok(Upstream {
            provider: Arc::new(UnconfiguredImageProvider),
            keys: None,
        });
    }
    let provider = Arc::new(ConcurrencyLimitedProvider::new(
        ProviderRouter { gemini_api, vertex },
        config.limits.upstream_concurrency.get(),
        config.limits.upstream_queue_timeout,
    ));
    Ok(Upstream { provider, keys })
}

/// The image provider and, for Google, its pool of keys.
struct Upstream {
    provider: Arc<dyn ImageProvider>,
    keys: Option<Arc<dyn UpstreamKeys>>,
}

/// Where the console's pages load stored images from, besides this origin.
fn image_origins(config: &Config) -> String {
    let Some(settings) = config
        .storage
        .s3
        .as_ref()
        .filter(|_| config.storage.backend() == StorageBackend::S3)
    else {
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
        .filter_map(|url| nb_api::console::origin_of(&url))
        .collect::<Vec<_>>()
        .join(" ")
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
    let secret = |text: String| {
        JwtSecret::try_from(SecretString::from(text)).map_err(StartupError::JwtSecretTooShort)
    };
    match std::fs::read_to_string(&path) {
        Ok(stored) => return secret(stored.trim().to_owned()),
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
    secret(encoded)
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
