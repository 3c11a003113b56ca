//! The quota headers on every generation answer (and on a 429 `quota_exceeded`) when a day
//! or month quota applies to the caller: the tightest quota's limit, what is left of it,
//! seconds to its reset, and whose quota it is.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use nb_domain::quota::QuotaStanding;

pub const LIMIT: HeaderName = HeaderName::from_static("x-quota-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
pub const RESET: HeaderName = HeaderName::from_static("x-quota-reset");
pub const SCOPE: HeaderName = HeaderName::from_static("x-quota-scope");
pub const PERIOD: HeaderName = HeaderName::from_static("x-quota-period");

/// Every quota header, for CORS to expose.
pub const ALL: [HeaderName; 5] = [LIMIT, REMAINING, RESET, SCOPE, PERIOD];

pub fn insert(headers: &mut HeaderMap, quota: Option<&QuotaStanding>) {
    let Some(quota) = quota else {
        return;
    };
    headers.insert(LIMIT, HeaderValue::from(quota.limit));
    headers.insert(REMAINING, HeaderValue::from(quota.remaining()));
    headers.insert(RESET, HeaderValue::from(quota.seconds_to_reset()));
    headers.insert(SCOPE, HeaderValue::from_static(quota.scope.as_str()));
    headers.insert(PERIOD, HeaderValue::from_static(quota.period.as_str()));
}
