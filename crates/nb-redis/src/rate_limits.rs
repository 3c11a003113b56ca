//! Per-minute limits in Redis: GCRA in one Lua script per decision (or per slice taken at
//! once). A script runs atomically,
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
use nb_domain::rate_limit::{
    PerMinute, RateDecision, RateLimitError, RateLimitKey, RateLimiter, Taken,
};

use crate::connection::{Redis, limiter_error};

/// The window an allowance refills in, in microseconds.
const WINDOW_MICROS: u64 = 60_000_000;

/// `ARGV`: seconds per request and the window (µs), requests wanted, requests given back
/// first. Returns `{granted, tat - now after the decision (µs)}`; writes only when something
/// was granted or given back. `%.0f` keeps the number exact (Lua's `tostring` would round it
/// to 14 digits).
const TAKE: &str = r"
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local returned = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = (tonumber(redis.call('GET', KEYS[1])) or now) - returned * interval
if tat < now then tat = now end
local granted = math.floor((now + window - tat) / interval)
if granted > wanted then granted = wanted end
if granted < 0 then granted = 0 end
tat = tat + granted * interval
if granted > 0 or returned > 0 then
  local ttl = math.max(1, math.ceil((tat - now) / 1000))
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
end
return {granted, tat - now}
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
    take: redis::Script,
}

impl RedisRateLimiter {
    pub(crate) fn new(redis: Redis) -> Self {
        Self {
            redis,
            take: redis::Script::new(TAKE),
        }
    }
}

impl RedisRateLimiter {
    /// Runs [`TAKE`]: how many were granted, and the decision for the last of them (or the
    /// refusal).
    async fn run_take(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
        wanted: u32,
        returned: u32,
    ) -> Result<Taken, RateLimitError> {
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
        let (granted, ahead): (u32, i64) = self
            .take
            .key(&redis_key)
            .arg(interval)
            .arg(WINDOW_MICROS)
            .arg(wanted)
            .arg(returned)
            .invoke_async(&mut connection)
            .await
            .map_err(limiter_error)?;
        let ahead = u64::try_from(ahead).unwrap_or(0);
        let last = if granted > 0 {
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
        };
        Ok(Taken { granted, last })
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
        Ok(self.run_take(key, rate, 1, 0).await?.last)
    }

    #[tracing::instrument(skip_all, fields(action = key.action.as_str(), wanted = wanted, returned = returned))]
    async fn take(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
        wanted: u32,
        returned: u32,
    ) -> Result<Taken, RateLimitError> {
        self.run_take(key, rate, wanted, returned).await
    }

    /// Nothing to do: keys expire by themselves once their allowance is full.
    async fn forget_idle(&self) -> Result<u64, RateLimitError> {
        Ok(0)
    }
}
