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
mod schema;
#[cfg(feature = "testing")]
pub mod testing;
mod users;

pub use connect::{ConnectError, Database, DatabaseUrl, PoolOptions, UnsupportedDatabaseUrl};

/// Checks a connection out of the pool and runs `$body` with it as `$conn`, compiled once per
/// backend. Evaluates to `Result<body's value, RepositoryError>`, where only a pool failure
/// (database unreachable, pool exhausted) is an error.
macro_rules! with_connection {
    ($db:expr, |$conn:ident| $body:expr) => {
        match $db {
            $crate::connect::Database::Postgres(pool) => match pool.get().await {
                Ok(mut pooled) => {
                    let $conn = &mut *pooled;
                    Ok($body)
                }
                Err(error) => Err($crate::convert::pool_error(error)),
            },
            $crate::connect::Database::Sqlite(pool) => match pool.get().await {
                Ok(mut pooled) => {
                    let $conn = &mut *pooled;
                    Ok($body)
                }
                Err(error) => Err($crate::convert::pool_error(error)),
            },
        }
    };
}
pub(crate) use with_connection;
