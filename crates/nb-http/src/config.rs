//! Configuration: read once from the environment at start-up into [`Config`].
//! Tests build a `Config` in code instead.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nb_db::{DatabaseUrl, PoolOptions};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_BCRYPT_COST: u32 = 12;
pub const DEFAULT_ACCESS_TOKEN_TTL_SECONDS: u64 = 24 * 60 * 60;
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
        Ok(Self {
            listen: var("NB_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()),
            database_url,
            database_pool: PoolOptions {
                max_connections,
                acquire_timeout,
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
    fn numbers_are_checked() {
        assert!(config(&[("NB_BCRYPT_COST", "3")]).is_err());
        assert!(config(&[("NB_BCRYPT_COST", "twelve")]).is_err());
        assert!(config(&[("NB_DB_POOL_SIZE", "0")]).is_err());
        assert!(config(&[("NB_LOG_FORMAT", "xml")]).is_err());
        assert_eq!(config(&[("NB_BCRYPT_COST", "4")]).unwrap().bcrypt_cost, 4);
    }
}
