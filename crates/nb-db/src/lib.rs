//! The database adapter: implements the domain's repository ports with diesel and
//! diesel-async, on PostgreSQL or SQLite, chosen at run time from `DATABASE_URL`.
//!
//! Queries are written once and compiled against each backend's connection type by
//! [`with_connection!`]; only statements whose SQL really differs get an arm per backend.
//! SQLite runs through diesel-async's `SyncConnectionWrapper`, which moves every call onto
//! tokio's blocking pool, so the async executor never waits on the SQLite library.

mod api_keys;
mod connect;
mod convert;
mod generations;
mod readiness;
mod schema;
mod success_writer;
#[cfg(feature = "testing")]
pub mod testing;
mod users;

pub use connect::{ConnectError, Database, DatabaseUrl, PoolOptions, UnsupportedDatabaseUrl};

/// Runs `$body` with a pooled connection bound to `$conn`, compiled once per backend, as a
/// task of its own on the database's multi-threaded runtime (see [`Database`]). `$body` may
/// `.await` and must own what it uses (`async move`). Evaluates to
/// `Result<body's value, RepositoryError>`, where only a pool failure (database unreachable,
/// pool exhausted) or a crashed task is an error.
macro_rules! with_connection {
    ($db:expr, |$conn:ident| $body:expr) => {{
        let database: &$crate::connect::Database = $db;
        // The task keeps the caller's span, so its log lines carry the request id.
        let span = tracing::Span::current();
        let task = match database.pool.clone() {
            $crate::connect::ConnectionPool::Postgres(pool) => {
                database.runtime.spawn(tracing::Instrument::instrument(
                    async move {
                        let mut pooled = pool.get().await.map_err($crate::convert::pool_error)?;
                        let $conn = &mut *pooled;
                        Ok::<_, nb_domain::RepositoryError>($body)
                    },
                    span,
                ))
            }
            $crate::connect::ConnectionPool::Sqlite(pool) => {
                database.runtime.spawn(tracing::Instrument::instrument(
                    async move {
                        let mut pooled = pool.get().await.map_err($crate::convert::pool_error)?;
                        let $conn = &mut *pooled;
                        Ok::<_, nb_domain::RepositoryError>($body)
                    },
                    span,
                ))
            }
        };
        task.await
            .unwrap_or_else(|crashed| Err(nb_domain::RepositoryError::unexpected(crashed)))
    }};
}
pub(crate) use with_connection;
