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
    /// Every stored `(key_hash, prefix)` pair: for tests that check what is kept of a key.
    pub async fn stored_key_hashes_and_prefixes(&self) -> Vec<(String, String)> {
        use crate::schema::api_keys;
        use diesel::QueryDsl as _;
        let rows = crate::with_connection!(&self.database, |conn| {
            api_keys::table
                .select((api_keys::key_hash, api_keys::prefix))
                .load::<(String, String)>(conn)
                .await
        });
        rows.expect("no connection").expect("cannot read api_keys")
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
