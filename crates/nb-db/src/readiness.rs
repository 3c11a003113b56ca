//! `ReadinessCheck`: the database answers, and every embedded migration has been applied.

use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use diesel_async::RunQueryDsl;
use nb_domain::ports::{NotReady, ReadinessCheck};

use crate::connect::{ConnectionPool, Database, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use crate::with_connection;

#[derive(QueryableByName)]
struct AppliedMigration {
    #[diesel(sql_type = Text)]
    version: String,
}

fn embedded_versions(pool: &ConnectionPool) -> Vec<String> {
    let migrations = match pool {
        ConnectionPool::Postgres(_) => MigrationSource::<Pg>::migrations(&POSTGRES_MIGRATIONS)
            .map(|all| all.iter().map(|m| m.name().version().to_string()).collect()),
        ConnectionPool::Sqlite(_) => MigrationSource::<Sqlite>::migrations(&SQLITE_MIGRATIONS)
            .map(|all| all.iter().map(|m| m.name().version().to_string()).collect()),
    };
    migrations.unwrap_or_default()
}

#[async_trait]
impl ReadinessCheck for Database {
    async fn check_ready(&self) -> Result<(), NotReady> {
        let applied = with_connection!(self, |conn| {
            diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
                .load::<AppliedMigration>(conn)
                .await
        })
        .map_err(|error| NotReady::DatabaseUnreachable(Box::new(error)))?
        .map_err(|error| NotReady::DatabaseUnreachable(Box::new(error)))?;
        let pending: Vec<String> = embedded_versions(&self.pool)
            .into_iter()
            .filter(|version| !applied.iter().any(|row| &row.version == version))
            .collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(NotReady::MigrationsPending(pending.join(", ")))
        }
    }
}
