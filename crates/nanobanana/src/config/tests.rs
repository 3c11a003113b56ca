use std::collections::HashMap;
use std::time::Duration;

use nb_domain::accounts::EmailAddress;
use nb_domain::generation::InputImageLimits;
use nb_domain::quota::QuotaLimit;
use secrecy::ExposeSecret;

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(|name| vars.get(name).cloned())
}

/// A configuration file holding `toml`, and the variables that name it plus `vars`.
fn with_file(
    toml: &str,
    vars: &[(&str, &str)],
) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("nanobanana.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.display().to_string();
    let mut all = vec![("NB_CONFIG", path.as_str())];
    all.extend_from_slice(vars);
    let loaded = config(&all);
    (folder, loaded)
}

fn message(result: Result<Config, ConfigError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn defaults_are_the_embedded_setup() {
    let config = config(&[]).unwrap();
    assert_eq!(config.server.listen.as_str(), "127.0.0.1:8000");
    assert_eq!(
        config.database_url(),
        DatabaseUrl::Sqlite("data/nanobanana.db".into())
    );
    assert_eq!(config.security.bcrypt_cost, 12);
    assert!(config.security.jwt_secret.is_none());
    assert_eq!(
        config.security.access_token_ttl,
        Duration::from_secs(86_400)
    );
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.storage.backend(), StorageBackend::Local);
}

#[test]
fn the_sqlite_default_follows_the_data_dir() {
    let config = config(&[("NB_DATA_DIR", "/var/lib/nb")]).unwrap();
    assert_eq!(
        config.database_url(),
        DatabaseUrl::Sqlite("/var/lib/nb/nanobanana.db".into())
    );
}

#[test]
fn an_unknown_database_scheme_is_a_clear_error() {
    let error = message(config(&[(
        "DATABASE_URL",
        "mysql://root:pw-in-url@localhost/nb",
    )]));
    assert!(error.starts_with("DATABASE_URL is invalid"), "{error}");
    assert!(error.contains("\"mysql\""), "{error}");
    assert!(!error.contains("pw-in-url"), "{error}");
}

#[test]
fn short_jwt_secrets_are_refused_and_never_printed() {
    let error = message(config(&[("JWT_SECRET", "hunter2")]));
    assert!(error.starts_with("JWT_SECRET"), "{error}");
    assert!(!error.contains("hunter2"));
    let long = "x".repeat(40);
    let config = config(&[("JWT_SECRET", &long)]).unwrap();
    assert_eq!(
        config.security.jwt_secret.as_ref().unwrap().expose_secret(),
        long.as_bytes()
    );
    assert!(!format!("{config:?}").contains(&long));
}

#[test]
fn storage_is_local_unless_r2_is_configured() {
    assert_eq!(
        config(&[]).unwrap().storage.backend(),
        StorageBackend::Local
    );
    assert_eq!(
        config(&[("NB_STORAGE", "inline")])
            .unwrap()
            .storage
            .backend(),
        StorageBackend::Inline
    );
    let r2 = [
        ("R2_ACCOUNT_ID", "abc"),
        ("R2_ACCESS_KEY", "ak"),
        ("R2_SECRET_KEY", "very-secret-r2-key"),
        ("R2_BUCKET", "images"),
    ];
    let config_r2 = config(&r2).unwrap();
    assert_eq!(config_r2.storage.backend(), StorageBackend::S3);
    assert!(!format!("{config_r2:?}").contains("very-secret-r2-key"));
    let error = message(config(&[("NB_STORAGE", "r2"), ("R2_ACCOUNT_ID", "abc")]));
    assert!(error.contains("R2_ACCESS_KEY"), "{error}");
    let error = message(config(&[("NB_STORAGE", "r2")]));
    assert!(error.contains("R2_BUCKET"), "{error}");
    assert!(message(config(&[("NB_STORAGE", "ftp")])).starts_with("NB_STORAGE"));
    let long_expiry = [r2.as_slice(), &[("R2_PRESIGN_EXPIRY_SECONDS", "604801")]].concat();
    assert!(message(config(&long_expiry)).starts_with("R2_PRESIGN_EXPIRY_SECONDS"));
    let no_endpoint = [
        ("R2_ACCESS_KEY", "ak"),
        ("R2_SECRET_KEY", "s"),
        ("R2_BUCKET", "images"),
    ];
    assert!(message(config(&no_endpoint)).starts_with("R2_ACCOUNT_ID"));
}

#[test]
fn models_default_to_the_current_nano_banana() {
    let models = config(&[]).unwrap().image_models().unwrap();
    assert_eq!(models.default_model().as_str(), "gemini-3.1-flash-image");
    let chosen = config(&[(
        "NB_IMAGE_MODELS",
        "gemini-3-pro-image, imagen-4.0-generate-001",
    )])
    .unwrap();
    assert_eq!(
        chosen.image_models().unwrap().default_model().as_str(),
        "gemini-3-pro-image"
    );
    assert!(message(config(&[("NB_IMAGE_MODELS", " , ")])).starts_with("NB_IMAGE_MODELS"));
    // An alias names its model; a name the catalog lacks stops start-up, naming it.
    let aliased = config(&[("NB_IMAGE_MODELS", "nano-banana-pro")]).unwrap();
    assert_eq!(
        aliased.image_models().unwrap().default_model().as_str(),
        "gemini-3-pro-image"
    );
    let unknown = message(config(&[("NB_IMAGE_MODELS", "gemini-9-image")]));
    assert!(
        unknown.starts_with("NB_IMAGE_MODELS") && unknown.contains("gemini-9-image"),
        "{unknown}"
    );
}

#[test]
fn the_google_key_is_optional_and_never_printed() {
    assert!(config(&[]).unwrap().upstream.api_key.is_none());
    let config = config(&[("GOOGLE_API_KEY", "AIza-very-secret")]).unwrap();
    assert!(config.upstream.api_key.is_some());
    assert!(!format!("{config:?}").contains("AIza-very-secret"));
}

#[test]
fn a_pool_of_google_keys_comes_from_a_list_or_a_file_never_with_a_single_key() {
    let pool = config(&[("GOOGLE_API_KEYS", "AIza-one, AIza-two,AIza-three")]).unwrap();
    assert_eq!(pool.upstream.keys().unwrap().len(), 3);
    assert!(!format!("{pool:?}").contains("AIza-two"));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "AIza-from-a-file-1\nAIza-from-a-file-2\n").unwrap();
    let from_file = config(&[("GOOGLE_API_KEYS", file.path().to_str().unwrap())]).unwrap();
    assert_eq!(from_file.upstream.keys().unwrap().len(), 2);
    let both = message(config(&[
        ("GOOGLE_API_KEY", "AIza-one"),
        ("GOOGLE_API_KEYS", "AIza-two,AIza-three"),
    ]));
    assert!(
        both.contains("GOOGLE_API_KEY and GOOGLE_API_KEYS"),
        "{both}"
    );
    assert!(!both.contains("AIza-two"), "{both}");
    let missing = message(config(&[("GOOGLE_API_KEYS", "/no/such/keys/file")]));
    assert!(missing.contains("GOOGLE_API_KEYS"), "{missing}");
}

#[test]
fn the_redis_url_is_optional_checked_and_never_printed() {
    assert!(config(&[]).unwrap().redis.url.is_none());
    let url = "rediss://default:redis-very-secret@cache.example:6380";
    let config_with_redis = config(&[("NB_REDIS_URL", url)]).unwrap();
    assert_eq!(
        config_with_redis
            .redis
            .url
            .as_ref()
            .map(nb_redis::RedisUrl::expose_secret),
        Some(url)
    );
    assert!(!format!("{config_with_redis:?}").contains("redis-very-secret"));
    let error = message(config(&[(
        "NB_REDIS_URL",
        "http://user:redis-very-secret@x",
    )]));
    assert!(error.contains("NB_REDIS_URL"), "{error}");
    assert!(!error.contains("redis-very-secret"), "{error}");
}

#[test]
fn limits_have_defaults_and_are_checked() {
    let config_default = config(&[]).unwrap();
    assert_eq!(config_default.server.max_body_bytes, 65_536);
    assert_eq!(
        config_default.limits.generations_per_minute_per_key.get(),
        60
    );
    assert_eq!(config_default.server.trusted_proxy_hops(), 0);
    let custom = config(&[
        ("NB_GENERATIONS_PER_MINUTE_PER_KEY", "5"),
        ("NB_TRUST_FORWARDED_FOR", "true"),
    ])
    .unwrap();
    assert_eq!(custom.limits.generations_per_minute_per_key.get(), 5);
    assert_eq!(custom.server.trusted_proxy_hops(), 1);
    let two_proxies = config(&[
        ("NB_TRUST_FORWARDED_FOR", "true"),
        ("NB_TRUSTED_PROXY_HOPS", "2"),
    ])
    .unwrap();
    assert_eq!(two_proxies.server.trusted_proxy_hops(), 2);
    for (name, value) in [
        ("NB_GENERATIONS_PER_MINUTE_PER_KEY", "0"),
        ("NB_MAX_BODY_BYTES", "10"),
        ("NB_MAX_BODY_BYTES_IN_FLIGHT", "1000000"),
        ("NB_SHUTDOWN_GRACE_SECONDS", "0"),
        ("NB_TRUST_FORWARDED_FOR", "perhaps"),
        ("NB_RATE_LIMITS", "everywhere"),
        ("NB_IDEMPOTENCY_TTL_HOURS", "721"),
        ("NB_RATE_LIMIT_LEASE_PERCENT", "101"),
        ("NB_UPSTREAM_QUEUE_TIMEOUT_SECONDS", "0"),
        ("NB_DEFAULT_KEY_PER_DAY", "0"),
    ] {
        let error = message(config(&[(name, value)]));
        assert!(error.starts_with(name), "{name}={value}: {error}");
    }
    let token = config(&[("NB_METRICS_TOKEN", "metrics-secret")]).unwrap();
    assert!(!format!("{token:?}").contains("metrics-secret"));
    assert_eq!(
        token.security.metrics_token.unwrap().expose_secret(),
        "metrics-secret"
    );
}

#[test]
fn addresses_and_urls_are_checked_at_start_up() {
    for good in ["0.0.0.0:8000", "[::]:8000", "localhost:9000"] {
        assert_eq!(
            config(&[("NB_LISTEN", good)])
                .unwrap()
                .server
                .listen
                .as_str(),
            good
        );
    }
    for bad in ["8000", "0.0.0.0", "0.0.0.0:http", "host:99999", ":8000"] {
        let error = message(config(&[("NB_LISTEN", bad)]));
        assert!(error.starts_with("NB_LISTEN"), "{bad}: {error}");
    }
    let config_with = |name, value| config(&[(name, value)]);
    assert_eq!(
        config_with("NB_PUBLIC_BASE_URL", "https://img.example.com/")
            .unwrap()
            .storage
            .public_base_url
            .unwrap()
            .as_str(),
        "https://img.example.com"
    );
    for name in ["NB_PUBLIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL"] {
        for bad in [
            "img.example.com",
            "ftp://x.example.com",
            "https://x.io/?a=b",
            "http://",
        ] {
            let error = message(config_with(name, bad));
            assert!(error.starts_with(name), "{bad}: {error}");
        }
    }
    assert_eq!(
        config_with("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9000/")
            .unwrap()
            .upstream
            .base_url
            .trim_end_matches('/'),
        "http://127.0.0.1:9000"
    );
}

#[test]
fn input_image_limits_have_defaults_and_are_checked() {
    assert_eq!(
        config(&[]).unwrap().models.input_images(),
        InputImageLimits::default()
    );
    let custom = config(&[
        ("NB_MAX_INPUT_IMAGES", "2"),
        ("NB_MAX_INPUT_IMAGE_BYTES", "1000"),
    ]);
    assert_eq!(custom.unwrap().models.input_images().max_images, 2);
    assert!(message(config(&[("NB_MAX_INPUT_IMAGES", "0")])).starts_with("NB_MAX_INPUT_IMAGES"));
    let error = message(config(&[("NB_MAX_INPUT_IMAGES_TOTAL_BYTES", "10")]));
    assert!(
        error.starts_with("NB_MAX_INPUT_IMAGES_TOTAL_BYTES"),
        "{error}"
    );
    assert!(error.contains("NB_MAX_INPUT_IMAGE_BYTES"), "{error}");
}

#[test]
fn the_openai_model_map_names_allowed_models() {
    let mapped = config(&[
        (
            "NB_IMAGE_MODELS",
            "gemini-3.1-flash-image,gemini-3-pro-image",
        ),
        ("NB_OPENAI_MODEL_MAP", "gpt-image-1=gemini-3-pro-image"),
    ])
    .unwrap();
    let model = mapped
        .openai_model_map(&mapped.image_models().unwrap())
        .unwrap()
        .resolve(Some("gpt-image-1"), &mapped.image_models().unwrap())
        .unwrap();
    assert_eq!(model.as_str(), "gemini-3-pro-image");
    let error = message(config(&[("NB_OPENAI_MODEL_MAP", "gpt-image-1=nope")]));
    assert!(error.starts_with("NB_OPENAI_MODEL_MAP"), "{error}");
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
            .security
            .admin_emails
            .0
            .includes(&EmailAddress::parse("root@example.com").unwrap())
    );
    assert_eq!(
        config
            .limits
            .default_key_quotas()
            .per_day
            .map(QuotaLimit::get),
        Some(100)
    );
    assert_eq!(config.limits.default_key_quotas().per_month, None);
    assert_eq!(
        config
            .limits
            .default_account_quotas()
            .per_month
            .map(QuotaLimit::get),
        Some(5000)
    );
    assert!(
        message(self::config(&[("NB_ADMIN_EMAILS", "not an email")]))
            .starts_with("NB_ADMIN_EMAILS")
    );
}

#[test]
fn cors_origins_must_be_named_origins() {
    assert!(config(&[]).unwrap().server.cors_origins.is_empty());
    let two = config(&[(
        "NB_CORS_ORIGINS",
        "https://app.example.com, http://localhost:5173",
    )])
    .unwrap();
    let origins: Vec<_> = two
        .server
        .cors_origins
        .iter()
        .map(|origin| origin.as_str())
        .collect();
    assert_eq!(
        origins,
        ["https://app.example.com", "http://localhost:5173"]
    );
    for bad in [
        "*",
        "app.example.com",
        "https://app.example.com/path",
        "https://a.io/",
    ] {
        assert!(
            message(config(&[("NB_CORS_ORIGINS", bad)])).starts_with("NB_CORS_ORIGINS"),
            "{bad}"
        );
    }
}

#[test]
fn a_zero_timeout_is_reported_under_its_own_name() {
    for name in [
        "NB_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS",
        "NB_UPSTREAM_DEADLINE_SECONDS",
        "NB_DB_STATEMENT_TIMEOUT_SECONDS",
        "NB_CLIENT_BODY_TIMEOUT_SECONDS",
        "NB_ACCESS_TOKEN_TTL_SECONDS",
        "R2_REQUEST_TIMEOUT_SECONDS",
    ] {
        let r2 = [
            ("R2_ACCOUNT_ID", "abc"),
            ("R2_ACCESS_KEY", "ak"),
            ("R2_SECRET_KEY", "sk"),
            ("R2_BUCKET", "images"),
            (name, "0"),
        ];
        let error = message(config(&r2));
        assert!(error.starts_with(name), "{error}");
    }
}

#[test]
fn streams_per_connection_to_google_default_to_googles_cap() {
    assert_eq!(config(&[]).unwrap().upstream.streams_per_connection, 100);
    let set = config(&[("NB_UPSTREAM_STREAMS_PER_CONNECTION", "8")]).unwrap();
    assert_eq!(set.upstream.streams_per_connection, 8);
    let error = message(config(&[("NB_UPSTREAM_STREAMS_PER_CONNECTION", "0")]));
    assert!(
        error.starts_with("NB_UPSTREAM_STREAMS_PER_CONNECTION"),
        "{error}"
    );
}

#[test]
fn the_upstream_cap_defaults_from_the_limits_table() {
    assert_eq!(
        config(&[]).unwrap().limits.upstream_concurrency,
        LimitsSection::default().upstream_concurrency
    );
    assert_eq!(
        config(&[("NB_UPSTREAM_CONCURRENCY", "3")])
            .unwrap()
            .limits
            .upstream_concurrency
            .get(),
        3
    );
    assert!(
        message(config(&[("NB_UPSTREAM_CONCURRENCY", "0")])).starts_with("NB_UPSTREAM_CONCURRENCY")
    );
}

#[test]
fn numbers_are_checked() {
    for (name, value) in [
        ("NB_BCRYPT_COST", "3"),
        ("NB_BCRYPT_COST", "twelve"),
        ("NB_DB_POOL_SIZE", "0"),
        ("NB_LOG_FORMAT", "xml"),
        ("NB_WORKERS", "0"),
        ("NB_WORKERS", "-1"),
    ] {
        let error = message(config(&[(name, value)]));
        assert!(error.starts_with(name), "{name}={value}: {error}");
    }
    assert_eq!(
        config(&[("NB_BCRYPT_COST", "4")])
            .unwrap()
            .security
            .bcrypt_cost,
        4
    );
}

const FILE: &str = r#"
data_dir = "/srv/nb"
log_format = "json"

[server]
listen = "0.0.0.0:9000"
workers = 3
cors_origins = ["https://app.example.com"]
trust_forwarded_for = true
trusted_proxy_hops = 2

[database]
url = "postgres://nb@db.internal/nb"
pool_size = 32

[upstream]
api_key = "AIza-from-the-file"
deadline_seconds = 90

[models]
enabled = ["gemini-3-pro-image", "gemini-3.1-flash-image"]
max_input_images = 6

[models.openai_map]
"gpt-image-1" = "gemini-3.1-flash-image"

[storage]
public_base_url = "https://img.example.com"

[storage.s3]
endpoint = "https://s3.example.com"
access_key = "ak"
secret_key = "sk-from-the-file"
bucket = "images"

[limits]
generations_per_minute_per_key = 7
rate_limits = "memory"
default_key_per_month = 1000

[security]
bcrypt_cost = 10
admin_emails = ["ops@example.com"]
metrics_token = "metrics-from-the-file"

[redis]
url = "redis://127.0.0.1:6379"
"#;

#[test]
fn a_file_sets_every_section() {
    let (_folder, loaded) = with_file(FILE, &[]);
    let config = loaded.unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/srv/nb"));
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.server.listen.as_str(), "0.0.0.0:9000");
    assert_eq!(config.server.workers.map(|n| n.get()), Some(3));
    assert_eq!(config.server.cors_origins.len(), 1);
    assert_eq!(config.server.trusted_proxy_hops(), 2);
    assert_eq!(
        config.database_url(),
        DatabaseUrl::parse("postgres://nb@db.internal/nb").unwrap()
    );
    assert_eq!(config.database.pool_size, 32);
    assert!(config.upstream.api_key.is_some());
    assert_eq!(config.upstream.deadline, Duration::from_secs(90));
    assert_eq!(
        config.image_models().unwrap().default_model().as_str(),
        "gemini-3-pro-image"
    );
    assert_eq!(config.models.input_images().max_images, 6);
    let mapped = config
        .openai_model_map(&config.image_models().unwrap())
        .unwrap()
        .resolve(Some("gpt-image-1"), &config.image_models().unwrap())
        .unwrap();
    assert_eq!(mapped.as_str(), "gemini-3.1-flash-image");
    assert_eq!(config.storage.backend(), StorageBackend::S3);
    assert_eq!(config.storage.s3.as_ref().unwrap().bucket, "images");
    assert_eq!(config.limits.generations_per_minute_per_key.get(), 7);
    assert_eq!(config.limits.rate_limits, sections::RateLimitStore::Memory);
    assert_eq!(
        config
            .limits
            .default_key_quotas()
            .per_month
            .map(QuotaLimit::get),
        Some(1000)
    );
    assert_eq!(config.security.bcrypt_cost, 10);
    assert!(config.redis.url.is_some());
    let printed = format!("{config:?}");
    for secret in [
        "AIza-from-the-file",
        "sk-from-the-file",
        "metrics-from-the-file",
    ] {
        assert!(!printed.contains(secret), "{secret}");
    }
}

#[test]
fn the_environment_wins_over_the_file() {
    let (_folder, loaded) = with_file(
        FILE,
        &[
            ("NB_LISTEN", "127.0.0.1:7000"),
            ("NB_GENERATIONS_PER_MINUTE_PER_KEY", "9"),
            ("R2_BUCKET", "other"),
            ("NB_IMAGE_MODELS", "gemini-3.1-flash-image"),
        ],
    );
    let config = loaded.unwrap();
    assert_eq!(config.server.listen.as_str(), "127.0.0.1:7000");
    assert_eq!(config.limits.generations_per_minute_per_key.get(), 9);
    // Keys the environment does not set keep the file's values, in the same section too.
    let s3 = config.storage.s3.as_ref().unwrap();
    assert_eq!(s3.bucket, "other");
    assert_eq!(s3.access_key, "ak");
    assert_eq!(config.server.workers.map(|n| n.get()), Some(3));
    assert_eq!(
        config.image_models().unwrap().default_model().as_str(),
        "gemini-3.1-flash-image"
    );
}

#[test]
fn errors_in_the_file_name_the_key_and_the_file() {
    let (folder, loaded) = with_file("[limits]\ngenerations_per_minute_per_key = 0\n", &[]);
    let error = message(loaded);
    let file = folder.path().join("nanobanana.toml").display().to_string();
    assert!(
        error.starts_with("limits.generations_per_minute_per_key in "),
        "{error}"
    );
    assert!(error.contains(&file), "{error}");
    // A rule checked after reading names the file's key too.
    let (_folder, loaded) = with_file("[security]\nbcrypt_cost = 40\n", &[]);
    let error = message(loaded);
    assert!(error.starts_with("security.bcrypt_cost in "), "{error}");
    assert!(error.contains("between 4 and 31"), "{error}");
    // The same value from the environment names the variable.
    let (_folder, loaded) = with_file("", &[("NB_BCRYPT_COST", "40")]);
    assert!(message(loaded).starts_with("NB_BCRYPT_COST is invalid"));
}

#[test]
fn each_kind_of_bad_value_in_the_file_is_refused_by_name() {
    for (toml, key) in [
        ("[server]\nworkers = \"many\"\n", "server.workers"),
        ("[server]\nlisten = 8000\n", "server.listen"),
        ("[server]\ncors_origins = \"*\"\n", "server.cors_origins"),
        (
            "[upstream]\nhttp2_prior_knowledge = \"yes\"\n",
            "upstream.http2_prior_knowledge",
        ),
        ("[storage]\nbackend = \"ftp\"\n", "storage.backend"),
        ("[models]\nenabled = []\n", "models.enabled"),
        ("[limits]\nrate_limits = 3\n", "limits.rate_limits"),
        (
            "[security]\nadmin_emails = [\"nobody\"]\n",
            "security.admin_emails",
        ),
        ("[database]\nurl = \"mysql://x/y\"\n", "database.url"),
    ] {
        let (_folder, loaded) = with_file(toml, &[]);
        let error = message(loaded);
        assert!(error.starts_with(&format!("{key} in ")), "{toml}: {error}");
    }
}

#[test]
fn unknown_keys_and_sections_in_the_file_are_refused() {
    let (_folder, loaded) = with_file("[server]\nlisten_on = \"0.0.0.0:1\"\n", &[]);
    let error = message(loaded);
    assert!(error.contains("listen_on"), "{error}");
    let (_folder, loaded) = with_file("[servers]\nlisten = \"0.0.0.0:1\"\n", &[]);
    assert!(message(loaded).contains("servers"));
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let (_folder, loaded) = with_file("[security]\njwt_secret = 123456789012345\n", &[]);
    let error = message(loaded);
    assert!(error.starts_with("security.jwt_secret in "), "{error}");
    assert!(!error.contains("123456789012345"), "{error}");
}

#[test]
fn a_file_that_is_not_there_or_not_toml_stops_start_up() {
    let error = message(config(&[("NB_CONFIG", "/nonexistent/nanobanana.toml")]));
    assert!(
        error.starts_with("NB_CONFIG names /nonexistent/nanobanana.toml"),
        "{error}"
    );
    let (_folder, loaded) = with_file("[server\nlisten = ", &[]);
    let error = message(loaded);
    assert!(error.starts_with("NB_CONFIG file "), "{error}");
}

#[test]
fn the_model_catalog_file_adds_and_patches_models_and_its_errors_name_entry_and_field() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("models.toml");
    std::fs::write(
        &path,
        r#"
        [[model]]
        id = "gemini-nano-banana-2.1"
        aliases = ["nb21"]
        aspect_ratios = ["1:1", "16:9"]
        resolutions = ["1K", "2K", "4K"]
        max_input_images = 14

        [[model]]
        id = "gemini-3-pro-image"
        retired_at = 2027-06-30
        replaced_by = "gemini-nano-banana-2.1"
        "#,
    )
    .unwrap();
    let file = path.display().to_string();
    let loaded = config(&[
        ("NB_MODELS_FILE", file.as_str()),
        ("NB_IMAGE_MODELS", "nb21,gemini-3-pro-image"),
    ])
    .unwrap();
    let models = loaded.image_models().unwrap();
    assert_eq!(models.default_model().as_str(), "gemini-nano-banana-2.1");
    let pro = models.choose(Some("gemini-3-pro-image")).unwrap();
    assert_eq!(
        pro.spec().retired_at,
        Some(time::macros::date!(2027 - 06 - 30))
    );
    assert_eq!(
        pro.spec().aspect_ratios.len(),
        10,
        "other fields stay built in"
    );

    std::fs::write(
        &path,
        "[[model]]\nid = \"gemini-3-pro-image\"\nresolutions = [\"1K\", \"8K\"]\n",
    )
    .unwrap();
    let error = message(config(&[("NB_MODELS_FILE", file.as_str())]));
    for part in [
        "NB_MODELS_FILE",
        "gemini-3-pro-image",
        "resolutions",
        "8K",
        &file,
    ] {
        assert!(error.contains(part), "{part} not in {error}");
    }
    std::fs::write(&path, "[[model]]\nid = \"x\"\nmax_inputs = 3\n").unwrap();
    let error = message(config(&[("NB_MODELS_FILE", file.as_str())]));
    assert!(
        error.contains("max_inputs") && error.contains("\"x\""),
        "{error}"
    );
    let missing = message(config(&[("NB_MODELS_FILE", "/nonexistent/models.toml")]));
    assert!(missing.starts_with("NB_MODELS_FILE"), "{missing}");

    // The configuration file may hold entries too.
    let (_folder, loaded) = with_file(
        "[models]\nenabled = [\"my-model\"]\n\n[[models.model]]\nid = \"my-model\"\naspect_ratios = [\"1:1\"]\nresolutions = [\"1K\"]\nmax_input_images = 0\n",
        &[],
    );
    let models = loaded.unwrap().image_models().unwrap();
    assert_eq!(models.default_model().spec().max_input_images, 0);
}

#[test]
fn default_budgets_are_dollars_from_the_environment_or_the_file() {
    let read = config(&[
        ("NB_DEFAULT_KEY_BUDGET_USD_PER_MONTH", "12.50"),
        ("NB_DEFAULT_ACCOUNT_BUDGET_USD_PER_DAY", "5"),
    ])
    .unwrap();
    let shown = |usd: Option<nb_domain::money::Usd>| usd.map(|usd| usd.to_string());
    assert_eq!(
        shown(read.limits.default_key_quotas().budget_per_month),
        Some("12.500000".to_owned())
    );
    assert_eq!(read.limits.default_key_quotas().budget_per_day, None);
    assert_eq!(
        shown(read.limits.default_account_quotas().budget_per_day),
        Some("5.000000".to_owned())
    );
    let error = message(config(&[("NB_DEFAULT_KEY_BUDGET_USD_PER_DAY", "lots")]));
    assert!(
        error.starts_with("NB_DEFAULT_KEY_BUDGET_USD_PER_DAY"),
        "{error}"
    );
}
