//! Key changes between instances, over PostgreSQL `LISTEN/NOTIFY`: an instance that revokes
//! a key (or disables an account…) announces it with `pg_notify` on [`CHANNEL`]; every
//! instance listens on a connection of its own and evicts what the change concerns.
//!
//! With SQLite there is one instance: announcing does nothing and nobody listens.

use std::time::Duration;

use async_trait::async_trait;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use nb_domain::ports::{KeyChange, KeyChangeBroadcast};

use crate::connect::DatabaseUrl;
use crate::pool::{ConnectionPool, Database, with_connection};
use crate::postgres_tls::PostgresTarget;

/// The notification channel.
pub const CHANNEL: &str = "nb_key_changes";
/// How long the listener waits between two attempts to (re)connect.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How often an idle listening connection is checked (a silent, dead connection would
/// otherwise lose every announcement until the TTL).
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// How long that check may take.
const LIVENESS_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[async_trait]
impl KeyChangeBroadcast for Database {
    async fn announce(&self, change: KeyChange) {
        if !matches!(self.pool, ConnectionPool::Postgres(_)) {
            return;
        }
        let payload = change.encode();
        let sent = with_connection!(self, |conn| {
            diesel::sql_query("SELECT pg_notify($1, $2)::text AS sent")
                .bind::<Text, _>(CHANNEL)
                .bind::<Text, _>(&payload)
                .execute(conn)
                .await
        });
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not announce a key change"),
            Err(error) => tracing::warn!(%error, "could not announce a key change"),
        }
    }
}

/// Listens for key changes on `url` for as long as it runs (spawn it), calling `on_change`
/// with each, and with `None` whenever announcements may have been missed (on every
/// (re)connection): the caller then forgets everything it cached. Does nothing for SQLite.
pub async fn listen_for_key_changes(url: DatabaseUrl, on_change: impl Fn(Option<KeyChange>)) {
    let DatabaseUrl::Postgres(raw) = url else {
        return;
    };
    let target = match PostgresTarget::from_url(&raw) {
        Ok(target) => target,
        Err(error) => {
            tracing::error!(%error, "the key-change listener cannot connect");
            return;
        }
    };
    loop {
        match target.connect().await {
            Ok(mut connection) => {
                if let Err(error) = listen_on(&mut connection, &on_change).await {
                    tracing::warn!(%error, "lost the key-change listener's connection");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot connect the key-change listener");
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn listen_on(
    connection: &mut AsyncPgConnection,
    on_change: &impl Fn(Option<KeyChange>),
) -> diesel::QueryResult<()> {
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(connection)
        .await?;
    tracing::debug!("listening for key changes");
    // Whatever was announced while not listening is unknown.
    on_change(None);
    loop {
        let notification = {
            let mut notifications = std::pin::pin!(connection.notifications_stream());
            tokio::time::timeout(LIVENESS_CHECK_INTERVAL, notifications.next()).await
        };
        match notification {
            Ok(Some(Ok(notification))) => match KeyChange::decode(&notification.payload) {
                Some(change) => on_change(Some(change)),
                None => tracing::warn!(payload = notification.payload, "an unreadable key change"),
            },
            Ok(Some(Err(error))) => return Err(error),
            Ok(None) => {
                return Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ClosedConnection,
                    Box::new("the notification stream ended".to_owned()),
                ));
            }
            Err(_idle) => {
                let check = diesel::sql_query("SELECT 1").execute(connection);
                match tokio::time::timeout(LIVENESS_CHECK_TIMEOUT, check).await {
                    Ok(result) => {
                        result?;
                    }
                    Err(_) => {
                        return Err(diesel::result::Error::DatabaseError(
                            diesel::result::DatabaseErrorKind::UnableToSendCommand,
                            Box::new("the listening connection does not answer".to_owned()),
                        ));
                    }
                }
            }
        }
    }
}
