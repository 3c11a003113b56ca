//! The sections of the configuration the composition root owns: which models, where images
//! go, the deployment's limits, and security. (The server's, the database's, Google's and
//! Redis's sections are their adapters' own settings types.) Each value is parsed into its
//! type as it is read; what depends on several values is checked by `Config::check`.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use nb_domain::accounts::EmailAddress;
use nb_domain::admin::AdminEmails;
use nb_domain::generation::InputImageLimits;
use nb_domain::money::Usd;
use nb_domain::quota::PeriodLimits;
use nb_domain::rate_limit::{Limits as RateLimits, PerMinute};
use nb_storage::S3Settings;
use secrecy::{ExposeSecret, SecretString};

use super::catalog_file::ModelEntry;
use serde::Deserialize;
use serde_with::{DurationSeconds, serde_as};

/// The models enabled when none are configured.
pub const DEFAULT_IMAGE_MODEL: &str = "gemini-3.1-flash-image";
/// HS256 keys shorter than the hash output weaken it (RFC 7518 §3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[models]`: what clients may ask for and send.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSection {
    /// The models clients may ask for, by id or alias, among the catalog's; the first is the
    /// default.
    pub enabled: ModelNames,
    /// The operator's model catalog file (`NB_MODELS_FILE`): `[[model]]` entries that add to
    /// the built-in catalog and patch it by id.
    pub catalog_file: Option<std::path::PathBuf>,
    /// `[[models.model]]` entries of the configuration file, applied after the catalog file's.
    pub model: Vec<ModelEntry>,
    /// OpenAI model names and the models they mean.
    pub openai_map: OpenAiMapSetting,
    pub max_input_images: NonZeroUsize,
    pub max_input_image_bytes: NonZeroUsize,
    pub max_input_images_total_bytes: NonZeroUsize,
}

impl Default for ModelsSection {
    fn default() -> Self {
        let inputs = InputImageLimits::default();
        Self {
            enabled: ModelNames::default(),
            catalog_file: None,
            model: Vec::new(),
            openai_map: OpenAiMapSetting::default(),
            max_input_images: NonZeroUsize::new(inputs.max_images).unwrap_or(NonZeroUsize::MIN),
            max_input_image_bytes: NonZeroUsize::new(inputs.max_image_bytes)
                .unwrap_or(NonZeroUsize::MIN),
            max_input_images_total_bytes: NonZeroUsize::new(inputs.max_total_bytes)
                .unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl ModelsSection {
    pub fn input_images(&self) -> InputImageLimits {
        InputImageLimits {
            max_images: self.max_input_images.get(),
            max_image_bytes: self.max_input_image_bytes.get(),
            max_total_bytes: self.max_input_images_total_bytes.get(),
        }
    }
}

/// The enabled models' names, as configured (checked against the catalog at load).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ModelNames(pub Vec<String>);

impl Default for ModelNames {
    fn default() -> Self {
        Self(vec![DEFAULT_IMAGE_MODEL.to_owned()])
    }
}

/// `name=model,name=model` (the environment's form) or a table of `name = "model"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OpenAiMapSetting {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl Default for OpenAiMapSetting {
    fn default() -> Self {
        Self::Table(BTreeMap::new())
    }
}

/// Where images are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under the data folder, served by this server at `/images/…`.
    Local,
    /// Cloudflare R2 or any S3-compatible store (`[storage.s3]`).
    #[serde(alias = "r2")]
    S3,
    /// `data:` URLs; nothing is stored.
    Inline,
}

/// `[storage]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Local unless `[storage.s3]` is given.
    pub backend: Option<StorageBackend>,
    /// The base of local image URLs; by default `http://` and the address the server is
    /// bound to.
    pub public_base_url: Option<HttpUrl>,
    pub s3: Option<S3Settings>,
}

impl StorageSection {
    pub fn backend(&self) -> StorageBackend {
        self.backend.unwrap_or(if self.s3.is_some() {
            StorageBackend::S3
        } else {
            StorageBackend::Local
        })
    }
}

/// An absolute `http://` or `https://` URL with a host and no query or fragment, kept
/// without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        let trimmed = raw.trim().trim_end_matches('/');
        let parsed = url::Url::parse(trimmed)
            .map_err(|error| format!("{trimmed:?} is not a URL ({error})"))?;
        let acceptable = matches!(parsed.scheme(), "http" | "https")
            && parsed.host().is_some()
            && parsed.query().is_none()
            && parsed.fragment().is_none();
        if acceptable {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err("must be an http:// or https:// URL with a host and no query".to_owned())
        }
    }
}

/// Where per-minute limits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitStore {
    /// In Redis when it is configured, else in the database when it is PostgreSQL, so they
    /// hold across instances; in memory with SQLite (one instance).
    #[default]
    Shared,
    /// Per instance, whatever the database.
    Memory,
}

/// `[limits]`: what each client may do, and how much the server takes on at once.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Registrations and logins per client network.
    pub auth_attempts_per_minute_per_ip: NonZeroU32,
    /// For one email from one network.
    pub auth_attempts_per_minute_per_email_and_ip: NonZeroU32,
    /// For one email from anywhere (a ceiling).
    pub auth_attempts_per_minute_per_email: NonZeroU32,
    pub generations_per_minute_per_key: NonZeroU32,
    /// Over all of an account's keys.
    pub generations_per_minute_per_account: NonZeroU32,
    pub max_active_keys_per_account: NonZeroU32,
    /// Calls to Google in flight at once, per instance.
    pub upstream_concurrency: NonZeroUsize,
    /// How long a generation waits for a free slot.
    #[serde(rename = "upstream_queue_timeout_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub upstream_queue_timeout: Duration,
    /// How long a verified API key is trusted from memory (0: never).
    #[serde(rename = "key_cache_ttl_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub key_cache_ttl: Duration,
    /// How long an answer is kept for its `Idempotency-Key` (1–720).
    pub idempotency_ttl_hours: u64,
    /// The longest conversational edit, in turns (the new one included).
    pub max_edit_turns: NonZeroUsize,
    /// Bytes of images held whole in memory at once: those converted to another format and
    /// those the answer carries (`b64_json`, streams); more wait for room.
    pub max_image_bytes_in_flight: NonZeroU64,
    /// How long a model that failed 5 requests in a row is skipped in fallback chains.
    #[serde(rename = "model_cooldown_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub model_cooldown: Duration,
    /// The most images one OpenAI request may ask for (`n`), 1–10.
    pub max_images_per_request: u8,
    pub rate_limits: RateLimitStore,
    /// The share of an allowance (percent, 0–100) each instance takes from the shared store
    /// at once and hands out itself; 0 asks the store for every request.
    pub rate_limit_lease_percent: u8,
    /// Quotas of new accounts.
    pub default_account_per_day: Option<NonZeroU64>,
    pub default_account_per_month: Option<NonZeroU64>,
    /// Quotas of new keys created without their own.
    pub default_key_per_day: Option<NonZeroU64>,
    pub default_key_per_month: Option<NonZeroU64>,
    /// Budgets of new accounts and of new live keys created without their own, in dollars.
    pub default_account_budget_usd_per_day: Option<Dollars>,
    pub default_account_budget_usd_per_month: Option<Dollars>,
    pub default_key_budget_usd_per_day: Option<Dollars>,
    pub default_key_budget_usd_per_month: Option<Dollars>,
}

/// `[jobs]`: the queue of asynchronous generations (`NB_JOB_*`).
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSection {
    /// Workers per instance (0: this instance takes no jobs, but accepts them).
    pub workers: usize,
    /// How long a worker's claim on a job lasts unless renewed (it is renewed every third of
    /// it while the job runs); a job whose instance died is taken again after it.
    #[serde(rename = "lease_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub lease: Duration,
    /// Upstream attempts per job.
    pub max_attempts: u32,
    /// A job still queued after this long fails with `queue_timeout`.
    #[serde(rename = "timeout_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub timeout: Duration,
    /// How often an idle worker looks for jobs submitted on other instances.
    #[serde(rename = "poll_interval_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub poll_interval: Duration,
}

impl Default for JobsSection {
    fn default() -> Self {
        let defaults = nb_domain::generation::JobSettings::default();
        Self {
            workers: defaults.workers,
            lease: defaults.lease,
            max_attempts: defaults.max_attempts,
            timeout: defaults.timeout,
            poll_interval: defaults.poll_interval,
        }
    }
}

impl JobsSection {
    pub fn settings(&self) -> nb_domain::generation::JobSettings {
        nb_domain::generation::JobSettings {
            workers: self.workers,
            lease: self.lease.max(Duration::from_secs(3)),
            max_attempts: self.max_attempts.max(1),
            timeout: self.timeout,
            poll_interval: self.poll_interval.max(Duration::from_millis(50)),
        }
    }
}

/// `[webhooks]`: where webhooks may go and how often a failed delivery is retried.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    /// Plain `http://` URLs are accepted (for a receiver on a trusted network).
    pub allow_http: bool,
    /// Private, loopback, link-local and metadata addresses may be targets.
    pub allow_private_targets: bool,
    /// The delays before each retry, in seconds: `n` delays, `n + 1` attempts.
    pub retry_schedule: RetrySeconds,
}

impl WebhooksSection {
    pub fn settings(&self) -> nb_domain::webhooks::WebhookSettings {
        nb_domain::webhooks::WebhookSettings {
            targets: nb_domain::webhooks::TargetPolicy {
                allow_http: self.allow_http,
                allow_private: self.allow_private_targets,
            },
            retries: self.retry_schedule.0.clone(),
        }
    }
}

/// Seconds between webhook attempts: `5,300,1800` (a list, or numbers in the file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetrySeconds(pub nb_domain::webhooks::RetrySchedule);

impl<'de> Deserialize<'de> for RetrySeconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        let delays = Vec::<Written>::deserialize(deserializer)?
            .into_iter()
            .map(|written| match written {
                Written::Number(n) => Ok(n),
                Written::Text(text) => text.trim().parse::<u64>().map_err(|_| {
                    serde::de::Error::custom(format!("{text:?} is not a number of seconds"))
                }),
            })
            .map(|seconds| seconds.map(Duration::from_secs))
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 20 {
            return Err(serde::de::Error::custom("at most 20 retries"));
        }
        Ok(Self(nb_domain::webhooks::RetrySchedule(delays)))
    }
}

/// The key webhook secrets are sealed with: 32 bytes, as 64 hex digits or base64. Never
/// printed.
#[derive(Clone, Deserialize)]
#[serde(try_from = "SecretString")]
pub struct EncryptionKey([u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(…)")
    }
}

impl EncryptionKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or("must be 32 bytes as 64 hex digits or base64")?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| "must be 32 bytes (64 hex digits, or 44 characters of base64)".to_owned())
    }
}

impl TryFrom<SecretString> for EncryptionKey {
    type Error = String;

    fn try_from(secret: SecretString) -> Result<Self, String> {
        Self::parse(secret.expose_secret())
    }
}

/// An amount of dollars in the configuration: a number (`50`, `12.5`) or a decimal string
/// (`"12.50"`, as environment variables give it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dollars(pub Usd);

impl<'de> Deserialize<'de> for Dollars {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Whole(u64),
            Number(f64),
            Text(String),
        }
        let parsed = match Written::deserialize(deserializer)? {
            Written::Whole(n) => Usd::parse(&n.to_string()),
            Written::Number(n) => Usd::from_number(n),
            Written::Text(text) => Usd::parse(&text),
        };
        parsed
            .map(Self)
            .map_err(|error| serde::de::Error::custom(format!("an amount of US dollars {error}")))
    }
}

const fn per_minute(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            auth_attempts_per_minute_per_ip: per_minute(30),
            auth_attempts_per_minute_per_email_and_ip: per_minute(10),
            auth_attempts_per_minute_per_email: per_minute(100),
            generations_per_minute_per_key: per_minute(60),
            generations_per_minute_per_account: per_minute(120),
            max_active_keys_per_account: per_minute(20),
            upstream_concurrency: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            upstream_queue_timeout: Duration::from_secs(30),
            key_cache_ttl: nb_domain::api_keys::DEFAULT_KEY_CACHE_TTL,
            idempotency_ttl_hours: 24,
            max_edit_turns: NonZeroUsize::new(nb_domain::generation::DEFAULT_MAX_EDIT_TURNS)
                .unwrap_or(NonZeroUsize::MIN),
            max_image_bytes_in_flight: NonZeroU64::new(
                nb_domain::generation::DEFAULT_MAX_IMAGE_BYTES_IN_FLIGHT,
            )
            .unwrap_or(NonZeroU64::MIN),
            max_images_per_request: nb_domain::generation::DEFAULT_MAX_IMAGES_PER_REQUEST,
            model_cooldown: nb_domain::generation::DEFAULT_MODEL_COOLDOWN,
            rate_limits: RateLimitStore::Shared,
            rate_limit_lease_percent: nb_domain::rate_limit::DEFAULT_LEASE_PERCENT,
            default_account_per_day: None,
            default_account_per_month: None,
            default_key_per_day: None,
            default_key_per_month: None,
            default_account_budget_usd_per_day: None,
            default_account_budget_usd_per_month: None,
            default_key_budget_usd_per_day: None,
            default_key_budget_usd_per_month: None,
        }
    }
}

impl LimitsSection {
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            auth_per_address: PerMinute(self.auth_attempts_per_minute_per_ip),
            auth_per_email_and_address: PerMinute(self.auth_attempts_per_minute_per_email_and_ip),
            auth_per_email: PerMinute(self.auth_attempts_per_minute_per_email),
            generations_per_key: PerMinute(self.generations_per_minute_per_key),
            generations_per_account: PerMinute(self.generations_per_minute_per_account),
        }
    }

    pub fn default_account_quotas(&self) -> PeriodLimits {
        PeriodLimits {
            per_day: self.default_account_per_day,
            per_month: self.default_account_per_month,
            budget_per_day: self.default_account_budget_usd_per_day.map(|d| d.0),
            budget_per_month: self.default_account_budget_usd_per_month.map(|d| d.0),
        }
    }

    pub fn default_key_quotas(&self) -> PeriodLimits {
        PeriodLimits {
            per_day: self.default_key_per_day,
            per_month: self.default_key_per_month,
            budget_per_day: self.default_key_budget_usd_per_day.map(|d| d.0),
            budget_per_month: self.default_key_budget_usd_per_month.map(|d| d.0),
        }
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_hours * 3600)
    }
}

/// `[security]`: how accounts prove who they are, and who administers.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// What access tokens are signed with; when unset, a secret generated once and kept in
    /// the data folder.
    pub jwt_secret: Option<JwtSecret>,
    /// How long an access token (and its session) stays valid.
    #[serde(rename = "access_token_ttl_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub access_token_ttl: Duration,
    /// bcrypt's work factor (4–31).
    pub bcrypt_cost: u32,
    /// The accounts that may use `/v1/admin/…`.
    pub admin_emails: AdminEmailList,
    /// When set, `GET /metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    /// Seals webhook secrets at rest; when unset, generated once into the data folder on
    /// SQLite, and webhooks are off on PostgreSQL (every instance must share it).
    pub encryption_key: Option<EncryptionKey>,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl: Duration::from_secs(24 * 60 * 60),
            bcrypt_cost: nb_system::DEFAULT_BCRYPT_COST,
            admin_emails: AdminEmailList::default(),
            metrics_token: None,
            encryption_key: None,
        }
    }
}

/// The key access tokens are signed with: at least 32 bytes. Never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SecretString")]
pub struct JwtSecret(SecretString);

impl JwtSecret {
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl TryFrom<SecretString> for JwtSecret {
    type Error = String;

    fn try_from(secret: SecretString) -> Result<Self, String> {
        if secret.expose_secret().len() < MIN_JWT_SECRET_BYTES {
            return Err(format!(
                "must be at least {MIN_JWT_SECRET_BYTES} bytes long"
            ));
        }
        Ok(Self(secret))
    }
}

/// Admin emails, each a valid address (normalised like every email).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct AdminEmailList(pub AdminEmails);

impl TryFrom<Vec<String>> for AdminEmailList {
    type Error = String;

    fn try_from(emails: Vec<String>) -> Result<Self, String> {
        emails
            .iter()
            .map(|email| email.trim())
            .filter(|email| !email.is_empty())
            .map(|email| {
                EmailAddress::parse(email).map_err(|_| format!("{email:?} is not an email address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|emails| Self(AdminEmails::new(emails)))
    }
}
