//! Abuse limits, with `governor`'s GCRA rate limiters (a token bucket without timers):
//! registrations and logins per client IP and per email, and generations per API key.
//!
//! Limits are kept per instance, in memory: behind N instances a client gets up to N times
//! each limit. Idle entries are forgotten every minute.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use nb_domain::api_keys::ApiKeyId;

use crate::config::Limits;
use crate::error::ApiError;

type KeyLimiter = RateLimiter<
    ApiKeyId,
    DefaultKeyedStateStore<ApiKeyId>,
    DefaultClock,
    StateInformationMiddleware,
>;

pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RESET_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-reset");

#[derive(Clone)]
pub struct RateLimits {
    auth_by_ip: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    auth_by_email: Arc<DefaultKeyedRateLimiter<String>>,
    generations_by_key: Arc<KeyLimiter>,
    generations_per_minute: u32,
    trust_forwarded_for: bool,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("generations_per_minute", &self.generations_per_minute)
            .finish_non_exhaustive()
    }
}

fn per_minute(count: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN))
}

fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Where a caller stands against the generation limit; its headers go on every generation
/// response.
#[derive(Debug, Clone, Copy)]
pub struct GenerationQuota {
    pub allowed: bool,
    limit: u32,
    remaining: u32,
    /// Seconds until the full quota is available again.
    reset: u64,
    /// When refused: seconds until one more request is allowed.
    retry_after: u64,
}

impl GenerationQuota {
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT_HEADER, HeaderValue::from(self.limit));
        headers.insert(REMAINING_HEADER, HeaderValue::from(self.remaining));
        headers.insert(RESET_HEADER, HeaderValue::from(self.reset));
    }

    pub fn refusal(&self) -> ApiError {
        crate::metrics::record_rate_limited("generations_per_key");
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("This API key may make {} generation requests a minute; retry after the time in Retry-After.", self.limit),
        )
        .with_retry_after(self.retry_after.max(1))
    }
}

impl RateLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            auth_by_ip: Arc::new(RateLimiter::keyed(per_minute(
                limits.auth_attempts_per_minute_per_ip,
            ))),
            auth_by_email: Arc::new(RateLimiter::keyed(per_minute(
                limits.auth_attempts_per_minute_per_email,
            ))),
            generations_by_key: Arc::new(
                RateLimiter::keyed(per_minute(limits.generations_per_minute_per_key))
                    .with_middleware::<StateInformationMiddleware>(),
            ),
            generations_per_minute: limits.generations_per_minute_per_key,
            trust_forwarded_for: limits.trust_forwarded_for,
        }
    }

    /// Forgets entries whose allowance is back to full, so memory is bounded by recent
    /// clients. Called every minute (see `background`).
    pub fn forget_idle(&self) {
        self.auth_by_ip.retain_recent();
        self.auth_by_email.retain_recent();
        self.generations_by_key.retain_recent();
    }

    /// The client's address: the peer, or the first `X-Forwarded-For` hop when the operator
    /// says a trusted proxy sets it.
    pub fn client_ip(&self, request: &HttpRequest) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            let forwarded = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            if let Some(ip) = forwarded
                .and_then(|list| list.split(',').next())
                .and_then(|ip| ip.trim().parse().ok())
            {
                return Some(ip);
            }
        }
        request.peer_addr().map(|address| address.ip())
    }

    /// One registration or login attempt from `ip` for `email` (as typed: it is normalised here).
    pub fn check_auth_attempt(&self, ip: Option<IpAddr>, email: &str) -> Result<(), ApiError> {
        let now = DefaultClock::default().now();
        let by_ip = ip.map_or(Ok(()), |ip| self.auth_by_ip.check_key(&ip));
        let by_email = self
            .auth_by_email
            .check_key(&nb_domain::user::normalise_email(email));
        let wait = [by_ip.err(), by_email.err()]
            .into_iter()
            .flatten()
            .map(|not_until| not_until.wait_time_from(now))
            .max();
        match wait {
            None => Ok(()),
            Some(wait) => {
                crate::metrics::record_rate_limited("auth_attempts");
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "Too many sign-in or registration attempts; retry after the time in Retry-After.",
                )
                .with_retry_after(whole_seconds(wait).max(1)))
            }
        }
    }

    /// Counts one generation request for `key`.
    pub fn check_generation(&self, key: ApiKeyId) -> GenerationQuota {
        let limit = self.generations_per_minute;
        let seconds_per_request = 60.0 / f64::from(limit);
        match self.generations_by_key.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let reset = (f64::from(limit - remaining) * seconds_per_request).ceil() as u64;
                GenerationQuota {
                    allowed: true,
                    limit,
                    remaining,
                    reset,
                    retry_after: 0,
                }
            }
            Err(not_until) => {
                let wait = whole_seconds(not_until.wait_time_from(DefaultClock::default().now()));
                let reset = (f64::from(limit) * seconds_per_request).ceil() as u64;
                GenerationQuota {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset,
                    retry_after: wait,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(generations: u32, auth: u32) -> RateLimits {
        RateLimits::new(&Limits {
            generations_per_minute_per_key: generations,
            auth_attempts_per_minute_per_ip: auth,
            auth_attempts_per_minute_per_email: auth,
            ..Limits::default()
        })
    }

    #[test]
    fn generations_count_down_then_are_refused_per_key() {
        let limits = limits(3, 10);
        let key = ApiKeyId(uuid::Uuid::from_u128(1));
        let remaining: Vec<u32> = (0..3)
            .map(|_| limits.check_generation(key).remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limits.check_generation(key);
        assert!(!refused.allowed);
        assert!((1..=20).contains(&refused.retry_after), "{refused:?}");
        assert!(
            limits
                .check_generation(ApiKeyId(uuid::Uuid::from_u128(2)))
                .allowed
        );
    }

    #[test]
    fn auth_attempts_are_limited_per_email_whatever_its_case() {
        let limits = limits(3, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other_ip: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(
            limits
                .check_auth_attempt(Some(ip), "ada@example.com")
                .is_ok()
        );
        assert!(
            limits
                .check_auth_attempt(Some(other_ip), " ADA@example.com")
                .is_ok()
        );
        let third =
            limits.check_auth_attempt(Some("192.0.2.3".parse().unwrap()), "ada@example.com");
        assert_eq!(third.unwrap_err().code(), "too_many_attempts");
    }

    #[test]
    fn auth_attempts_are_limited_per_ip_across_emails() {
        let limits = limits(3, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.check_auth_attempt(Some(ip), "a@example.com").is_ok());
        assert!(limits.check_auth_attempt(Some(ip), "b@example.com").is_ok());
        assert!(
            limits
                .check_auth_attempt(Some(ip), "c@example.com")
                .is_err()
        );
    }
}
