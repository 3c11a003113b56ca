//! Redis adapter: what several instances share when `NB_REDIS_URL` is set.
//!
//! - [`RedisRateLimiter`]: per-minute limits (GCRA, the algorithm of the in-memory and
//!   PostgreSQL limiters) in one Lua script per decision, atomic in Redis, by Redis's clock.
//! - Key changes ([`nb_domain::ports::KeyChangeBroadcast`]) over pub/sub, and
//!   [`listen_for_key_changes`] that hears them.
//! - [`ReadinessCheck`] for `/readyz`.
//!
//! Every command waits at most [`RESPONSE_TIMEOUT`]; a connection attempt at most
//! [`CONNECT_TIMEOUT`]. The connection is made lazily and remade after a failure, so an
//! instance starts while Redis is down and recovers by itself when it is back.

mod connection;
mod key_changes;
mod rate_limits;
#[cfg(feature = "testing")]
pub mod testing;

pub use connection::{
    CONNECT_TIMEOUT, InvalidRedisUrl, RESPONSE_TIMEOUT, Redis, RedisSettings, RedisUnavailable,
    RedisUrl,
};
pub use key_changes::{CHANNEL, listen_for_key_changes};
pub use rate_limits::RedisRateLimiter;
