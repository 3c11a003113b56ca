//! Errors shared by every repository port.

/// A boxed cause, kept for logs and never shown to clients.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What any repository call can fail with, beyond the outcomes its own contract names.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The database could not be reached (connection refused, pool exhausted, timed out).
    /// Callers answer "try again later".
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug, a broken invariant or corrupt data.
    #[error("unexpected database error")]
    Unexpected(#[source] BoxError),
}

impl RepositoryError {
    pub fn unexpected(cause: impl Into<BoxError>) -> Self {
        Self::Unexpected(cause.into())
    }
}
