//! The connection to Redis that the limiter, the announcer and `/readyz` share, its settings,
//! and how Redis's errors reach the ports.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use nb_domain::RepositoryError;
use nb_domain::ports::{NotReady, ReadinessCheck};
use nb_domain::rate_limit::RateLimitError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The longest one command waits for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one connection attempt takes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `NB_REDIS_URL` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("NB_REDIS_URL is not a usable Redis URL: {reason}")]
pub struct InvalidRedisUrl {
    reason: String,
}

/// Why Redis could not be used: the cause of `RateLimitError::Unavailable` and of
/// `NotReady::SharedStateUnreachable` from this adapter.
#[derive(Debug, thiserror::Error)]
#[error("Redis cannot be reached: {0}")]
pub struct RedisUnavailable(String);

/// `[redis]` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// When set, per-minute limits are counted in Redis and key changes travel over its
    /// pub/sub (instead of PostgreSQL).
    pub url: Option<RedisUrl>,
}

/// `redis://`, `rediss://` (TLS) or `redis+unix://`; may hold a password: never printed.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct RedisUrl(SecretString);

impl RedisUrl {
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl TryFrom<String> for RedisUrl {
    type Error = &'static str;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let raw = raw.trim();
        let scheme = raw.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("redis" | "rediss" | "redis+unix" | "unix") => {
                Ok(Self(SecretString::from(raw.to_owned())))
            }
            _ => Err("must start with redis://, rediss:// (TLS) or redis+unix://"),
        }
    }
}

/// A connection to Redis shared by the limiter, the announcer and `/readyz`. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    pub(crate) client: redis::Client,
    pub(crate) connection: ConnectionManager,
}

impl fmt::Debug for Redis {
    // The URL may hold a password: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

impl Redis {
    /// Prepares the connection to `url` (`redis://`, `rediss://` for TLS, `redis+unix://`)
    /// without connecting: the first command connects.
    pub fn new(url: &str) -> Result<Self, InvalidRedisUrl> {
        // rediss:// builds its TLS configuration on rustls' process-wide provider: make it
        // ring, the one the rest of the binary uses (an error means one is installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |error: redis::RedisError| InvalidRedisUrl {
            // The crate's messages name the problem, not the URL's password.
            reason: error.to_string(),
        };
        let client = redis::Client::open(url).map_err(invalid)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(invalid)?;
        Ok(Self { client, connection })
    }
}

#[async_trait]
impl ReadinessCheck for Redis {
    /// Redis answers a `PING` within the response timeout.
    async fn check_ready(&self) -> Result<(), NotReady> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let unreachable =
            |reason: String| NotReady::SharedStateUnreachable(Box::new(RedisUnavailable(reason)));
        match tokio::time::timeout(
            RESPONSE_TIMEOUT,
            ping.query_async::<String>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(unreachable(error.to_string())),
            Err(_) => Err(unreachable("no answer in time".into())),
        }
    }
}

/// Redis errors as the limiter port sees them: the server cannot be reached (or did not
/// answer in time) is `Unavailable`; anything else (a script error, a wrong type) is a bug.
pub(crate) fn limiter_error(error: redis::RedisError) -> RateLimitError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
    {
        RateLimitError::Unavailable(Box::new(RedisUnavailable(error.to_string())))
    } else {
        RateLimitError::Repository(RepositoryError::Unexpected(Box::new(error)))
    }
}
