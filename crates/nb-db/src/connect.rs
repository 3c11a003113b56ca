//! Choosing a backend from a URL, opening a pool and bringing the schema up to date.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deadpool::Runtime;
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};

use crate::postgres_tls::{InvalidTlsSettings, PostgresTarget};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;
use nb_domain::settings::InvalidSetting;

use crate::pool::{ConnectionPool, Database, SqliteAsyncConnection};

pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/postgres");
pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/sqlite");

/// Serialises migrations when several instances start at once against one PostgreSQL.
const MIGRATION_LOCK_ID: i64 = 0x6e62_6d69_6772; // "nbmigr"

/// Set on every SQLite connection. WAL lets readers run beside the one writer; the busy
/// timeout makes a writer wait for the lock instead of failing at once.
const SQLITE_CONNECTION_PRAGMAS: &str = "PRAGMA foreign_keys = ON; \
     PRAGMA busy_timeout = 5000; \
     PRAGMA synchronous = NORMAL;";

/// Where the database is, parsed from `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://` or `postgresql://`, passed to the driver as given.
    Postgres(String),
    /// `sqlite://<path>`: a file path, relative to the working directory unless absolute
    /// (`sqlite:///var/lib/nb.db`).
    Sqlite(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("must start with postgres://, postgresql:// or sqlite:// (got {scheme:?})")]
pub struct UnsupportedDatabaseUrl {
    scheme: String,
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, UnsupportedDatabaseUrl> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        if let Some(path) = raw
            .strip_prefix("sqlite://")
            .filter(|path| !path.is_empty())
        {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        let scheme = raw
            .split_once("://")
            .map_or("", |(scheme, _)| scheme)
            .to_owned();
        Err(UnsupportedDatabaseUrl { scheme })
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = UnsupportedDatabaseUrl;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(raw.trim())
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::try_from(raw).map_err(serde::de::Error::custom)
    }
}

/// `[database]` in the configuration: where the database is and how the pool behaves.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://<path>`; `None`: SQLite in the data folder.
    pub url: Option<DatabaseUrl>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// See [`PoolOptions::acquire_timeout`].
    #[serde(rename = "acquire_timeout_seconds")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub acquire_timeout: Duration,
    /// See [`PoolOptions::statement_timeout`].
    #[serde(rename = "statement_timeout_seconds")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub statement_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let pool = PoolOptions::default();
        Self {
            url: None,
            pool_size: pool.max_connections,
            acquire_timeout: pool.acquire_timeout,
            statement_timeout: pool.statement_timeout,
        }
    }
}

impl DatabaseSettings {
    /// What serde cannot say about single values.
    pub fn check(&self) -> Result<(), InvalidSetting> {
        if self.pool_size == 0 {
            return Err(InvalidSetting::new("pool_size", "must be at least 1"));
        }
        if self.statement_timeout.is_zero() {
            return Err(InvalidSetting::new(
                "statement_timeout_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_connections: self.pool_size,
            acquire_timeout: self.acquire_timeout,
            statement_timeout: self.statement_timeout,
        }
    }
}

/// Shows the URL with any password replaced, so it can be logged.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(raw) => match url::Url::parse(raw) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        // Cannot fail for a URL that already has a password.
                        let _ = parsed.set_password(Some("redacted"));
                    }
                    f.write_str(parsed.as_str())
                }
                Err(_) => f.write_str("postgres://(unparseable)"),
            },
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Pool sizing and waiting.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: usize,
    /// How long a request waits for a connection (or for a new one to open) before the
    /// database counts as unavailable.
    pub acquire_timeout: Duration,
    /// How long a request waits for a database call's statements, once connected, before
    /// the database counts as unavailable (a database that hangs without closing anything).
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create the folder for the SQLite database {path}")]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database at {url}")]
    Open {
        url: String,
        #[source]
        source: diesel::ConnectionError,
    },
    #[error("cannot apply the database migrations")]
    Migrate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot build the connection pool")]
    Pool(#[source] deadpool::managed::BuildError),
    #[error("the database must be opened from a multi-threaded tokio runtime")]
    NotMultiThreaded,
    #[error("invalid TLS settings in DATABASE_URL: {0}")]
    Tls(#[source] InvalidTlsSettings),
}

impl Database {
    /// Opens the database, applies any pending migrations, and returns a pool.
    pub async fn connect(url: &DatabaseUrl, options: PoolOptions) -> Result<Self, ConnectError> {
        let runtime = tokio::runtime::Handle::current();
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(ConnectError::NotMultiThreaded);
        }
        let pool = match url {
            DatabaseUrl::Postgres(raw) => {
                let target = PostgresTarget::from_url(raw).map_err(ConnectError::Tls)?;
                tracing::info!(sslmode = ?target.mode(), "connecting to PostgreSQL");
                migrate_postgres(target.clone(), url.to_string()).await?;
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.custom_setup = Box::new(move |_url| {
                    let target = target.clone();
                    async move { target.connect().await }.boxed()
                });
                let manager = AsyncDieselConnectionManager::new_with_config(raw.clone(), config);
                ConnectionPool::Postgres(build_pool(manager, options)?)
            }
            DatabaseUrl::Sqlite(path) => {
                let path = path.clone();
                migrate_sqlite(path.clone()).await?;
                let mut config = ManagerConfig::<SqliteAsyncConnection>::default();
                config.custom_setup =
                    Box::new(|path| open_sqlite_for_pool(path.to_owned()).boxed());
                let manager =
                    AsyncDieselConnectionManager::new_with_config(path.to_string_lossy(), config);
                ConnectionPool::Sqlite(build_pool(manager, options)?)
            }
        };
        Ok(Self {
            pool,
            runtime,
            call_timeout: options.acquire_timeout + options.statement_timeout,
        })
    }
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    options: PoolOptions,
) -> Result<Pool<C>, ConnectError>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    Pool::builder(manager)
        .max_size(options.max_connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.acquire_timeout))
        .build()
        .map_err(ConnectError::Pool)
}

async fn migrate_postgres(target: PostgresTarget, shown_url: String) -> Result<(), ConnectError> {
    let connection = target
        .connect()
        .await
        .map_err(|source| ConnectError::Open {
            url: shown_url,
            source,
        })?;
    blocking(move || {
        let mut connection = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
        let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})");
        let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})");
        diesel::sql_query(lock)
            .execute(&mut connection)
            .map_err(migrate_error)?;
        let applied = connection
            .run_pending_migrations(POSTGRES_MIGRATIONS)
            .map(|applied| applied.len());
        diesel::sql_query(unlock)
            .execute(&mut connection)
            .map_err(migrate_error)?;
        let applied = applied.map_err(ConnectError::Migrate)?;
        tracing::info!(
            applied,
            backend = "postgres",
            "database migrations are up to date"
        );
        Ok(())
    })
    .await
}

async fn migrate_sqlite(path: PathBuf) -> Result<(), ConnectError> {
    blocking(move || {
        create_private_database_file(&path).map_err(|source| ConnectError::CreateFolder {
            path: path.clone(),
            source,
        })?;
        let mut connection = establish_sqlite(&path)?;
        // WAL is a property of the file: set once here, kept by every later connection.
        connection
            .batch_execute_sync("PRAGMA journal_mode = WAL;")
            .map_err(migrate_error)?;
        let applied = connection
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(ConnectError::Migrate)?
            .len();
        tracing::info!(
            applied,
            backend = "sqlite",
            "database migrations are up to date"
        );
        Ok(())
    })
    .await
}

/// The database holds password hashes and every user's data: a new file is created readable
/// by this user alone (0600), in a new folder only this user can enter (0700). SQLite gives
/// its `-wal` and `-shm` files the database file's mode. Existing files and folders keep
/// theirs.
fn create_private_database_file(path: &Path) -> std::io::Result<()> {
    if let Some(folder) = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(folder)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

fn establish_sqlite(path: &Path) -> Result<SqliteConnection, ConnectError> {
    let shown = format!("sqlite://{}", path.display());
    let mut connection =
        SqliteConnection::establish(&path.to_string_lossy()).map_err(|source| {
            ConnectError::Open {
                url: shown.clone(),
                source,
            }
        })?;
    connection
        .batch_execute_sync(SQLITE_CONNECTION_PRAGMAS)
        .map_err(|error| ConnectError::Open {
            url: shown,
            source: diesel::ConnectionError::CouldntSetupConfiguration(error),
        })?;
    Ok(connection)
}

async fn open_sqlite_for_pool(path: String) -> diesel::ConnectionResult<SqliteAsyncConnection> {
    let mut connection = SqliteAsyncConnection::establish(&path).await?;
    connection
        .batch_execute(SQLITE_CONNECTION_PRAGMAS)
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(connection)
}

fn migrate_error(error: diesel::result::Error) -> ConnectError {
    ConnectError::Migrate(Box::new(error))
}

/// Runs start-up work that blocks (migrations) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ConnectError> + Send + 'static,
) -> Result<T, ConnectError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| Err(ConnectError::Migrate(Box::new(join_error))))
}

/// diesel's `SimpleConnection::batch_execute`, named apart from diesel-async's.
trait BatchExecuteSync {
    fn batch_execute_sync(&mut self, sql: &str) -> diesel::QueryResult<()>;
}

impl<C: diesel::connection::SimpleConnection> BatchExecuteSync for C {
    fn batch_execute_sync(&mut self, sql: &str) -> diesel::QueryResult<()> {
        self.batch_execute(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("postgres://u:p@h/db").unwrap(),
            DatabaseUrl::Postgres("postgres://u:p@h/db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgresql://h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/nanobanana.db").unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("data/nanobanana.db"))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/nb.db").unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/var/lib/nb.db"))
        );
    }

    #[test]
    fn other_schemes_are_refused_with_the_scheme_named() {
        for raw in ["mysql://h/db", "sqlite://", "data/nb.db", ""] {
            assert!(DatabaseUrl::parse(raw).is_err(), "{raw:?}");
        }
        let error = DatabaseUrl::parse("mysql://h/db").unwrap_err();
        assert!(error.to_string().contains("\"mysql\""));
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_new_sqlite_database_is_private_to_its_user() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("data");
        let path = folder.join("nanobanana.db");
        let database =
            Database::connect(&DatabaseUrl::Sqlite(path.clone()), PoolOptions::default())
                .await
                .unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&path), 0o600);
        let wal = folder.join("nanobanana.db-wal");
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600);
        }
        drop(database);
    }

    #[test]
    fn display_hides_the_password() {
        let url = DatabaseUrl::parse("postgres://nb:s3cret-pw@db:5432/nb").unwrap();
        assert_eq!(url.to_string(), "postgres://nb:redacted@db:5432/nb");
        assert!(!format!("{url:?}").contains("s3cret-pw"));
    }
}
