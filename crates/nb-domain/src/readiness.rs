//! Whether this instance can take traffic: what `/readyz` asks of the database and of the
//! store instances share.

use async_trait::async_trait;

/// Why the service cannot take traffic.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the database cannot be reached")]
    DatabaseUnreachable(#[source] crate::error::BoxError),
    #[error("the database schema is not up to date (pending migrations: {0})")]
    MigrationsPending(String),
    /// The migrations this build expects cannot be listed: readiness cannot be proven.
    #[error("the expected migrations cannot be listed")]
    MigrationsUnknown(#[source] crate::error::BoxError),
    /// The store shared by instances for limits and key changes (Redis) does not answer.
    #[error("the shared-state store cannot be reached")]
    SharedStateUnreachable(#[source] crate::error::BoxError),
}

/// What `/readyz` asks.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// MUST return `Ok` only when the database answers and every migration is applied; when
    /// either cannot be established, it MUST fail (closed), never pass by default.
    async fn check_ready(&self) -> Result<(), NotReady>;
}

/// How many of the upstream's API keys serve now (`/readyz` reports it; it never fails
/// readiness: a rate-limited key rests on every instance alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAvailability {
    pub usable: usize,
    pub total: usize,
}

/// The upstream's pool of API keys, as `/readyz` reports it.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait UpstreamKeys: Send + Sync + 'static {
    fn availability(&self) -> KeyAvailability;
}
