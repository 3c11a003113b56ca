//! Per-minute limits in Redis: GCRA in one Lua script per decision. A script runs atomically,
//! so concurrent decisions on one subject, from every instance, take turns.
//!
//! Each (action and allowance, subject) key holds its theoretical arrival time `tat`, in
//! microseconds of Redis's clock (`TIME`), so instances' clocks do not matter. For an
//! allowance of `n` a minute each request moves `tat` by `T = 60 s / n` from
//! `max(tat, now)`, and is allowed while that stays within a minute of now: up to `n` at
//! once, then one every `T`. A refusal writes nothing. The key expires when the allowance
//! is full again, so idle subjects cost nothing and need no sweep.

use std::time::Duration;

use async_trait::async_trait;
use nb_domain::rate_limit::{PerMinute, RateDecision, RateLimitError, RateLimitKey, RateLimiter};

use crate::connection::{Redis, limiter_error};

/// The window an allowance refills in, in microseconds.
const WINDOW_MICROS: u64 = 60_000_000;

/// Returns `{allowed (1|0), tat - now after the decision (µs)}`. `%.0f` keeps the number
/// exact (Lua's `tostring` would round it to 14 digits).
const DECIDE: &str = r"
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now <= window then
  local ttl = math.max(1, math.ceil((next_tat - now) / 1000))
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl)
  return {1, next_tat - now}
end
return {0, tat - now}
";

impl Redis {
    /// The per-minute limiter on this Redis.
    pub fn rate_limiter(&self) -> RedisRateLimiter {
        RedisRateLimiter::new(self.clone())
    }
}

/// Rate limits counted in Redis, shared by every instance on it.
#[derive(Debug, Clone)]
pub struct RedisRateLimiter {
    redis: Redis,
    decide: redis::Script,
}

impl RedisRateLimiter {
    pub(crate) fn new(redis: Redis) -> Self {
        Self {
            redis,
            decide: redis::Script::new(DECIDE),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    #[tracing::instrument(skip_all, fields(action = key.action.as_str()))]
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RateLimitError> {
        let limit = rate.get();
        // At least a microsecond: larger allowances than a million a minute are as good as
        // none, and a zero step would never move the arrival time.
        let interval = (WINDOW_MICROS / u64::from(limit)).max(1);
        // Counted per allowance too, as in memory: a changed limit starts afresh.
        let redis_key = format!(
            "nb:rate:{}/{limit}:{}",
            key.action.as_str(),
            key.subject.as_str()
        );
        let mut connection = self.redis.connection.clone();
        // EVALSHA, and EVAL once when Redis does not know the script yet.
        let (allowed, ahead): (u8, i64) = self
            .decide
            .key(&redis_key)
            .arg(interval)
            .arg(WINDOW_MICROS)
            .invoke_async(&mut connection)
            .await
            .map_err(limiter_error)?;
        let ahead = u64::try_from(ahead).unwrap_or(0);
        Ok(if allowed == 1 {
            RateDecision {
                allowed: true,
                limit,
                remaining: u32::try_from((WINDOW_MICROS - ahead.min(WINDOW_MICROS)) / interval)
                    .unwrap_or(limit)
                    .min(limit),
                reset_after: Duration::from_micros(ahead),
                retry_after: Duration::ZERO,
            }
        } else {
            RateDecision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: Duration::from_micros(ahead),
                retry_after: Duration::from_micros(
                    (ahead + interval).saturating_sub(WINDOW_MICROS).max(1),
                ),
            }
        })
    }

    /// Nothing to do: keys expire by themselves once their allowance is full.
    async fn forget_idle(&self) -> Result<u64, RateLimitError> {
        Ok(0)
    }
}
