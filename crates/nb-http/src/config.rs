//! Configuration: read once from the environment at start-up into [`Config`].
//! Tests build a `Config` in code instead.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nb_db::{DatabaseUrl, PoolOptions};
use nb_domain::admin::AdminEmails;
use nb_domain::generation::{AllowedModels, InputImageLimits};
use nb_domain::quota::{PeriodLimits, QuotaLimit};
use nb_domain::user::EmailAddress;
use nb_imagen::GoogleApiKey;
use nb_storage::{MAX_PRESIGN_EXPIRY, S3Secret, S3Settings};

use crate::openai::OpenAiModelMap;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_BCRYPT_COST: u32 = 12;
pub const DEFAULT_ACCESS_TOKEN_TTL_SECONDS: u64 = 24 * 60 * 60;
pub const DEFAULT_IMAGE_MODELS: &str = "gemini-3.1-flash-image";
pub const DEFAULT_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS: u64 = 60;
pub const DEFAULT_UPSTREAM_DEADLINE_SECONDS: u64 = 120;
pub const DEFAULT_UPSTREAM_MAX_RETRIES: u32 = 2;
pub const DEFAULT_PRESIGN_EXPIRY_SECONDS: u64 = 3600;
/// HS256 keys shorter than the hash output weaken it (RFC 7518 §3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Everything the server needs to know, decided before it starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// `NB_LISTEN`: address and port to bind.
    pub listen: String,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://<path>`.
    pub database_url: DatabaseUrl,
    /// `NB_DB_POOL_SIZE`, `NB_DB_ACQUIRE_TIMEOUT_SECONDS`.
    pub database_pool: PoolOptions,
    /// `JWT_SECRET`; when unset, a secret generated once and kept in the data folder.
    pub jwt_secret: Option<JwtSecret>,
    /// `NB_ACCESS_TOKEN_TTL_SECONDS`: how long an access token stays valid.
    pub access_token_ttl: Duration,
    /// `NB_BCRYPT_COST`: bcrypt's work factor (4–31).
    pub bcrypt_cost: u32,
    /// `NB_DATA_DIR`: where the SQLite file, the generated JWT secret and images live.
    pub data_dir: PathBuf,
    /// `NB_WORKERS`: HTTP worker threads (default: one per CPU).
    pub workers: Option<usize>,
    /// `NB_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `GOOGLE_API_KEY`: without it, generation answers 503.
    pub google_api_key: Option<GoogleApiKey>,
    /// `GOOGLE_GEMINI_BASE_URL`.
    pub google_base_url: String,
    /// `GOOGLE_GEMINI_HTTP2_PRIOR_KNOWLEDGE`: HTTP/2 without TLS negotiation (h2c endpoints).
    pub google_http2_prior_knowledge: bool,
    /// `NB_UPSTREAM_STREAMS_PER_CONNECTION`: calls one HTTP/2 connection to Google carries at
    /// once before another connection is opened.
    pub google_streams_per_connection: usize,
    /// `NB_IMAGE_MODELS`: comma-separated; the first is the default.
    pub image_models: AllowedModels,
    /// `NB_OPENAI_MODEL_MAP`: OpenAI model names mapped to ours (`name=model,…`).
    pub openai_model_map: OpenAiModelMap,
    /// `NB_MAX_INPUT_IMAGES`, `NB_MAX_INPUT_IMAGE_BYTES`, `NB_MAX_INPUT_IMAGES_TOTAL_BYTES`:
    /// what clients may send to edit.
    pub input_images: InputImageLimits,
    /// `NB_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS`, `NB_UPSTREAM_DEADLINE_SECONDS`,
    /// `NB_UPSTREAM_MAX_RETRIES`.
    pub upstream: UpstreamLimits,
    /// `NB_STORAGE` and the `R2_*` variables.
    pub storage: StorageConfig,
    /// `NB_PUBLIC_BASE_URL`: the base of local image URLs; by default `http://` and the
    /// address the server is bound to.
    pub public_base_url: Option<String>,
    /// Abuse limits and timeouts.
    pub limits: Limits,
    /// `NB_METRICS_TOKEN`: when set, `GET /metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<MetricsToken>,
    /// `NB_CORS_ORIGINS`: origins whose pages may call the API from a browser (none by
    /// default: the API is for servers and tools, not for other sites' pages).
    pub cors_origins: Vec<String>,
    /// `NB_ADMIN_EMAILS`: the accounts that may use `/v1/admin/…`.
    pub admin_emails: AdminEmails,
    /// `NB_DEFAULT_ACCOUNT_PER_DAY`, `NB_DEFAULT_ACCOUNT_PER_MONTH`: quotas of new accounts.
    pub default_account_quotas: PeriodLimits,
    /// `NB_DEFAULT_KEY_PER_DAY`, `NB_DEFAULT_KEY_PER_MONTH`: quotas of new keys created
    /// without their own.
    pub default_key_quotas: PeriodLimits,
    /// `NB_REDIS_URL`: when set, per-minute limits are counted in Redis and key changes
    /// travel over its pub/sub (instead of PostgreSQL).
    pub redis_url: Option<RedisUrl>,
}

/// `redis://`, `rediss://` (TLS) or `redis+unix://`; may hold a password: never printed.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let raw = raw.trim();
        let scheme = raw.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("redis" | "rediss" | "redis+unix" | "unix") => Ok(Self(raw.to_owned())),
            _ => Err(invalid(
                "NB_REDIS_URL",
                "must start with redis://, rediss:// (TLS) or redis+unix://",
            )),
        }
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisUrl([redacted])")
    }
}

/// Request sizes, rates, timeouts and the shutdown grace period.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `NB_MAX_BODY_BYTES`: larger bodies are 413.
    pub max_body_bytes: usize,
    /// `NB_CLIENT_REQUEST_TIMEOUT_SECONDS`: a client must send its request head within this.
    pub client_request_timeout: Duration,
    /// `NB_KEEP_ALIVE_SECONDS`: idle keep-alive connections are closed after this.
    pub keep_alive: Duration,
    /// `NB_CLIENT_BODY_TIMEOUT_SECONDS`: the longest wait for the next piece of a request's
    /// body (like nginx's `client_body_timeout`).
    pub client_body_timeout: Duration,
    /// `NB_AUTH_ATTEMPTS_PER_MINUTE_PER_IP`: registrations and logins per client network.
    pub auth_attempts_per_minute_per_ip: u32,
    /// `NB_AUTH_ATTEMPTS_PER_MINUTE_PER_EMAIL_AND_IP`: for one email from one network.
    pub auth_attempts_per_minute_per_email_and_ip: u32,
    /// `NB_AUTH_ATTEMPTS_PER_MINUTE_PER_EMAIL`: for one email from anywhere (a ceiling).
    pub auth_attempts_per_minute_per_email: u32,
    /// `NB_GENERATIONS_PER_MINUTE_PER_KEY`.
    pub generations_per_minute_per_key: u32,
    /// `NB_GENERATIONS_PER_MINUTE_PER_ACCOUNT`: over all of an account's keys.
    pub generations_per_minute_per_account: u32,
    /// `NB_MAX_ACTIVE_KEYS_PER_ACCOUNT`.
    pub max_active_keys_per_account: u32,
    /// `NB_UPSTREAM_CONCURRENCY`: calls to Google in flight at once, per instance.
    pub upstream_concurrency: usize,
    /// `NB_UPSTREAM_QUEUE_TIMEOUT_SECONDS`: how long a generation waits for a free slot.
    pub upstream_queue_timeout: Duration,
    /// `NB_TRUST_FORWARDED_FOR` and `NB_TRUSTED_PROXY_HOPS`: how many proxies in front of
    /// the server append to `X-Forwarded-For` (0: take the TCP peer).
    pub trusted_proxy_hops: usize,
    /// `NB_SHUTDOWN_GRACE_SECONDS`: how long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// `NB_SHUTDOWN_DRAIN_SECONDS`: after SIGTERM, how long `/readyz` answers 503 while the
    /// server still accepts requests, so a load balancer stops sending new ones first.
    pub shutdown_drain: Duration,
    /// `NB_KEY_CACHE_TTL_SECONDS`: how long a verified API key is trusted from memory (0: never).
    pub key_cache_ttl: Duration,
    /// `NB_IDEMPOTENCY_TTL_HOURS` (1–720): how long an answer is kept for its
    /// `Idempotency-Key`.
    pub idempotency_ttl: Duration,
    /// `NB_RATE_LIMITS`: where per-minute limits are counted.
    pub rate_limits: RateLimitStore,
}

/// Where per-minute limits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitStore {
    /// `shared` (the default): in Redis when `NB_REDIS_URL` is set, else in the database
    /// when it is PostgreSQL, so they hold across instances; in memory with SQLite (one
    /// instance).
    Shared,
    /// `memory`: per instance, whatever the database.
    Memory,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            client_request_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(75),
            client_body_timeout: Duration::from_secs(10),
            auth_attempts_per_minute_per_ip: 30,
            auth_attempts_per_minute_per_email_and_ip: 10,
            auth_attempts_per_minute_per_email: 100,
            generations_per_minute_per_key: 60,
            generations_per_minute_per_account: 120,
            max_active_keys_per_account: 20,
            upstream_concurrency: 64,
            upstream_queue_timeout: Duration::from_secs(30),
            trusted_proxy_hops: 0,
            shutdown_grace: Duration::from_secs(30),
            shutdown_drain: Duration::ZERO,
            key_cache_ttl: nb_domain::api_keys::DEFAULT_KEY_CACHE_TTL,
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            rate_limits: RateLimitStore::Shared,
        }
    }
}

/// The bearer token that protects `/metrics`. Never printed.
#[derive(Clone)]
pub struct MetricsToken(String);

impl MetricsToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsToken([redacted])")
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamLimits {
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    pub max_retries: u32,
}

/// Where images are kept.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// Files under `NB_DATA_DIR/images`, served by this server at `/images/…`.
    Local,
    /// Cloudflare R2 or any S3-compatible store.
    S3(S3Settings),
    /// `data:` URLs; nothing is stored.
    Inline,
}

/// The key access tokens are signed with. Never printed.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    pub fn new(bytes: Vec<u8>) -> Result<Self, ConfigError> {
        if bytes.len() < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                reason: format!("must be at least {MIN_JWT_SECRET_BYTES} bytes long"),
            });
        }
        Ok(Self(bytes))
    }

    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Config {
    /// Reads every setting from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup`, so that parsing can be tested without touching
    /// the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let data_dir = PathBuf::from(var("NB_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        let database_url = match var("DATABASE_URL") {
            Some(raw) => DatabaseUrl::parse(raw.trim()).map_err(|error| ConfigError::Invalid {
                name: "DATABASE_URL",
                reason: error.to_string(),
            })?,
            None => DatabaseUrl::Sqlite(data_dir.join("nanobanana.db")),
        };
        let jwt_secret = var("JWT_SECRET")
            .map(|raw| JwtSecret::new(raw.into_bytes()))
            .transpose()?;
        let bcrypt_cost = parse_var(&var, "NB_BCRYPT_COST", DEFAULT_BCRYPT_COST)?;
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(invalid("NB_BCRYPT_COST", "must be between 4 and 31"));
        }
        let defaults = PoolOptions::default();
        let max_connections = parse_var(&var, "NB_DB_POOL_SIZE", defaults.max_connections)?;
        if max_connections == 0 {
            return Err(invalid("NB_DB_POOL_SIZE", "must be at least 1"));
        }
        let acquire_timeout = Duration::from_secs(parse_var(
            &var,
            "NB_DB_ACQUIRE_TIMEOUT_SECONDS",
            defaults.acquire_timeout.as_secs(),
        )?);
        let statement_timeout = Duration::from_secs(parse_var(
            &var,
            "NB_DB_STATEMENT_TIMEOUT_SECONDS",
            defaults.statement_timeout.as_secs(),
        )?);
        if statement_timeout.is_zero() {
            return Err(invalid(
                "NB_DB_STATEMENT_TIMEOUT_SECONDS",
                "must be at least 1",
            ));
        }
        let ttl_seconds: u64 = parse_var(
            &var,
            "NB_ACCESS_TOKEN_TTL_SECONDS",
            DEFAULT_ACCESS_TOKEN_TTL_SECONDS,
        )?;
        if ttl_seconds == 0 {
            return Err(invalid("NB_ACCESS_TOKEN_TTL_SECONDS", "must be at least 1"));
        }
        let workers = var("NB_WORKERS")
            .map(|raw| parse_value("NB_WORKERS", &raw))
            .transpose()?;
        if workers == Some(0) {
            return Err(invalid("NB_WORKERS", "must be at least 1"));
        }
        let log_format = match var("NB_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("NB_LOG_FORMAT", "must be text or json")),
        };
        let image_models = AllowedModels::new(
            var("NB_IMAGE_MODELS")
                .unwrap_or_else(|| DEFAULT_IMAGE_MODELS.into())
                .split(',')
                .map(str::to_owned),
        )
        .ok_or_else(|| invalid("NB_IMAGE_MODELS", "must name at least one model"))?;
        let upstream = UpstreamLimits {
            attempt_timeout: Duration::from_secs(parse_var(
                &var,
                "NB_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS",
                DEFAULT_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS,
            )?),
            deadline: Duration::from_secs(parse_var(
                &var,
                "NB_UPSTREAM_DEADLINE_SECONDS",
                DEFAULT_UPSTREAM_DEADLINE_SECONDS,
            )?),
            max_retries: parse_var(
                &var,
                "NB_UPSTREAM_MAX_RETRIES",
                DEFAULT_UPSTREAM_MAX_RETRIES,
            )?,
        };
        if upstream.attempt_timeout.is_zero() {
            return Err(invalid(
                "NB_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS",
                "must be at least 1",
            ));
        }
        if upstream.deadline.is_zero() {
            return Err(invalid(
                "NB_UPSTREAM_DEADLINE_SECONDS",
                "must be at least 1",
            ));
        }
        let limits = limits_config(&var)?;
        let openai_model_map = match var("NB_OPENAI_MODEL_MAP") {
            Some(raw) => OpenAiModelMap::parse(&raw, &image_models)
                .map_err(|error| invalid("NB_OPENAI_MODEL_MAP", &error.to_string()))?,
            None => OpenAiModelMap::empty(),
        };
        let input_images = input_image_limits(&var)?;
        let admin_emails = var("NB_ADMIN_EMAILS")
            .map(|list| admin_emails(&list))
            .transpose()?
            .unwrap_or_default();
        let quotas =
            |day: &'static str, month: &'static str| -> Result<PeriodLimits, ConfigError> {
                Ok(PeriodLimits {
                    per_day: optional_limit(&var, day)?,
                    per_month: optional_limit(&var, month)?,
                })
            };
        let default_account_quotas =
            quotas("NB_DEFAULT_ACCOUNT_PER_DAY", "NB_DEFAULT_ACCOUNT_PER_MONTH")?;
        let default_key_quotas = quotas("NB_DEFAULT_KEY_PER_DAY", "NB_DEFAULT_KEY_PER_MONTH")?;
        let cors_origins = var("NB_CORS_ORIGINS")
            .map(|list| cors_origins(&list))
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            redis_url: var("NB_REDIS_URL")
                .map(|raw| RedisUrl::parse(&raw))
                .transpose()?,
            cors_origins,
            admin_emails,
            default_account_quotas,
            default_key_quotas,
            openai_model_map,
            input_images,
            limits,
            metrics_token: var("NB_METRICS_TOKEN")
                .map(|token| MetricsToken::new(token.trim().to_owned())),
            google_api_key: var("GOOGLE_API_KEY")
                .map(|key| GoogleApiKey::new(key.trim().to_owned())),
            google_base_url: match var("GOOGLE_GEMINI_BASE_URL") {
                Some(url) => http_url("GOOGLE_GEMINI_BASE_URL", &url)?,
                None => nb_imagen::DEFAULT_BASE_URL.to_owned(),
            },
            image_models,
            upstream,
            google_http2_prior_knowledge: flag(&var, "GOOGLE_GEMINI_HTTP2_PRIOR_KNOWLEDGE")?,
            google_streams_per_connection: positive_usize(
                &var,
                "NB_UPSTREAM_STREAMS_PER_CONNECTION",
                100,
            )?,
            storage: storage_config(&var)?,
            public_base_url: var("NB_PUBLIC_BASE_URL")
                .map(|url| http_url("NB_PUBLIC_BASE_URL", &url))
                .transpose()?,
            listen: listen_address(var("NB_LISTEN"))?,
            database_url,
            database_pool: PoolOptions {
                max_connections,
                acquire_timeout,
                statement_timeout,
            },
            jwt_secret,
            access_token_ttl: Duration::from_secs(ttl_seconds),
            bcrypt_cost,
            data_dir,
            workers,
            log_format,
        })
    }
}

/// A duration in whole seconds, at least 1.
fn positive_seconds(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = parse_var(var, name, default.as_secs())?;
    if value == 0 {
        return Err(invalid(name, "must be at least 1"));
    }
    Ok(Duration::from_secs(value))
}

fn limits_config(var: &impl Fn(&str) -> Option<String>) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    let seconds = |name: &'static str, default: Duration| positive_seconds(var, name, default);
    let positive = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
        let value = parse_var(var, name, default)?;
        if value == 0 {
            return Err(invalid(name, "must be at least 1"));
        }
        Ok(value)
    };
    let max_body_bytes = parse_var(var, "NB_MAX_BODY_BYTES", defaults.max_body_bytes)?;
    if max_body_bytes < 1024 {
        return Err(invalid("NB_MAX_BODY_BYTES", "must be at least 1024"));
    }
    let idempotency_ttl_hours = parse_var(
        var,
        "NB_IDEMPOTENCY_TTL_HOURS",
        defaults.idempotency_ttl.as_secs() / 3600,
    )?;
    if !(1..=720).contains(&idempotency_ttl_hours) {
        return Err(invalid(
            "NB_IDEMPOTENCY_TTL_HOURS",
            "must be from 1 to 720 (30 days)",
        ));
    }
    let trusted_proxy_hops = if flag(var, "NB_TRUST_FORWARDED_FOR")? {
        positive_usize(var, "NB_TRUSTED_PROXY_HOPS", 1)?
    } else {
        0
    };
    Ok(Limits {
        max_body_bytes,
        client_request_timeout: seconds(
            "NB_CLIENT_REQUEST_TIMEOUT_SECONDS",
            defaults.client_request_timeout,
        )?,
        keep_alive: seconds("NB_KEEP_ALIVE_SECONDS", defaults.keep_alive)?,
        client_body_timeout: seconds(
            "NB_CLIENT_BODY_TIMEOUT_SECONDS",
            defaults.client_body_timeout,
        )?,
        auth_attempts_per_minute_per_ip: positive(
            "NB_AUTH_ATTEMPTS_PER_MINUTE_PER_IP",
            defaults.auth_attempts_per_minute_per_ip,
        )?,
        auth_attempts_per_minute_per_email_and_ip: positive(
            "NB_AUTH_ATTEMPTS_PER_MINUTE_PER_EMAIL_AND_IP",
            defaults.auth_attempts_per_minute_per_email_and_ip,
        )?,
        auth_attempts_per_minute_per_email: positive(
            "NB_AUTH_ATTEMPTS_PER_MINUTE_PER_EMAIL",
            defaults.auth_attempts_per_minute_per_email,
        )?,
        generations_per_minute_per_key: positive(
            "NB_GENERATIONS_PER_MINUTE_PER_KEY",
            defaults.generations_per_minute_per_key,
        )?,
        generations_per_minute_per_account: positive(
            "NB_GENERATIONS_PER_MINUTE_PER_ACCOUNT",
            defaults.generations_per_minute_per_account,
        )?,
        max_active_keys_per_account: positive(
            "NB_MAX_ACTIVE_KEYS_PER_ACCOUNT",
            defaults.max_active_keys_per_account,
        )?,
        upstream_concurrency: positive_usize(
            var,
            "NB_UPSTREAM_CONCURRENCY",
            defaults.upstream_concurrency,
        )?,
        upstream_queue_timeout: seconds(
            "NB_UPSTREAM_QUEUE_TIMEOUT_SECONDS",
            defaults.upstream_queue_timeout,
        )?,
        trusted_proxy_hops,
        shutdown_grace: seconds("NB_SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace)?,
        shutdown_drain: Duration::from_secs(parse_var(
            var,
            "NB_SHUTDOWN_DRAIN_SECONDS",
            defaults.shutdown_drain.as_secs(),
        )?),
        key_cache_ttl: Duration::from_secs(parse_var(
            var,
            "NB_KEY_CACHE_TTL_SECONDS",
            defaults.key_cache_ttl.as_secs(),
        )?),
        idempotency_ttl: Duration::from_secs(idempotency_ttl_hours * 3600),
        rate_limits: match var("NB_RATE_LIMITS").as_deref() {
            None | Some("shared") => RateLimitStore::Shared,
            Some("memory") => RateLimitStore::Memory,
            Some(_) => return Err(invalid("NB_RATE_LIMITS", "must be shared or memory")),
        },
    })
}

/// `admin@example.com,ops@example.com`, each a valid address (normalised like every email).
fn admin_emails(list: &str) -> Result<AdminEmails, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|email| !email.is_empty())
        .map(|email| {
            EmailAddress::parse(email).map_err(|_| {
                invalid(
                    "NB_ADMIN_EMAILS",
                    &format!("{email:?} is not an email address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(AdminEmails::new)
}

/// A positive quota, or none when unset.
fn optional_limit(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<QuotaLimit>, ConfigError> {
    var(name)
        .map(|raw| {
            let value: u64 = parse_value(name, &raw)?;
            QuotaLimit::new(value).ok_or_else(|| invalid(name, "must be at least 1"))
        })
        .transpose()
}

fn input_image_limits(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<InputImageLimits, ConfigError> {
    let defaults = InputImageLimits::default();
    let limits = InputImageLimits {
        max_images: positive_usize(var, "NB_MAX_INPUT_IMAGES", defaults.max_images)?,
        max_image_bytes: positive_usize(var, "NB_MAX_INPUT_IMAGE_BYTES", defaults.max_image_bytes)?,
        max_total_bytes: positive_usize(
            var,
            "NB_MAX_INPUT_IMAGES_TOTAL_BYTES",
            defaults.max_total_bytes,
        )?,
    };
    if limits.max_total_bytes < limits.max_image_bytes {
        return Err(invalid(
            "NB_MAX_INPUT_IMAGES_TOTAL_BYTES",
            "must be at least NB_MAX_INPUT_IMAGE_BYTES",
        ));
    }
    Ok(limits)
}

fn positive_usize(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    let value = parse_var(var, name, default)?;
    if value == 0 {
        return Err(invalid(name, "must be at least 1"));
    }
    Ok(value)
}

/// `host:port` (`127.0.0.1:8000`, `[::]:8000`, `localhost:8000`): checked now, so a typo
/// stops the server with a clear message instead of failing at bind time.
fn listen_address(raw: Option<String>) -> Result<String, ConfigError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LISTEN.to_owned());
    };
    let raw = raw.trim();
    if raw.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(raw.to_owned());
    }
    let valid_host_and_port = raw.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        host_ok && port.parse::<u16>().is_ok()
    });
    if valid_host_and_port {
        Ok(raw.to_owned())
    } else {
        Err(invalid(
            "NB_LISTEN",
            "must be host:port, such as 127.0.0.1:8000 or [::]:8000",
        ))
    }
}

/// `https://app.example.com,http://localhost:5173`: each an origin (scheme, host and an
/// optional port, nothing more); `*` is refused, every origin must be named.
fn cors_origins(list: &str) -> Result<Vec<String>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let parsed = url::Url::parse(origin).ok();
            let is_origin = parsed.as_ref().is_some_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && url.query().is_none()
                    && !origin.ends_with('/')
            });
            if is_origin {
                Ok(origin.to_owned())
            } else {
                Err(invalid(
                    "NB_CORS_ORIGINS",
                    &format!("{origin:?} is not an origin such as https://app.example.com"),
                ))
            }
        })
        .collect()
}

/// An absolute `http://` or `https://` URL with a host and no query or fragment, returned
/// without a trailing slash.
fn http_url(name: &'static str, raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = url::Url::parse(trimmed)
        .map_err(|error| invalid(name, &format!("{trimmed:?} is not a URL ({error})")))?;
    let acceptable = matches!(parsed.scheme(), "http" | "https")
        && parsed.host().is_some()
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if acceptable {
        Ok(trimmed.to_owned())
    } else {
        Err(invalid(
            name,
            "must be an http:// or https:// URL with a host and no query",
        ))
    }
}

fn flag(var: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match var(name).as_deref().map(str::trim) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(_) => Err(invalid(name, "must be true or false")),
    }
}

fn storage_config(var: &impl Fn(&str) -> Option<String>) -> Result<StorageConfig, ConfigError> {
    let choice = var("NB_STORAGE").map(|choice| choice.trim().to_ascii_lowercase());
    let choice = choice.as_deref().unwrap_or(if var("R2_BUCKET").is_some() {
        "r2"
    } else {
        "local"
    });
    match choice {
        "local" => Ok(StorageConfig::Local),
        "inline" => Ok(StorageConfig::Inline),
        "r2" | "s3" => {
            let required = |name: &'static str| {
                var(name)
                    .map(|value| value.trim().to_owned())
                    .ok_or_else(|| {
                        invalid(
                            name,
                            "is required when images are stored in R2/S3 (NB_STORAGE=r2)",
                        )
                    })
            };
            let account_id = var("R2_ACCOUNT_ID").map(|id| id.trim().to_owned());
            let endpoint = var("R2_ENDPOINT").map(|url| url.trim().to_owned());
            if account_id.is_none() && endpoint.is_none() {
                return Err(invalid(
                    "R2_ACCOUNT_ID",
                    "or R2_ENDPOINT is required for R2/S3 storage",
                ));
            }
            let presign_expiry = Duration::from_secs(parse_var(
                var,
                "R2_PRESIGN_EXPIRY_SECONDS",
                DEFAULT_PRESIGN_EXPIRY_SECONDS,
            )?);
            if presign_expiry.is_zero() || presign_expiry > MAX_PRESIGN_EXPIRY {
                return Err(invalid(
                    "R2_PRESIGN_EXPIRY_SECONDS",
                    "must be between 1 and 604800 (7 days)",
                ));
            }
            Ok(StorageConfig::S3(S3Settings {
                account_id,
                endpoint,
                region: var("R2_REGION").unwrap_or_else(|| "auto".into()),
                access_key: required("R2_ACCESS_KEY")?,
                secret_key: S3Secret::new(required("R2_SECRET_KEY")?),
                bucket: required("R2_BUCKET")?,
                public_url: var("R2_PUBLIC_URL").map(|url| url.trim().to_owned()),
                presign_expiry,
                request_timeout: positive_seconds(
                    var,
                    "R2_REQUEST_TIMEOUT_SECONDS",
                    DEFAULT_STORE_REQUEST_TIMEOUT,
                )?,
            }))
        }
        _ => Err(invalid("NB_STORAGE", "must be local, r2, s3 or inline")),
    }
}

/// How long one request to R2/S3 may take (`R2_REQUEST_TIMEOUT_SECONDS`).
const DEFAULT_STORE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn parse_value<T: FromStr>(name: &'static str, raw: &str) -> Result<T, ConfigError> {
    raw.trim().parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("{raw:?} is not a valid number"),
    })
}

fn parse_var<T: FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    var(name).map_or(Ok(default), |raw| parse_value(name, &raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let config = config(&[]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8000");
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite("data/nanobanana.db".into())
        );
        assert_eq!(config.bcrypt_cost, 12);
        assert!(config.jwt_secret.is_none());
        assert_eq!(config.access_token_ttl, Duration::from_secs(86_400));
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn the_sqlite_default_follows_the_data_dir() {
        let config = config(&[("NB_DATA_DIR", "/var/lib/nb")]).unwrap();
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite("/var/lib/nb/nanobanana.db".into())
        );
    }

    #[test]
    fn an_unknown_database_scheme_is_a_clear_error() {
        let error = config(&[("DATABASE_URL", "mysql://localhost/nb")]).unwrap_err();
        assert!(error.to_string().contains("DATABASE_URL"), "{error}");
    }

    #[test]
    fn short_jwt_secrets_are_refused_and_never_printed() {
        let error = config(&[("JWT_SECRET", "hunter2")]).unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        let long = "x".repeat(40);
        let config = config(&[("JWT_SECRET", &long)]).unwrap();
        assert!(!format!("{config:?}").contains(&long));
    }

    #[test]
    fn storage_is_local_unless_r2_is_configured() {
        assert!(matches!(config(&[]).unwrap().storage, StorageConfig::Local));
        assert!(matches!(
            config(&[("NB_STORAGE", "inline")]).unwrap().storage,
            StorageConfig::Inline
        ));
        let r2 = [
            ("R2_ACCOUNT_ID", "abc"),
            ("R2_ACCESS_KEY", "ak"),
            ("R2_SECRET_KEY", "very-secret-r2-key"),
            ("R2_BUCKET", "images"),
        ];
        let config_r2 = config(&r2).unwrap();
        assert!(matches!(config_r2.storage, StorageConfig::S3(_)));
        assert!(!format!("{config_r2:?}").contains("very-secret-r2-key"));
        let error = config(&[("NB_STORAGE", "r2"), ("R2_ACCOUNT_ID", "abc")]).unwrap_err();
        assert!(error.to_string().contains("R2_ACCESS_KEY"), "{error}");
        assert!(config(&[("NB_STORAGE", "ftp")]).is_err());
        let long_expiry = [r2.as_slice(), &[("R2_PRESIGN_EXPIRY_SECONDS", "604801")]].concat();
        assert!(config(&long_expiry).is_err());
    }

    #[test]
    fn models_default_to_the_current_nano_banana() {
        let models = config(&[]).unwrap().image_models;
        assert_eq!(models.default_model().as_str(), "gemini-3.1-flash-image");
        let chosen = config(&[(
            "NB_IMAGE_MODELS",
            "gemini-3-pro-image, imagen-4.0-generate-001",
        )])
        .unwrap();
        assert_eq!(
            chosen.image_models.default_model().as_str(),
            "gemini-3-pro-image"
        );
        assert!(config(&[("NB_IMAGE_MODELS", " , ")]).is_err());
    }

    #[test]
    fn the_google_key_is_optional_and_never_printed() {
        assert!(config(&[]).unwrap().google_api_key.is_none());
        let config = config(&[("GOOGLE_API_KEY", "AIza-very-secret")]).unwrap();
        assert!(config.google_api_key.is_some());
        assert!(!format!("{config:?}").contains("AIza-very-secret"));
    }

    #[test]
    fn the_redis_url_is_optional_checked_and_never_printed() {
        assert!(config(&[]).unwrap().redis_url.is_none());
        let url = "rediss://default:redis-very-secret@cache.example:6380";
        let config_with_redis = config(&[("NB_REDIS_URL", url)]).unwrap();
        assert_eq!(
            config_with_redis
                .redis_url
                .as_ref()
                .map(RedisUrl::expose_secret),
            Some(url)
        );
        assert!(!format!("{config_with_redis:?}").contains("redis-very-secret"));
        let error = config(&[("NB_REDIS_URL", "http://user:redis-very-secret@x")]).unwrap_err();
        assert!(error.to_string().contains("NB_REDIS_URL"), "{error}");
        assert!(!error.to_string().contains("redis-very-secret"), "{error}");
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        let limits = config(&[]).unwrap().limits;
        assert_eq!(limits.max_body_bytes, 65_536);
        assert_eq!(limits.generations_per_minute_per_key, 60);
        assert_eq!(limits.trusted_proxy_hops, 0);
        let custom = config(&[
            ("NB_GENERATIONS_PER_MINUTE_PER_KEY", "5"),
            ("NB_TRUST_FORWARDED_FOR", "true"),
        ])
        .unwrap()
        .limits;
        assert_eq!(custom.generations_per_minute_per_key, 5);
        assert_eq!(custom.trusted_proxy_hops, 1);
        let two_proxies = config(&[
            ("NB_TRUST_FORWARDED_FOR", "true"),
            ("NB_TRUSTED_PROXY_HOPS", "2"),
        ])
        .unwrap()
        .limits;
        assert_eq!(two_proxies.trusted_proxy_hops, 2);
        assert!(config(&[("NB_GENERATIONS_PER_MINUTE_PER_KEY", "0")]).is_err());
        assert!(config(&[("NB_MAX_BODY_BYTES", "10")]).is_err());
        assert!(config(&[("NB_SHUTDOWN_GRACE_SECONDS", "0")]).is_err());
        let token = config(&[("NB_METRICS_TOKEN", "metrics-secret")]).unwrap();
        assert!(!format!("{token:?}").contains("metrics-secret"));
    }

    #[test]
    fn addresses_and_urls_are_checked_at_start_up() {
        for good in ["0.0.0.0:8000", "[::]:8000", "localhost:9000"] {
            assert_eq!(config(&[("NB_LISTEN", good)]).unwrap().listen, good);
        }
        for bad in ["8000", "0.0.0.0", "0.0.0.0:http", "host:99999", ":8000"] {
            let error = config(&[("NB_LISTEN", bad)]).unwrap_err();
            assert!(error.to_string().contains("NB_LISTEN"), "{bad}: {error}");
        }
        let config_with = |name, value| config(&[(name, value)]);
        assert_eq!(
            config_with("NB_PUBLIC_BASE_URL", "https://img.example.com/")
                .unwrap()
                .public_base_url
                .as_deref(),
            Some("https://img.example.com")
        );
        for name in ["NB_PUBLIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL"] {
            for bad in [
                "img.example.com",
                "ftp://x.example.com",
                "https://x.io/?a=b",
                "http://",
            ] {
                let error = config_with(name, bad).unwrap_err();
                assert!(error.to_string().contains(name), "{bad}: {error}");
            }
        }
        assert_eq!(
            config_with("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9000/")
                .unwrap()
                .google_base_url,
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn input_image_limits_have_defaults_and_are_checked() {
        assert_eq!(
            config(&[]).unwrap().input_images,
            InputImageLimits::default()
        );
        let custom = config(&[
            ("NB_MAX_INPUT_IMAGES", "2"),
            ("NB_MAX_INPUT_IMAGE_BYTES", "1000"),
        ]);
        assert_eq!(custom.unwrap().input_images.max_images, 2);
        assert!(config(&[("NB_MAX_INPUT_IMAGES", "0")]).is_err());
        assert!(config(&[("NB_MAX_INPUT_IMAGES_TOTAL_BYTES", "10")]).is_err());
    }

    #[test]
    fn the_openai_model_map_names_allowed_models() {
        let mapped = config(&[
            ("NB_IMAGE_MODELS", "gemini-a,gemini-b"),
            ("NB_OPENAI_MODEL_MAP", "gpt-image-1=gemini-b"),
        ])
        .unwrap();
        let model = mapped
            .openai_model_map
            .resolve(Some("gpt-image-1"), &mapped.image_models)
            .unwrap();
        assert_eq!(model.as_str(), "gemini-b");
        let error = config(&[("NB_OPENAI_MODEL_MAP", "gpt-image-1=nope")]).unwrap_err();
        assert!(error.to_string().contains("NB_OPENAI_MODEL_MAP"), "{error}");
    }

    #[test]
    fn admins_and_default_quotas_are_read() {
        let config = config(&[
            ("NB_ADMIN_EMAILS", "Root@Example.com, ops@example.com"),
            ("NB_DEFAULT_KEY_PER_DAY", "100"),
            ("NB_DEFAULT_ACCOUNT_PER_MONTH", "5000"),
        ])
        .unwrap();
        assert!(
            config
                .admin_emails
                .includes(&EmailAddress::parse("root@example.com").unwrap())
        );
        assert_eq!(
            config.default_key_quotas.per_day.map(QuotaLimit::get),
            Some(100)
        );
        assert_eq!(config.default_key_quotas.per_month, None);
        assert_eq!(
            config.default_account_quotas.per_month.map(QuotaLimit::get),
            Some(5000)
        );
        assert!(self::config(&[("NB_ADMIN_EMAILS", "not an email")]).is_err());
        assert!(self::config(&[("NB_DEFAULT_KEY_PER_DAY", "0")]).is_err());
    }

    #[test]
    fn cors_origins_must_be_named_origins() {
        assert!(config(&[]).unwrap().cors_origins.is_empty());
        let two = config(&[(
            "NB_CORS_ORIGINS",
            "https://app.example.com, http://localhost:5173",
        )]);
        assert_eq!(
            two.unwrap().cors_origins,
            ["https://app.example.com", "http://localhost:5173"]
        );
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/path",
            "https://a.io/",
        ] {
            assert!(config(&[("NB_CORS_ORIGINS", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_zero_timeout_is_reported_under_its_own_name() {
        for name in [
            "NB_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS",
            "NB_UPSTREAM_DEADLINE_SECONDS",
        ] {
            let error = config(&[(name, "0")]).unwrap_err();
            assert!(error.to_string().starts_with(name), "{error}");
        }
    }

    #[test]
    fn streams_per_connection_to_google_default_to_googles_cap() {
        assert_eq!(config(&[]).unwrap().google_streams_per_connection, 100);
        let set = config(&[("NB_UPSTREAM_STREAMS_PER_CONNECTION", "8")]).unwrap();
        assert_eq!(set.google_streams_per_connection, 8);
        let error = config(&[("NB_UPSTREAM_STREAMS_PER_CONNECTION", "0")]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("NB_UPSTREAM_STREAMS_PER_CONNECTION"),
            "{error}"
        );
    }

    #[test]
    fn the_upstream_cap_defaults_from_the_limits_table() {
        assert_eq!(
            config(&[]).unwrap().limits.upstream_concurrency,
            Limits::default().upstream_concurrency
        );
        assert_eq!(
            config(&[("NB_UPSTREAM_CONCURRENCY", "3")])
                .unwrap()
                .limits
                .upstream_concurrency,
            3
        );
        assert!(config(&[("NB_UPSTREAM_CONCURRENCY", "0")]).is_err());
    }

    #[test]
    fn numbers_are_checked() {
        assert!(config(&[("NB_BCRYPT_COST", "3")]).is_err());
        assert!(config(&[("NB_BCRYPT_COST", "twelve")]).is_err());
        assert!(config(&[("NB_DB_POOL_SIZE", "0")]).is_err());
        assert!(config(&[("NB_LOG_FORMAT", "xml")]).is_err());
        assert_eq!(config(&[("NB_BCRYPT_COST", "4")]).unwrap().bcrypt_cost, 4);
    }
}
