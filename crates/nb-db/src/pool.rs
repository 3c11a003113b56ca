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
    /// The longest a caller waits for one repository call (a connection, then its
    /// statements): past it the database counts as unavailable, even when it hangs without
    /// a word. The call itself goes on, so nothing is left half-written.
    pub(crate) call_timeout: std::time::Duration,
}

/// A repository call that took longer than the database's call timeout.
#[derive(Debug, thiserror::Error)]
#[error("the database did not answer within {0:?}")]
pub(crate) struct CallTimedOut(pub(crate) std::time::Duration);

/// Waits for a repository call's task, at most `database.call_timeout`.
pub(crate) async fn bounded<T>(
    database: &Database,
    task: tokio::task::JoinHandle<Result<T, nb_domain::RepositoryError>>,
) -> Result<T, nb_domain::RepositoryError> {
    match tokio::time::timeout(database.call_timeout, task).await {
        Ok(joined) => {
            joined.unwrap_or_else(|crashed| Err(nb_domain::RepositoryError::unexpected(crashed)))
        }
        Err(_) => Err(nb_domain::RepositoryError::Unavailable(Box::new(
            CallTimedOut(database.call_timeout),
        ))),
    }
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
        $crate::pool::bounded(database, task).await
    }};
}
pub(crate) use with_connection;

/// Runs one statement, awaited (PostgreSQL through diesel-async).
macro_rules! run_async {
    ($query:expr, $method:ident, $conn:expr) => {
        diesel_async::RunQueryDsl::$method($query, $conn).await
    };
}
pub(crate) use run_async;

/// Runs one statement, blocking (SQLite, already on the blocking pool).
macro_rules! run_sync {
    ($query:expr, $method:ident, $conn:expr) => {
        diesel::RunQueryDsl::$method($query, $conn)
    };
}
pub(crate) use run_sync;

/// Runs `$body` in one transaction, compiled once per backend, as a task of its own (like
/// [`with_connection!`]). On SQLite the transaction begins `IMMEDIATE`, taking the write lock
/// at once, so transactions that read then write never deadlock on an upgrade, and run one
/// at a time. On PostgreSQL, `lock_user: id` first locks that user's row (`FOR UPDATE`), so
/// what is counted per account is counted one transaction at a time. Inside `$body`, each
/// statement is run with `$run!(query, method, $conn)` (`execute`, `load`, `get_result`,
/// `first`…), which awaits on PostgreSQL and blocks on SQLite. `$body` must evaluate to
/// `Result<T, diesel::result::Error>`; the whole evaluates to `Result<T, RepositoryError>`.
macro_rules! with_transaction {
    ($db:expr, |$conn:ident, $run:ident| $body:block) => {
        $crate::pool::with_transaction!($db, lock_user: None::<String>, |$conn, $run| $body)
    };
    ($db:expr, lock_user: $user:expr, |$conn:ident, $run:ident| $body:block) => {{
        let database: &$crate::pool::Database = $db;
        let span = tracing::Span::current();
        let pool = database.pool.clone();
        let lock_user: Option<String> = $user.map(|user| user.to_string());
        let task = database.runtime.spawn(tracing::Instrument::instrument(
            async move {
                match pool {
                    $crate::pool::ConnectionPool::Postgres(pool) => {
                        let mut pooled =
                            pool.get().await.map_err($crate::convert::pool_error)?;
                        diesel_async::AsyncConnection::transaction::<_, diesel::result::Error, _>(
                            &mut *pooled,
                            async |$conn| {
                                use $crate::pool::run_async as $run;
                                if let Some(user) = &lock_user {
                                    $crate::pool::lock_user($conn, user).await?;
                                }
                                $body
                            },
                        )
                        .await
                        .map_err($crate::convert::query_error)
                    }
                    $crate::pool::ConnectionPool::Sqlite(pool) => {
                        let _ = &lock_user;
                        let mut pooled =
                            pool.get().await.map_err($crate::convert::pool_error)?;
                        pooled
                            .spawn_blocking(move |conn| {
                                conn.immediate_transaction(|$conn| {
                                    use $crate::pool::run_sync as $run;
                                    $body
                                })
                            })
                            .await
                            .map_err($crate::convert::query_error)
                    }
                }
            },
            span,
        ));
        $crate::pool::bounded(database, task).await
    }};
}
pub(crate) use with_transaction;

/// `SELECT … FOR UPDATE` on a user's row (PostgreSQL).
pub(crate) async fn lock_user(
    conn: &mut AsyncPgConnection,
    user_id: &str,
) -> Result<(), diesel::result::Error> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    crate::schema::users::table
        .find(user_id)
        .select(crate::schema::users::id)
        .for_update()
        .first::<String>(conn)
        .await
        .optional()
        .map(|_| ())
}
