//! Configuration: typed sections, read once at start-up from environment variables over an
//! optional TOML file (`NB_CONFIG=/etc/nanobanana.toml`), with figment. Every environment
//! variable keeps its name and sets one key of the file ([`sources::VARIABLES`]); the
//! environment wins over the file. Each adapter owns its section's type and defaults
//! (`nb_api::settings::ServerSettings`, `nb_db::DatabaseSettings`, `nb_imagen::GeminiSettings`,
//! `nb_storage::S3Settings`, `nb_redis::RedisSettings`); the root owns the rest
//! ([`sections`]). A value that cannot be used stops start-up with a message naming the
//! variable, or the key and the file, and what is accepted. Tests build a `Config` in code.

pub mod catalog_file;
pub mod sections;
pub mod sources;

use std::path::PathBuf;

use figment::Figment;
use figment::error::Kind;
use figment::providers::{Format, Toml};
use nb_api::openai::model_map::OpenAiModelMap;
use nb_api::settings::ServerSettings;
use nb_db::{DatabaseSettings, DatabaseUrl};
use nb_domain::generation::{AllowedModels, ModelCatalog};
use nb_domain::settings::InvalidSetting;
use nb_imagen::GeminiSettings;
use nb_redis::RedisSettings;
use serde::Deserialize;

use self::catalog_file::{CatalogFileError, load_catalog};
use self::sections::{
    JobsSection, LimitsSection, LogFormat, ModelsSection, OpenAiMapSetting, SecuritySection,
    StorageBackend, StorageSection, WebhooksSection,
};
use self::sources::{ENVIRONMENT, EnvironmentVariables, variable_for};

/// The variable that names the configuration file.
pub const CONFIG_FILE_VARIABLE: &str = "NB_CONFIG";
/// Where the SQLite file, the generated JWT secret and local images live by default.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Everything the server needs to know, decided before it starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite file, the generated JWT secret and local images live.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub upstream: GeminiSettings,
    pub models: ModelsSection,
    pub storage: StorageSection,
    pub limits: LimitsSection,
    pub jobs: JobsSection,
    pub webhooks: WebhooksSection,
    pub security: SecuritySection,
    pub redis: RedisSettings,
    /// Vertex AI, for catalog models with `provider = "vertex"`.
    pub vertex: nb_imagen::VertexSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log_format: LogFormat::default(),
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            upstream: GeminiSettings::default(),
            models: ModelsSection::default(),
            storage: StorageSection::default(),
            limits: LimitsSection::default(),
            jobs: JobsSection::default(),
            webhooks: WebhooksSection::default(),
            security: SecuritySection::default(),
            redis: RedisSettings::default(),
            vertex: nb_imagen::VertexSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `setting` is the variable (`NB_WORKERS`), or the key and its file
    /// (`server.workers in /etc/nanobanana.toml`).
    #[error("{setting} is invalid: {reason}")]
    Invalid { setting: String, reason: String },
    #[error("{CONFIG_FILE_VARIABLE} names {path}, which cannot be read")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// Reads every setting from the process environment (and the file it names).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup` (the environment, or a test's table), over the
    /// file `NB_CONFIG` names when it names one.
    pub fn load(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = lookup(CONFIG_FILE_VARIABLE)
            .map(|path| path.trim().to_owned())
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        let mut figment = Figment::new();
        if let Some(path) = &file {
            // figment skips a missing file silently: a file the operator named must exist.
            std::fs::metadata(path).map_err(|source| ConfigError::File {
                path: path.clone(),
                source,
            })?;
            figment = figment.merge(Toml::file(path));
        }
        let figment = figment.merge(EnvironmentVariables::new(lookup));
        let config: Self = figment
            .extract()
            .map_err(|error| from_figment(&figment, error))?;
        config.check(&Names { figment: &figment })?;
        Ok(config)
    }

    /// The database: `DATABASE_URL`, or SQLite in the data folder.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::Sqlite(self.data_dir.join("nanobanana.db")))
    }

    /// The model catalog: the built-in one, patched by the catalog file and the
    /// configuration's `[[models.model]]` entries (checked at load).
    pub fn model_catalog(&self) -> Result<ModelCatalog, InvalidSetting> {
        load_catalog(self.models.catalog_file.as_deref(), &self.models.model).map_err(|error| {
            let key = match (&error, &self.models.catalog_file) {
                (CatalogFileError::Catalog(_), None) => "model",
                _ => "catalog_file",
            };
            let reason = match &self.models.catalog_file {
                Some(path) => format!("{} ({})", error, path.display()),
                None => error.to_string(),
            };
            InvalidSetting::new(key, reason)
        })
    }

    /// The enabled models, among the catalog's (checked at load).
    pub fn image_models(&self) -> Result<AllowedModels, InvalidSetting> {
        let catalog = self.model_catalog()?;
        AllowedModels::from_catalog(&catalog, self.models.enabled.0.iter().cloned())
            .map_err(|error| InvalidSetting::new("enabled", error.to_string()))
    }

    /// The OpenAI model names the operator mapped, each to one of `models` (the enabled ones,
    /// [`Self::image_models`]; checked at load).
    pub fn openai_model_map(
        &self,
        models: &AllowedModels,
    ) -> Result<OpenAiModelMap, InvalidSetting> {
        let mapped = match &self.models.openai_map {
            OpenAiMapSetting::Text(raw) => OpenAiModelMap::parse(raw, models),
            OpenAiMapSetting::Table(pairs) => OpenAiModelMap::from_pairs(pairs.clone(), models),
        };
        mapped.map_err(|error| InvalidSetting::new("openai_map", error.to_string()))
    }

    /// What no single value says: each section's own rules, and the rules between values.
    fn check(&self, names: &Names<'_>) -> Result<(), ConfigError> {
        let in_section = |section: &'static str| {
            move |invalid: InvalidSetting| {
                names.invalid(&format!("{section}.{}", invalid.key), invalid.reason)
            }
        };
        self.server.check().map_err(in_section("server"))?;
        self.database.check().map_err(in_section("database"))?;
        self.upstream.check().map_err(in_section("upstream"))?;
        self.vertex.check().map_err(in_section("vertex"))?;
        if let Some(s3) = &self.storage.s3 {
            s3.check().map_err(in_section("storage.s3"))?;
        }
        if self.storage.backend() == StorageBackend::S3 && self.storage.s3.is_none() {
            return Err(names.invalid(
                "storage.s3.bucket",
                "is required when images are stored in R2/S3 (with R2_ACCESS_KEY, R2_SECRET_KEY \
                 and R2_ACCOUNT_ID or R2_ENDPOINT)"
                    .into(),
            ));
        }
        // The catalog (its file read once here), the enabled models, then the OpenAI map.
        let models = self.image_models().map_err(in_section("models"))?;
        self.openai_model_map(&models)
            .map_err(in_section("models"))?;
        if self.models.max_input_images_total_bytes < self.models.max_input_image_bytes {
            return Err(names.invalid(
                "models.max_input_images_total_bytes",
                format!(
                    "must be at least {}",
                    names.name("models.max_input_image_bytes")
                ),
            ));
        }
        let largest_body = nb_api::body_budget::largest_request_body(
            self.server.max_body_bytes,
            self.models.input_images(),
        );
        if self.server.max_body_bytes_in_flight < largest_body {
            return Err(names.invalid(
                "server.max_body_bytes_in_flight",
                format!(
                    "must be at least {largest_body}: the largest body one request may send \
                     (with {} and {})",
                    names.name("server.max_body_bytes"),
                    names.name("models.max_input_images_total_bytes")
                ),
            ));
        }
        let limits = &self.limits;
        if limits.upstream_queue_timeout.is_zero() {
            return Err(names.invalid(
                "limits.upstream_queue_timeout_seconds",
                "must be at least 1".into(),
            ));
        }
        if !(1..=nb_domain::generation::DEFAULT_MAX_IMAGES_PER_REQUEST)
            .contains(&limits.max_images_per_request)
        {
            return Err(names.invalid(
                "limits.max_images_per_request",
                "must be from 1 to 10 (OpenAI's n)".into(),
            ));
        }
        if limits.rate_limit_lease_percent > 100 {
            return Err(names.invalid(
                "limits.rate_limit_lease_percent",
                "must be from 0 to 100".into(),
            ));
        }
        if !(1..=720).contains(&limits.idempotency_ttl_hours) {
            return Err(names.invalid(
                "limits.idempotency_ttl_hours",
                "must be from 1 to 720 (30 days)".into(),
            ));
        }
        let security = &self.security;
        if security.access_token_ttl.is_zero() {
            return Err(names.invalid(
                "security.access_token_ttl_seconds",
                "must be at least 1".into(),
            ));
        }
        if !nb_system::BCRYPT_COSTS.contains(&security.bcrypt_cost) {
            return Err(names.invalid("security.bcrypt_cost", "must be between 4 and 31".into()));
        }
        Ok(())
    }
}

/// How a setting is named to the operator: by the variable when the environment set it, by
/// the key and its file when the file did, and by both when neither did (it is missing).
struct Names<'a> {
    figment: &'a Figment,
}

impl Names<'_> {
    fn name(&self, key: &str) -> String {
        name_of(self.figment, key)
    }

    fn invalid(&self, key: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            setting: self.name(key),
            reason,
        }
    }
}

fn name_of(figment: &Figment, key: &str) -> String {
    let variable = variable_for(key).map(|variable| variable.name);
    match figment.find_metadata(key) {
        Some(metadata) if metadata.name == ENVIRONMENT => {
            variable.map_or_else(|| key.to_owned(), str::to_owned)
        }
        Some(metadata) => match &metadata.source {
            Some(source) => format!("{key} in {source}"),
            None => key.to_owned(),
        },
        None => match variable {
            Some(variable) => format!("{variable} ({key} in a configuration file)"),
            None => key.to_owned(),
        },
    }
}

/// A figment error as the operator should read it: the setting's name, and what is wrong
/// with it (never the value of a secret).
fn from_figment(figment: &Figment, error: figment::Error) -> ConfigError {
    // An item of a list is named by its list (`server.cors_origins`, not `….0`).
    let mut path: Vec<String> = error
        .path
        .iter()
        .filter(|segment| !segment.chars().all(|c| c.is_ascii_digit()))
        .cloned()
        .collect();
    if let Kind::MissingField(field) = &error.kind {
        path.push(field.to_string());
    }
    let key = path.join(".");
    let secret = variable_for(&key).is_some_and(|variable| variable.secret);
    let reason = match &error.kind {
        Kind::MissingField(_) => "is required with the rest of its section".to_owned(),
        Kind::InvalidType(..) | Kind::InvalidValue(..) if secret => "must be text".to_owned(),
        kind => kind.to_string(),
    };
    if key.is_empty() {
        // Not about one value: the file itself (TOML syntax).
        let source = error
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.source.as_ref())
            .map_or_else(|| "the configuration file".to_owned(), ToString::to_string);
        return ConfigError::Invalid {
            setting: format!("{CONFIG_FILE_VARIABLE} file {source}"),
            reason,
        };
    }
    let from_environment = error
        .metadata
        .as_ref()
        .is_some_and(|metadata| metadata.name == ENVIRONMENT);
    let setting = match (from_environment, variable_for(&key)) {
        (true, Some(variable)) => variable.name.to_owned(),
        _ => name_of(figment, &key),
    };
    ConfigError::Invalid { setting, reason }
}

#[cfg(test)]
mod tests;
