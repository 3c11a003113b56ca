//! The database adapter: implements the domain's repository ports with diesel and
//! diesel-async, on PostgreSQL or SQLite, chosen at run time from `DATABASE_URL`.
//!
//! Queries are written once and compiled against each backend's connection type by
//! [`with_connection!`]; only statements whose SQL really differs get an arm per backend.
//! SQLite runs through diesel-async's `SyncConnectionWrapper`, which moves every call onto
//! tokio's blocking pool, so the async executor never waits on the SQLite library.

mod admin;
mod api_keys;
mod connect;
mod convert;
mod generations;
mod idempotency;
mod jobs;
mod key_changes;
mod pool;
mod postgres_tls;
mod quota;
mod rate_limits;
mod readiness;
mod schema;
mod sessions;
#[cfg(feature = "testing")]
pub mod testing;
mod users;
mod webhooks;

pub use connect::{
    ConnectError, DatabaseSettings, DatabaseUrl, PoolOptions, UnsupportedDatabaseUrl,
};
pub use generations::GenerationStore;
pub use key_changes::listen_for_key_changes;
pub use pool::Database;
pub use postgres_tls::InvalidTlsSettings;
pub use rate_limits::PostgresRateLimiter;
