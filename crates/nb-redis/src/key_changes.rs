//! Key changes between instances over Redis pub/sub: an instance that revokes a key (or
//! disables an account…) publishes it on [`CHANNEL`]; every instance subscribes on a
//! connection of its own and evicts what the change concerns.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use nb_domain::ports::{KeyChange, KeyChangeBroadcast};

use crate::connection::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, Redis};

/// The pub/sub channel.
pub const CHANNEL: &str = "nb:key_changes";
/// How long the listener waits between two attempts to (re)connect.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How often an idle subscription is checked with a `PING` (a silent, dead connection would
/// otherwise lose every announcement until the TTL).
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_secs(15);

#[async_trait]
impl KeyChangeBroadcast for Redis {
    async fn announce(&self, change: KeyChange) {
        let mut connection = self.connection.clone();
        let published = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(change.encode())
            .query_async::<i64>(&mut connection)
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "could not announce a key change");
        }
    }
}

/// Listens for key changes for as long as it runs (spawn it), calling `on_change` with each,
/// and with `None` whenever announcements may have been missed (on every (re)subscription):
/// the caller then forgets everything it cached.
pub async fn listen_for_key_changes(redis: Redis, on_change: impl Fn(Option<KeyChange>)) {
    loop {
        if let Err(error) = listen_once(&redis, &on_change).await {
            tracing::warn!(%error, "lost the key-change subscription");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn listen_once(
    redis: &Redis,
    on_change: &impl Fn(Option<KeyChange>),
) -> Result<(), redis::RedisError> {
    let timed_out = || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, redis.client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.subscribe(CHANNEL))
        .await
        .map_err(|_| timed_out())??;
    tracing::debug!("subscribed to key changes");
    // Whatever was announced while not subscribed is unknown.
    on_change(None);
    let (mut sink, mut messages) = pubsub.split();
    loop {
        match tokio::time::timeout(LIVENESS_CHECK_INTERVAL, messages.next()).await {
            Ok(Some(message)) => {
                let payload: Option<String> = message.get_payload().ok();
                match payload.as_deref().and_then(KeyChange::decode) {
                    Some(change) => on_change(Some(change)),
                    None => tracing::warn!(?payload, "an unreadable key change"),
                }
            }
            Ok(None) => {
                return Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionAborted,
                )));
            }
            Err(_idle) => {
                tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<String>())
                    .await
                    .map_err(|_| timed_out())??;
            }
        }
    }
}
