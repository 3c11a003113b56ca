//! The headers that tell a client where it stands: on every generation answer the key's
//! per-minute standing (`x-ratelimit-*`) and, when a day or month quota applies to the
//! caller (and on a 429 `quota_exceeded`), the tightest quota's limit, what is left of it,
//! seconds to its reset, and whose quota it is (`x-quota-*`).

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use nb_domain::quota::QuotaStanding;
use nb_domain::rate_limit::RateDecision;

pub const RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub const QUOTA_LIMIT: HeaderName = HeaderName::from_static("x-quota-limit");
pub const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
pub const QUOTA_RESET: HeaderName = HeaderName::from_static("x-quota-reset");
pub const QUOTA_SCOPE: HeaderName = HeaderName::from_static("x-quota-scope");
pub const QUOTA_PERIOD: HeaderName = HeaderName::from_static("x-quota-period");

/// Every header of a client's standing, for CORS to expose.
pub const ALL: [HeaderName; 8] = [
    RATE_LIMIT,
    RATE_LIMIT_REMAINING,
    RATE_LIMIT_RESET,
    QUOTA_LIMIT,
    QUOTA_REMAINING,
    QUOTA_RESET,
    QUOTA_SCOPE,
    QUOTA_PERIOD,
];

/// A wait in whole seconds, rounded up.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The `x-ratelimit-*` headers of a key's standing.
pub fn insert_rate_limit(headers: &mut HeaderMap, decision: &RateDecision) {
    headers.insert(RATE_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(RATE_LIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(
        RATE_LIMIT_RESET,
        HeaderValue::from(whole_seconds(decision.reset_after)),
    );
}

/// The `x-quota-*` headers of the tightest quota, when one applies.
pub fn insert_quota(headers: &mut HeaderMap, quota: Option<&QuotaStanding>) {
    let Some(quota) = quota else {
        return;
    };
    headers.insert(QUOTA_LIMIT, HeaderValue::from(quota.limit));
    headers.insert(QUOTA_REMAINING, HeaderValue::from(quota.remaining()));
    headers.insert(QUOTA_RESET, HeaderValue::from(quota.seconds_to_reset()));
    headers.insert(QUOTA_SCOPE, HeaderValue::from_static(quota.scope.as_str()));
    headers.insert(
        QUOTA_PERIOD,
        HeaderValue::from_static(quota.period.as_str()),
    );
}
