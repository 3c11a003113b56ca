//! Rate limits on the HTTP side: the in-memory [`RateLimiter`] (one instance's counts, with
//! `governor`'s GCRA: SQLite, or `NB_RATE_LIMITS=memory`), the client's address as limits see it, and the `x-ratelimit-*`
//! headers and 429s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as GovernorLimiter};
use nb_domain::RepositoryError;
use nb_domain::rate_limit::{
    ClientAddress, LimitSubject, LimitedAction, PerMinute, RateDecision, RateLimitKey, RateLimiter,
    ThrottleError,
};

use crate::error::ApiError;

pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RESET_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The most subjects one counter keeps; past that (after forgetting idle ones), new subjects
/// are counted together as one.
pub const MAX_SUBJECTS_PER_COUNTER: usize = 100_000;

type KeyedLimiter = GovernorLimiter<
    LimitSubject,
    DefaultKeyedStateStore<LimitSubject>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One instance's counts, in memory: one GCRA limiter per action and allowance.
#[derive(Default)]
pub struct MemoryRateLimiter {
    counters: Mutex<HashMap<(LimitedAction, PerMinute), Arc<KeyedLimiter>>>,
}

impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter").finish_non_exhaustive()
    }
}

fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl MemoryRateLimiter {
    fn counter(&self, action: LimitedAction, rate: PerMinute) -> Arc<KeyedLimiter> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .entry((action, rate))
            .or_insert_with(|| {
                Arc::new(
                    GovernorLimiter::keyed(Quota::per_minute(rate.0))
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone()
    }

    /// Forgets subjects whose allowance is back to full, so memory is bounded by recent
    /// clients.
    fn forget_idle_subjects(&self) {
        let counters: Vec<_> = self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for counter in counters {
            counter.retain_recent();
            counter.shrink_to_fit();
        }
    }

    /// How many subjects are kept, over every counter.
    pub fn subjects(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|counter| counter.len())
            .sum()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RepositoryError> {
        let counter = self.counter(key.action, rate);
        if counter.len() >= MAX_SUBJECTS_PER_COUNTER {
            counter.retain_recent();
        }
        let overflow;
        let subject = if counter.len() >= MAX_SUBJECTS_PER_COUNTER {
            overflow = LimitSubject::overflow();
            &overflow
        } else {
            &key.subject
        };
        let limit = rate.get();
        let seconds_per_request = 60.0 / f64::from(limit);
        Ok(match counter.check_key(subject) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    limit,
                    remaining,
                    reset_after: Duration::from_secs_f64(
                        f64::from(limit - remaining) * seconds_per_request,
                    ),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => RateDecision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: Duration::from_secs(60),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        })
    }

    async fn forget_idle(&self) -> Result<u64, RepositoryError> {
        let before = self.subjects();
        self.forget_idle_subjects();
        Ok(before.saturating_sub(self.subjects()) as u64)
    }
}

/// Where the client's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddressSource {
    /// How many proxies in front of this server append to `X-Forwarded-For` (0: trust none,
    /// take the TCP peer).
    pub trusted_proxy_hops: usize,
}

impl ClientAddressSource {
    /// The peer, or, behind `trusted_proxy_hops` proxies, the address the outermost trusted
    /// proxy saw: the `trusted_proxy_hops`-th entry of `X-Forwarded-For` from the right
    /// (entries further left are whatever the client sent, and are never trusted). When the
    /// header has fewer entries than that, the peer.
    pub fn client_address(&self, request: &HttpRequest) -> Option<ClientAddress> {
        let peer = request.peer_addr().map(|address| address.ip());
        let forwarded = (self.trusted_proxy_hops > 0)
            .then(|| forwarded_for(request, self.trusted_proxy_hops))
            .flatten();
        forwarded.or(peer).map(ClientAddress::new)
    }
}

fn forwarded_for(request: &HttpRequest, hops: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .collect();
    let index = entries.len().checked_sub(hops)?;
    entries[index].parse().ok()
}

/// The `x-ratelimit-*` headers of a key's standing.
pub fn add_rate_limit_headers(headers: &mut HeaderMap, decision: &RateDecision) {
    headers.insert(LIMIT_HEADER, HeaderValue::from(decision.limit));
    headers.insert(REMAINING_HEADER, HeaderValue::from(decision.remaining));
    headers.insert(
        RESET_HEADER,
        HeaderValue::from(whole_seconds(decision.reset_after)),
    );
}

impl From<ThrottleError> for ApiError {
    fn from(error: ThrottleError) -> Self {
        let (action, decision) = match error {
            ThrottleError::Limited { action, decision } => (action, decision),
            ThrottleError::Repository(RepositoryError::Unavailable(cause))
                if cause.is::<nb_redis::RedisUnavailable>() =>
            {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate_limiter_unavailable",
                    "The store that counts rate limits is unavailable; please try again shortly.",
                )
                .with_retry_after(1)
                .with_cause(RepositoryError::Unavailable(cause));
            }
            ThrottleError::Repository(error) => return error.into(),
        };
        crate::metrics::record_rate_limited(action.as_str());
        let retry_after = whole_seconds(decision.retry_after).max(1);
        let refusal = match action {
            LimitedAction::AuthByAddress
            | LimitedAction::AuthByEmailAndAddress
            | LimitedAction::AuthByEmail => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Too many sign-in or registration attempts; retry after the time in Retry-After.",
            ),
            LimitedAction::GenerationsByKey => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "This API key may make {} generation requests a minute; retry after the \
                     time in Retry-After.",
                    decision.limit
                ),
            ),
            LimitedAction::GenerationsByAccount => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "This account's keys together may make no more generation requests this \
                 minute; retry after the time in Retry-After.",
            ),
        };
        refusal.with_retry_after(retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use uuid::Uuid;

    fn key(n: u128) -> RateLimitKey {
        RateLimitKey {
            action: LimitedAction::GenerationsByKey,
            subject: LimitSubject::key(nb_domain::api_keys::ApiKeyId(Uuid::from_u128(n))),
        }
    }

    #[tokio::test]
    async fn requests_count_down_then_are_refused_per_subject() {
        let limiter = MemoryRateLimiter::default();
        let rate = PerMinute::new(3).unwrap();
        let mut remaining = Vec::new();
        for _ in 0..3 {
            remaining.push(limiter.check(&key(1), rate).await.unwrap().remaining);
        }
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(&key(1), rate).await.unwrap();
        assert!(!refused.allowed);
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(20)
        );
        assert!(limiter.check(&key(2), rate).await.unwrap().allowed);
        // Another allowance for the same action is a counter of its own.
        assert!(
            limiter
                .check(&key(1), PerMinute::new(10).unwrap())
                .await
                .unwrap()
                .allowed
        );
    }

    #[tokio::test]
    async fn a_flood_of_new_subjects_is_bounded() {
        let limiter = MemoryRateLimiter::default();
        let rate = PerMinute::new(5).unwrap();
        for n in 0..(MAX_SUBJECTS_PER_COUNTER as u128 + 1_000) {
            let _ = limiter.check(&key(n), rate).await;
        }
        assert!(
            limiter.subjects() <= MAX_SUBJECTS_PER_COUNTER + 1,
            "{}",
            limiter.subjects()
        );
        // Past the bound, newcomers share one allowance.
        let mut shared = 0;
        for n in 0..10u128 {
            shared += usize::from(
                limiter
                    .check(&key(u128::MAX - n), rate)
                    .await
                    .unwrap()
                    .allowed,
            );
        }
        assert!(shared <= 5, "{shared}");
    }

    #[test]
    fn only_the_trusted_hops_of_x_forwarded_for_count() {
        let request = |forwarded: &str| {
            TestRequest::default()
                .peer_addr("10.0.0.1:5000".parse().unwrap())
                .insert_header(("x-forwarded-for", forwarded))
                .to_http_request()
        };
        let address = |hops, forwarded| {
            ClientAddressSource {
                trusted_proxy_hops: hops,
            }
            .client_address(&request(forwarded))
            .map(|address| address.network().to_string())
        };
        // One proxy appends the client it saw: the right-most entry; what the client wrote
        // itself (to the left) is ignored.
        assert_eq!(
            address(1, "6.6.6.6, 203.0.113.7").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            address(2, "6.6.6.6, 203.0.113.7, 10.0.0.2").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(address(0, "6.6.6.6").as_deref(), Some("10.0.0.1"));
        assert_eq!(address(3, "203.0.113.7").as_deref(), Some("10.0.0.1"));
        assert_eq!(address(1, "2001:db8::1").as_deref(), Some("2001:db8::"));
    }
}
