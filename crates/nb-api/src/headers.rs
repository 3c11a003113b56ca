//! The headers that tell a client where it stands: on every generation answer the key's
//! per-minute standing (`x-ratelimit-*`) and, when a day or month quota applies to the
//! caller (and on a 429 `quota_exceeded`), the tightest quota's limit, what is left of it,
//! seconds to its reset, and whose quota it is (`x-quota-*`); the same of the tightest budget,
//! in dollars (`x-budget-*`, on a 429 `budget_exceeded` too); and what the answer's images
//! cost (`x-nb-cost-usd`).

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use nb_domain::generation::Standings;
use nb_domain::money::Usd;
use nb_domain::rate_limit::RateDecision;

pub const RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub const QUOTA_LIMIT: HeaderName = HeaderName::from_static("x-quota-limit");
pub const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
pub const QUOTA_RESET: HeaderName = HeaderName::from_static("x-quota-reset");
pub const QUOTA_SCOPE: HeaderName = HeaderName::from_static("x-quota-scope");
pub const QUOTA_PERIOD: HeaderName = HeaderName::from_static("x-quota-period");

pub const BUDGET_LIMIT: HeaderName = HeaderName::from_static("x-budget-limit");
pub const BUDGET_REMAINING: HeaderName = HeaderName::from_static("x-budget-remaining");
pub const BUDGET_RESET: HeaderName = HeaderName::from_static("x-budget-reset");
pub const BUDGET_SCOPE: HeaderName = HeaderName::from_static("x-budget-scope");
pub const BUDGET_PERIOD: HeaderName = HeaderName::from_static("x-budget-period");

/// What the images of the answer cost, in dollars with 6 decimals.
pub const COST: HeaderName = HeaderName::from_static("x-nb-cost-usd");

/// Every header of a client's standing, for CORS to expose.
pub const ALL: [HeaderName; 14] = [
    RATE_LIMIT,
    RATE_LIMIT_REMAINING,
    RATE_LIMIT_RESET,
    QUOTA_LIMIT,
    QUOTA_REMAINING,
    QUOTA_RESET,
    QUOTA_SCOPE,
    QUOTA_PERIOD,
    BUDGET_LIMIT,
    BUDGET_REMAINING,
    BUDGET_RESET,
    BUDGET_SCOPE,
    BUDGET_PERIOD,
    COST,
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

/// `x-nb-cost-usd`: what the answer's images cost.
pub fn insert_cost(headers: &mut HeaderMap, cost: Usd) {
    if let Ok(value) = HeaderValue::from_str(&cost.to_string()) {
        headers.insert(COST, value);
    }
}

/// The `x-quota-*` headers of the tightest quota and the `x-budget-*` of the tightest
/// budget, when they apply.
pub fn insert_standings(headers: &mut HeaderMap, standings: &Standings) {
    if let Some(budget) = &standings.budget {
        let dollars = |usd: Usd| HeaderValue::from_str(&usd.to_string()).ok();
        if let (Some(limit), Some(remaining)) =
            (dollars(budget.budget), dollars(budget.remaining()))
        {
            headers.insert(BUDGET_LIMIT, limit);
            headers.insert(BUDGET_REMAINING, remaining);
        }
        headers.insert(BUDGET_RESET, HeaderValue::from(budget.seconds_to_reset()));
        headers.insert(
            BUDGET_SCOPE,
            HeaderValue::from_static(budget.scope.as_str()),
        );
        headers.insert(
            BUDGET_PERIOD,
            HeaderValue::from_static(budget.period.as_str()),
        );
    }
    let Some(quota) = &standings.quota else {
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
