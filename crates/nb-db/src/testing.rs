//! Throwaway databases for tests: a fresh, migrated database per test, on either backend.
//!
//! PostgreSQL tests need a server: `TEST_DATABASE_URL` names one (any database on it; each
//! test creates and later drops its own `nb_test_<uuid>` database). `scripts/test.sh` starts
//! an ephemeral cluster and sets it. SQLite tests use a file in a temporary folder.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::{Database, DatabaseUrl, PoolOptions};

/// A migrated database that is deleted when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: DatabaseUrl,
    pub database: Database,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

/// Small pools and short waits: a test that cannot get a connection in 10 s is broken.
pub fn test_pool_options() -> PoolOptions {
    PoolOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(20),
    }
}

impl TestDatabase {
    /// A fresh database on the server named by `TEST_DATABASE_URL`.
    ///
    /// # Panics
    /// When `TEST_DATABASE_URL` is unset or the server cannot be reached: run the tests with
    /// `scripts/test.sh`, which starts a server, rather than skip them silently.
    pub async fn postgres() -> Self {
        let admin_url = std::env::var("TEST_DATABASE_URL").expect(
            "TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts a \
             throwaway PostgreSQL, or point it at a server where databases may be created",
        );
        Self::postgres_on(admin_url).await
    }

    /// A fresh database on the server at `admin_url`.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn postgres_on(admin_url: String) -> Self {
        let name = format!("nb_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .expect("cannot connect to TEST_DATABASE_URL");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("cannot create a test database");
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is not a URL");
        url.set_path(&name);
        let url = DatabaseUrl::Postgres(url.to_string());
        let database = Database::connect(&url, test_pool_options())
            .await
            .expect("cannot open the test database");
        Self {
            url,
            database,
            cleanup: Cleanup::Postgres { admin_url, name },
        }
    }

    /// A fresh SQLite database file in its own temporary folder.
    pub async fn sqlite() -> Self {
        let folder = tempfile::tempdir().expect("cannot create a temporary folder");
        let url = DatabaseUrl::Sqlite(folder.path().join("nanobanana.db"));
        let database = Database::connect(&url, test_pool_options())
            .await
            .expect("cannot open the test database");
        Self {
            url,
            database,
            cleanup: Cleanup::Sqlite(folder),
        }
    }
}

impl TestDatabase {
    /// How many rows `table` holds (a name from the schema, not from input).
    pub async fn rows_in(&self, table: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            rows: i64,
        }
        let sql = format!("SELECT count(*) AS rows FROM {table}");
        let count = crate::pool::with_connection!(&self.database, |conn| {
            diesel::sql_query(&sql).get_result::<Count>(conn).await
        });
        count
            .expect("no connection")
            .expect("cannot count rows")
            .rows
    }

    /// Every stored `(key_hash, prefix)` pair: for tests that check what is kept of a key.
    pub async fn stored_key_hashes_and_prefixes(&self) -> Vec<(String, String)> {
        use crate::schema::api_keys;
        use diesel::QueryDsl as _;
        let rows = crate::pool::with_connection!(&self.database, |conn| {
            api_keys::table
                .select((api_keys::key_hash, api_keys::prefix))
                .load::<(String, String)>(conn)
                .await
        });
        rows.expect("no connection").expect("cannot read api_keys")
    }

    /// Every value of every column of every table, as text (`table.column=value`), binary
    /// columns with their printable bytes as they are: for tests that check what is kept.
    pub async fn every_stored_value(&self) -> Vec<String> {
        #[derive(diesel::QueryableByName)]
        struct Column {
            #[diesel(sql_type = diesel::sql_types::Text)]
            table_name: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            column_name: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            data_type: String,
        }
        #[derive(diesel::QueryableByName)]
        struct Value {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            value: Option<String>,
        }
        let postgres = matches!(self.database.pool, crate::pool::ConnectionPool::Postgres(_));
        let columns_sql = if postgres {
            "SELECT table_name::text AS table_name, column_name::text AS column_name, \
             data_type::text AS data_type FROM information_schema.columns \
             WHERE table_schema = 'public'"
        } else {
            "SELECT m.name AS table_name, p.name AS column_name, p.type AS data_type \
             FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
        };
        let columns = crate::pool::with_connection!(&self.database, |conn| {
            diesel::sql_query(columns_sql).load::<Column>(conn).await
        });
        let columns = columns
            .expect("no connection")
            .expect("cannot list columns");
        let mut values = Vec::new();
        for column in columns {
            let expression = match (postgres, column.data_type.as_str()) {
                (true, "bytea") => format!("encode(\"{}\", 'escape')", column.column_name),
                (true, _) => format!("\"{}\"::text", column.column_name),
                (false, _) => format!("CAST(\"{}\" AS TEXT)", column.column_name),
            };
            let sql = format!(
                "SELECT {expression} AS value FROM \"{}\"",
                column.table_name
            );
            let rows = crate::pool::with_connection!(&self.database, |conn| {
                diesel::sql_query(sql).load::<Value>(conn).await
            });
            let rows = rows.expect("no connection").expect("cannot read a column");
            values.extend(
                rows.into_iter()
                    .filter_map(|row| row.value)
                    .map(|value| format!("{}.{}={value}", column.table_name, column.column_name)),
            );
        }
        values
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with
        // its own. Failing to drop a test database is not worth failing the test for.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = AsyncPgConnection::establish(&admin_url).await.ok()?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}

/// A PostgreSQL cluster of its own, for tests that stop and restart the database. Built with
/// the machine's `initdb` and `pg_ctl` (as the `postgres` user when running as root, since
/// `initdb` refuses root), in a temporary folder, on a free loopback port.
#[derive(Debug)]
pub struct EphemeralPostgres {
    pub url: String,
    pg_ctl: std::path::PathBuf,
    folder: tempfile::TempDir,
    port: u16,
}

fn postgres_binaries() -> std::path::PathBuf {
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        candidates.extend(versions.flatten().map(|version| version.path().join("bin")));
    }
    candidates
        .into_iter()
        .find(|folder| folder.join("initdb").exists() && folder.join("pg_ctl").exists())
        .expect("initdb and pg_ctl not found: run the tests with scripts/test.sh")
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root.
fn run_postgres_tool(tool: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = if running_as_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(tool);
        command
    } else {
        std::process::Command::new(tool)
    };
    command
        .args(args)
        .output()
        .expect("cannot run a PostgreSQL tool")
}

impl EphemeralPostgres {
    /// # Panics
    /// When the cluster cannot be created or started.
    pub fn start() -> Self {
        Self::start_configured(None)
    }

    fn start_configured(tls: Option<(&str, &str)>) -> Self {
        let binaries = postgres_binaries();
        let folder = tempfile::Builder::new()
            .prefix("nb-pg-")
            .tempdir()
            .expect("no temporary folder");
        if running_as_root() {
            let chowned = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(folder.path())
                .status()
                .expect("cannot run chown");
            assert!(
                chowned.success(),
                "cannot give the cluster folder to postgres"
            );
        }
        let data = folder.path().join("data");
        let data = data.to_str().expect("a UTF-8 path");
        let initdb = run_postgres_tool(
            &binaries.join("initdb"),
            &[
                "-D",
                data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("no free port")
            .port();
        let cluster = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            pg_ctl: binaries.join("pg_ctl"),
            folder,
            port,
        };
        if let Some((certificate_pem, key_pem)) = tls {
            cluster.enable_tls(certificate_pem, key_pem);
        }
        cluster.start_again();
        cluster
    }

    /// A cluster that also accepts TLS (`ssl = on`) with this certificate and private key
    /// (PEM); plain connections are accepted too.
    ///
    /// # Panics
    /// When the cluster cannot be created or started.
    pub fn start_with_tls(certificate_pem: &str, key_pem: &str) -> Self {
        Self::start_configured(Some((certificate_pem, key_pem)))
    }

    fn enable_tls(&self, certificate_pem: &str, key_pem: &str) {
        let data = self.folder.path().join("data");
        let (certificate, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::write(&certificate, certificate_pem).expect("cannot write the certificate");
        std::fs::write(&key, key_pem).expect("cannot write the key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("cannot protect the key");
        if running_as_root() {
            let chowned = std::process::Command::new("chown")
                .arg("postgres")
                .arg(&certificate)
                .arg(&key)
                .status()
                .expect("cannot run chown");
            assert!(chowned.success(), "cannot give the key to postgres");
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("cannot open postgresql.conf");
        std::io::Write::write_all(&mut conf, b"\nssl = on\n").expect("cannot enable ssl");
    }

    fn data_dir(&self) -> String {
        self.folder
            .path()
            .join("data")
            .to_string_lossy()
            .into_owned()
    }

    /// Stops the server, dropping every connection (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        let stopped = run_postgres_tool(
            &self.pg_ctl,
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        );
        assert!(
            stopped.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
    }

    /// Starts the server (again) on the same port.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off",
            self.port,
            self.folder.path().display()
        );
        let log = self.folder.path().join("server.log");
        let started = run_postgres_tool(
            &self.pg_ctl,
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
    }
}

impl Drop for EphemeralPostgres {
    fn drop(&mut self) {
        let _ = run_postgres_tool(
            &self.pg_ctl,
            &["-D", &self.data_dir(), "-m", "immediate", "stop"],
        );
    }
}

/// Whether the database's connections are encrypted (PostgreSQL's `pg_stat_ssl`; never on
/// SQLite).
pub async fn connection_is_encrypted(database: &Database) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    if !matches!(database.pool, crate::pool::ConnectionPool::Postgres(_)) {
        return false;
    }
    let found = crate::pool::with_connection!(database, |conn| {
        diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .get_result::<Ssl>(conn)
            .await
    });
    found
        .expect("no connection")
        .expect("cannot read pg_stat_ssl")
        .ssl
}
