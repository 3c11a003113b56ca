//! Where settings come from: every environment variable the server reads, the key it sets
//! in the configuration (the same key a TOML file uses), and how its text becomes a value.
//! [`EnvironmentVariables`] is a figment provider over this table; the file is figment's own
//! TOML provider. The environment wins over the file.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// How a variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// As written.
    Text,
    /// A whole number (left as text when it is not one, so the error names the variable).
    Number,
    /// `true`/`1` or `false`/`0`.
    Flag,
    /// Comma-separated; blanks dropped.
    List,
}

/// One environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    /// Its key in the configuration, `section.field`.
    pub key: &'static str,
    pub kind: Kind,
    /// Holds a credential: its value is never repeated in an error.
    pub secret: bool,
}

const fn var(name: &'static str, key: &'static str, kind: Kind) -> Variable {
    Variable {
        name,
        key,
        kind,
        secret: false,
    }
}

const fn secret(name: &'static str, key: &'static str) -> Variable {
    Variable {
        name,
        key,
        kind: Kind::Text,
        secret: true,
    }
}

use Kind::{Flag, List, Number, Text};

/// Every variable, by section (docs/configuration.md lists the same, with defaults).
pub const VARIABLES: &[Variable] = &[
    var("NB_DATA_DIR", "data_dir", Text),
    var("NB_LOG_FORMAT", "log_format", Text),
    // [server]
    var("NB_LISTEN", "server.listen", Text),
    var("NB_WORKERS", "server.workers", Number),
    var("NB_MAX_BODY_BYTES", "server.max_body_bytes", Number),
    var(
        "NB_MAX_BODY_BYTES_IN_FLIGHT",
        "server.max_body_bytes_in_flight",
        Number,
    ),
    var(
        "NB_CLIENT_REQUEST_TIMEOUT_SECONDS",
        "server.client_request_timeout_seconds",
        Number,
    ),
    var("NB_KEEP_ALIVE_SECONDS", "server.keep_alive_seconds", Number),
    var(
        "NB_CLIENT_BODY_TIMEOUT_SECONDS",
        "server.client_body_timeout_seconds",
        Number,
    ),
    var(
        "NB_CLIENT_BODY_DEADLINE_SECONDS",
        "server.client_body_deadline_seconds",
        Number,
    ),
    var(
        "NB_SHUTDOWN_GRACE_SECONDS",
        "server.shutdown_grace_seconds",
        Number,
    ),
    var(
        "NB_SHUTDOWN_DRAIN_SECONDS",
        "server.shutdown_drain_seconds",
        Number,
    ),
    var("NB_CORS_ORIGINS", "server.cors_origins", List),
    var("NB_TRUST_FORWARDED_FOR", "server.trust_forwarded_for", Flag),
    var("NB_TRUSTED_PROXY_HOPS", "server.trusted_proxy_hops", Number),
    // [database]
    secret("DATABASE_URL", "database.url"),
    var("NB_DB_POOL_SIZE", "database.pool_size", Number),
    var(
        "NB_DB_ACQUIRE_TIMEOUT_SECONDS",
        "database.acquire_timeout_seconds",
        Number,
    ),
    var(
        "NB_DB_STATEMENT_TIMEOUT_SECONDS",
        "database.statement_timeout_seconds",
        Number,
    ),
    // [upstream]
    secret("GOOGLE_API_KEY", "upstream.api_key"),
    secret("GOOGLE_API_KEYS", "upstream.api_keys"),
    // [vertex]
    var("VERTEX_PROJECT", "vertex.project", Text),
    var("VERTEX_LOCATION", "vertex.location", Text),
    var(
        "GOOGLE_APPLICATION_CREDENTIALS",
        "vertex.credentials_file",
        Text,
    ),
    var("VERTEX_BASE_URL", "vertex.base_url", Text),
    var("GOOGLE_GEMINI_BASE_URL", "upstream.base_url", Text),
    var(
        "GOOGLE_GEMINI_HTTP2_PRIOR_KNOWLEDGE",
        "upstream.http2_prior_knowledge",
        Flag,
    ),
    var(
        "NB_UPSTREAM_STREAMS_PER_CONNECTION",
        "upstream.streams_per_connection",
        Number,
    ),
    var(
        "NB_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS",
        "upstream.attempt_timeout_seconds",
        Number,
    ),
    var(
        "NB_UPSTREAM_DEADLINE_SECONDS",
        "upstream.deadline_seconds",
        Number,
    ),
    var("NB_UPSTREAM_MAX_RETRIES", "upstream.max_retries", Number),
    // [models]
    var("NB_IMAGE_MODELS", "models.enabled", List),
    var("NB_MODELS_FILE", "models.catalog_file", Text),
    var("NB_OPENAI_MODEL_MAP", "models.openai_map", Text),
    var("NB_MAX_INPUT_IMAGES", "models.max_input_images", Number),
    var(
        "NB_MAX_INPUT_IMAGE_BYTES",
        "models.max_input_image_bytes",
        Number,
    ),
    var(
        "NB_MAX_INPUT_IMAGES_TOTAL_BYTES",
        "models.max_input_images_total_bytes",
        Number,
    ),
    // [storage]
    var("NB_STORAGE", "storage.backend", Text),
    var("NB_PUBLIC_BASE_URL", "storage.public_base_url", Text),
    var("R2_ACCOUNT_ID", "storage.s3.account_id", Text),
    var("R2_ENDPOINT", "storage.s3.endpoint", Text),
    var("R2_REGION", "storage.s3.region", Text),
    var("R2_ACCESS_KEY", "storage.s3.access_key", Text),
    secret("R2_SECRET_KEY", "storage.s3.secret_key"),
    var("R2_BUCKET", "storage.s3.bucket", Text),
    var("R2_PUBLIC_URL", "storage.s3.public_url", Text),
    var(
        "R2_PRESIGN_EXPIRY_SECONDS",
        "storage.s3.presign_expiry_seconds",
        Number,
    ),
    var(
        "R2_REQUEST_TIMEOUT_SECONDS",
        "storage.s3.request_timeout_seconds",
        Number,
    ),
    // [limits]
    var(
        "NB_AUTH_ATTEMPTS_PER_MINUTE_PER_IP",
        "limits.auth_attempts_per_minute_per_ip",
        Number,
    ),
    var(
        "NB_AUTH_ATTEMPTS_PER_MINUTE_PER_EMAIL_AND_IP",
        "limits.auth_attempts_per_minute_per_email_and_ip",
        Number,
    ),
    var(
        "NB_AUTH_ATTEMPTS_PER_MINUTE_PER_EMAIL",
        "limits.auth_attempts_per_minute_per_email",
        Number,
    ),
    var(
        "NB_GENERATIONS_PER_MINUTE_PER_KEY",
        "limits.generations_per_minute_per_key",
        Number,
    ),
    var(
        "NB_GENERATIONS_PER_MINUTE_PER_ACCOUNT",
        "limits.generations_per_minute_per_account",
        Number,
    ),
    var(
        "NB_RATE_LIMIT_LEASE_PERCENT",
        "limits.rate_limit_lease_percent",
        Number,
    ),
    var(
        "NB_MAX_ACTIVE_KEYS_PER_ACCOUNT",
        "limits.max_active_keys_per_account",
        Number,
    ),
    var(
        "NB_UPSTREAM_CONCURRENCY",
        "limits.upstream_concurrency",
        Number,
    ),
    var(
        "NB_UPSTREAM_QUEUE_TIMEOUT_SECONDS",
        "limits.upstream_queue_timeout_seconds",
        Number,
    ),
    var(
        "NB_KEY_CACHE_TTL_SECONDS",
        "limits.key_cache_ttl_seconds",
        Number,
    ),
    var(
        "NB_IDEMPOTENCY_TTL_HOURS",
        "limits.idempotency_ttl_hours",
        Number,
    ),
    var("NB_MAX_EDIT_TURNS", "limits.max_edit_turns", Number),
    var(
        "NB_MAX_IMAGE_BYTES_IN_FLIGHT",
        "limits.max_image_bytes_in_flight",
        Number,
    ),
    var(
        "NB_MODEL_COOLDOWN_SECONDS",
        "limits.model_cooldown_seconds",
        Number,
    ),
    var("NB_JOB_WORKERS", "jobs.workers", Number),
    var("NB_JOB_LEASE_SECONDS", "jobs.lease_seconds", Number),
    var("NB_JOB_MAX_ATTEMPTS", "jobs.max_attempts", Number),
    var("NB_JOB_TIMEOUT_SECONDS", "jobs.timeout_seconds", Number),
    var("NB_JOB_POLL_INTERVAL_MS", "jobs.poll_interval_ms", Number),
    var(
        "NB_MAX_IMAGES_PER_REQUEST",
        "limits.max_images_per_request",
        Number,
    ),
    var("NB_RATE_LIMITS", "limits.rate_limits", Text),
    var(
        "NB_DEFAULT_ACCOUNT_PER_DAY",
        "limits.default_account_per_day",
        Number,
    ),
    var(
        "NB_DEFAULT_ACCOUNT_PER_MONTH",
        "limits.default_account_per_month",
        Number,
    ),
    var(
        "NB_DEFAULT_KEY_PER_DAY",
        "limits.default_key_per_day",
        Number,
    ),
    var(
        "NB_DEFAULT_KEY_PER_MONTH",
        "limits.default_key_per_month",
        Number,
    ),
    var(
        "NB_DEFAULT_ACCOUNT_BUDGET_USD_PER_DAY",
        "limits.default_account_budget_usd_per_day",
        Text,
    ),
    var(
        "NB_DEFAULT_ACCOUNT_BUDGET_USD_PER_MONTH",
        "limits.default_account_budget_usd_per_month",
        Text,
    ),
    var(
        "NB_DEFAULT_KEY_BUDGET_USD_PER_DAY",
        "limits.default_key_budget_usd_per_day",
        Text,
    ),
    var(
        "NB_DEFAULT_KEY_BUDGET_USD_PER_MONTH",
        "limits.default_key_budget_usd_per_month",
        Text,
    ),
    // [security]
    secret("JWT_SECRET", "security.jwt_secret"),
    var(
        "NB_ACCESS_TOKEN_TTL_SECONDS",
        "security.access_token_ttl_seconds",
        Number,
    ),
    var("NB_BCRYPT_COST", "security.bcrypt_cost", Number),
    var("NB_ADMIN_EMAILS", "security.admin_emails", List),
    secret("NB_METRICS_TOKEN", "security.metrics_token"),
    secret("NB_ENCRYPTION_KEY", "security.encryption_key"),
    // [webhooks]
    var("NB_WEBHOOK_ALLOW_HTTP", "webhooks.allow_http", Flag),
    var(
        "NB_WEBHOOK_ALLOW_PRIVATE_TARGETS",
        "webhooks.allow_private_targets",
        Flag,
    ),
    var("NB_WEBHOOK_RETRY_SCHEDULE", "webhooks.retry_schedule", List),
    // [redis]
    secret("NB_REDIS_URL", "redis.url"),
];

/// The variable that sets `key`, if any.
pub fn variable_for(key: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|variable| variable.key == key)
}

/// The name figment's errors and metadata give this provider's values.
pub const ENVIRONMENT: &str = "environment variable";

/// Every variable of [`VARIABLES`] that `lookup` finds, non-blank, as configuration values.
pub struct EnvironmentVariables<L> {
    lookup: L,
}

impl<L> EnvironmentVariables<L> {
    pub fn new(lookup: L) -> Self {
        Self { lookup }
    }
}

impl<L> std::fmt::Debug for EnvironmentVariables<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentVariables")
            .finish_non_exhaustive()
    }
}

fn value(kind: Kind, raw: &str) -> Value {
    let raw = raw.trim();
    match kind {
        Kind::Text => Value::from(raw.to_owned()),
        Kind::Number => raw
            .parse::<u64>()
            .map_or_else(|_| Value::from(raw.to_owned()), Value::from),
        Kind::Flag => match raw {
            "true" | "1" => Value::from(true),
            "false" | "0" => Value::from(false),
            other => Value::from(other.to_owned()),
        },
        Kind::List => Value::from(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
    }
}

/// Puts `value` at the dotted `key` in `dict`, making the sections on the way.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = dict
                .entry(section.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

impl<L: Fn(&str) -> Option<String>> Provider for EnvironmentVariables<L> {
    fn metadata(&self) -> Metadata {
        // Errors name the variable, not the key it sets.
        Metadata::named(ENVIRONMENT).interpolater(|_profile, path| {
            let key = path.join(".");
            variable_for(&key).map_or(key, |variable| variable.name.to_owned())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        for variable in VARIABLES {
            let Some(raw) = (self.lookup)(variable.name) else {
                continue;
            };
            if raw.trim().is_empty() {
                continue;
            }
            insert(&mut dict, variable.key, value(variable.kind, &raw));
        }
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_variable_and_key_is_listed_once() {
        let names: HashSet<_> = VARIABLES.iter().map(|variable| variable.name).collect();
        let keys: HashSet<_> = VARIABLES.iter().map(|variable| variable.key).collect();
        assert_eq!(names.len(), VARIABLES.len());
        assert_eq!(keys.len(), VARIABLES.len());
    }

    #[test]
    fn text_becomes_the_kind_of_value_the_key_holds() {
        assert_eq!(value(Kind::Number, " 42 "), Value::from(42u64));
        assert_eq!(value(Kind::Number, "x"), Value::from("x".to_owned()));
        assert_eq!(value(Kind::Flag, "1"), Value::from(true));
        assert_eq!(value(Kind::Flag, "false"), Value::from(false));
        assert_eq!(
            value(Kind::List, "a, b,,"),
            Value::from(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(value(Kind::Text, "007"), Value::from("007".to_owned()));
    }

    /// docs/configuration.md has one row per variable, naming its key; and names no
    /// variable the server does not read.
    #[test]
    fn the_documentation_lists_every_variable_with_its_key() {
        let docs = include_str!("../../../../docs/configuration.md");
        for variable in VARIABLES {
            let row = format!("| `{}` | `{}` |", variable.name, variable.key);
            assert!(docs.contains(&row), "docs/configuration.md lacks {row}");
        }
        let documented = docs
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`'))
            .map(|(name, _)| name)
            .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        for name in documented {
            let known =
                name == "NB_CONFIG" || VARIABLES.iter().any(|variable| variable.name == name);
            assert!(
                known,
                "docs/configuration.md documents {name}, which is never read"
            );
        }
    }
}
