//! `ReadinessCheck`: the database answers, and every embedded migration has been applied.

use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use diesel_async::RunQueryDsl;
use nb_domain::ports::{NotReady, ReadinessCheck};

use crate::connect::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use crate::pool::with_connection;
use crate::pool::{ConnectionPool, Database};

/// The longest `/readyz` waits for the database.
pub const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(QueryableByName)]
struct AppliedMigration {
    #[diesel(sql_type = Text)]
    version: String,
}

type ListedMigrations = Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>>;

/// The versions of the migrations compiled into this build.
fn embedded_versions(pool: &ConnectionPool) -> ListedMigrations {
    fn versions<DB: diesel::backend::Backend>(
        all: Vec<Box<dyn diesel::migration::Migration<DB>>>,
    ) -> Vec<String> {
        all.iter().map(|m| m.name().version().to_string()).collect()
    }
    match pool {
        ConnectionPool::Postgres(_) => {
            MigrationSource::<Pg>::migrations(&POSTGRES_MIGRATIONS).map(versions)
        }
        ConnectionPool::Sqlite(_) => {
            MigrationSource::<Sqlite>::migrations(&SQLITE_MIGRATIONS).map(versions)
        }
    }
}

/// Compares what this build expects with what the database has applied. Fails closed: when
/// the expected migrations cannot be listed (or none are), readiness is not proven.
fn compare_migrations(embedded: ListedMigrations, applied: &[String]) -> Result<(), NotReady> {
    let embedded = embedded.map_err(NotReady::MigrationsUnknown)?;
    if embedded.is_empty() {
        return Err(NotReady::MigrationsUnknown(
            "this build lists no migrations".into(),
        ));
    }
    let pending: Vec<String> = embedded
        .into_iter()
        .filter(|version| !applied.contains(version))
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(NotReady::MigrationsPending(pending.join(", ")))
    }
}

#[async_trait]
impl ReadinessCheck for Database {
    async fn check_ready(&self) -> Result<(), NotReady> {
        let read = async {
            with_connection!(self, |conn| {
                diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
                    .load::<AppliedMigration>(conn)
                    .await
            })
        };
        // A load balancer asks often and must hear "not ready" quickly, hung database or not.
        let applied = tokio::time::timeout(READINESS_TIMEOUT, read)
            .await
            .map_err(|_| {
                NotReady::DatabaseUnreachable(Box::new(crate::pool::CallTimedOut(
                    READINESS_TIMEOUT,
                )))
            })?
            .map_err(|error| NotReady::DatabaseUnreachable(Box::new(error)))?
            .map_err(|error| NotReady::DatabaseUnreachable(Box::new(error)))?;
        let applied: Vec<String> = applied.into_iter().map(|row| row.version).collect();
        compare_migrations(embedded_versions(&self.pool), &applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_fails_closed_when_migrations_cannot_be_listed() {
        let applied = ["1".to_owned()];
        assert!(matches!(
            compare_migrations(Err("unreadable".into()), &applied),
            Err(NotReady::MigrationsUnknown(_))
        ));
        assert!(matches!(
            compare_migrations(Ok(Vec::new()), &applied),
            Err(NotReady::MigrationsUnknown(_))
        ));
        assert!(matches!(
            compare_migrations(Ok(vec!["1".into(), "2".into()]), &applied),
            Err(NotReady::MigrationsPending(pending)) if pending == "2"
        ));
        assert!(compare_migrations(Ok(vec!["1".into()]), &applied).is_ok());
    }
}
