//! The connection pool and the one way queries reach it, [`with_connection!`].

use std::fmt;

use diesel::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;

pub(crate) type SqliteAsyncConnection = SyncConnectionWrapper<SqliteConnection>;

/// A pool of connections to one of the supported backends. Implements the repository ports.
///
/// Every repository call runs as its own task on the multi-threaded runtime that opened the
/// database (see `with_connection!`), so a caller that gives up half-way (a client that
/// disconnects, a request whose other extractor failed) never cancels a statement or a
/// transaction in the middle: it finishes, and the caller just stops waiting. This also keeps
/// diesel-async's SQLite wrapper, which must not be dropped mid-call on a single-threaded
/// runtime such as an actix worker's (it panics), off those runtimes.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: ConnectionPool,
    pub(crate) runtime: tokio::runtime::Handle,
}

#[derive(Clone)]
pub(crate) enum ConnectionPool {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteAsyncConnection>),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.pool {
            ConnectionPool::Postgres(pool) => pool.status(),
            ConnectionPool::Sqlite(pool) => pool.status(),
        };
        f.debug_struct("Database")
            .field("backend", &self.pool.backend_name())
            .field("pool", &status)
            .finish()
    }
}

impl ConnectionPool {
    pub(crate) fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// Runs `$body` with a pooled connection bound to `$conn`, compiled once per backend, as a
/// task of its own on the database's multi-threaded runtime (see [`Database`]). `$body` may
/// `.await` and must own what it uses (`async move`). Evaluates to
/// `Result<body's value, RepositoryError>`, where only a pool failure (database unreachable,
/// pool exhausted) or a crashed task is an error.
macro_rules! with_connection {
    ($db:expr, |$conn:ident| $body:expr) => {{
        let database: &$crate::pool::Database = $db;
        // The task keeps the caller's span, so its log lines carry the request id.
        let span = tracing::Span::current();
        let task = match database.pool.clone() {
            $crate::pool::ConnectionPool::Postgres(pool) => {
                database.runtime.spawn(tracing::Instrument::instrument(
                    async move {
                        let mut pooled = pool.get().await.map_err($crate::convert::pool_error)?;
                        let $conn = &mut *pooled;
                        Ok::<_, nb_domain::RepositoryError>($body)
                    },
                    span,
                ))
            }
            $crate::pool::ConnectionPool::Sqlite(pool) => {
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
