//! Leasing a shared allowance: each instance takes a slice of a subject's allowance from the
//! shared store in one call and hands it out itself, so that a busy subject far from its limit
//! costs one round trip per slice instead of one per request.
//!
//! Why it stays exact where it matters, never allowing more than the allowance: the store
//! counts a slice as spent when it is taken, and a request is allowed only with a request's
//! worth of a slice (or the store's own yes). What it costs: a request may be refused while
//! another instance still holds part of a slice it has not used — at most `slice` requests'
//! worth per other instance, for at most [`LEASE_LIFETIME`] plus the sweep that gives unused
//! parts back (every second); and a refusal from the store is told again without asking until
//! it says one more request fits (`retry_after`), so a slice given back meanwhile by another
//! instance waits that long. The slice is [`LeasePolicy::percent`] of the allowance, at most
//! [`MAX_SLICE`]; under 2 (small allowances, or a percent of 0) nothing is leased and every
//! request is decided by the store, exactly as without leasing.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::model::{PerMinute, RateDecision, RateLimitKey, Taken};
use super::ports::{RateLimitError, RateLimiter};
use crate::system::Clock;

/// How long a slice may be handed out before what is left of it is given back.
pub const LEASE_LIFETIME: Duration = Duration::from_secs(1);
/// The most requests' worth one slice holds.
pub const MAX_SLICE: u32 = 1_000;
/// The default share of an allowance one slice holds, in percent: allowances under 200 a
/// minute are still decided per request.
pub const DEFAULT_LEASE_PERCENT: u8 = 1;

/// How much of an allowance an instance takes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// The share of the allowance one slice holds (0–100; 0 leases nothing).
    pub percent: u8,
}

impl LeasePolicy {
    /// How many requests' worth to take at once for `rate`; 1 means each request is decided
    /// by the store.
    pub fn slice(self, rate: PerMinute) -> u32 {
        let share = u64::from(rate.get()) * u64::from(self.percent.min(100)) / 100;
        match u32::try_from(share.min(u64::from(MAX_SLICE))) {
            Ok(slice) if slice >= 2 => slice,
            _ => 1,
        }
    }
}

/// What this instance holds of one subject's allowance.
#[derive(Debug)]
struct Holding {
    /// Requests' worth not handed out yet.
    left: u32,
    /// Until when they may be handed out.
    until: OffsetDateTime,
    /// What the store said when the slice was taken.
    taken: RateDecision,
    /// The store's last refusal, told again without asking until one more request fits.
    refused: Option<(OffsetDateTime, RateDecision)>,
    /// Held while asking the store: one call at a time per subject, and those arriving
    /// meanwhile take from its answer instead of asking again.
    asking: Arc<tokio::sync::Mutex<()>>,
}

impl Holding {
    fn new(now: OffsetDateTime, rate: PerMinute) -> Self {
        Self {
            left: 0,
            until: now,
            taken: Taken::nothing(rate).last,
            refused: None,
            asking: Arc::default(),
        }
    }

    /// A decision made here, when one can be: a part of the slice, or the last refusal while
    /// it holds.
    fn decide(&mut self, now: OffsetDateTime) -> Option<RateDecision> {
        if self.left > 0 && self.until > now {
            self.left -= 1;
            return Some(RateDecision {
                allowed: true,
                // What is left of the allowance: the store's remainder and the slice's.
                remaining: self
                    .taken
                    .remaining
                    .saturating_add(self.left)
                    .min(self.taken.limit),
                retry_after: Duration::ZERO,
                ..self.taken
            });
        }
        match self.refused {
            Some((until, refusal)) if until > now => Some(RateDecision {
                retry_after: (until - now).try_into().unwrap_or(refusal.retry_after),
                ..refusal
            }),
            _ => None,
        }
    }

    /// What is left of an expired slice, taken out to give back.
    fn expired_left(&mut self, now: OffsetDateTime) -> u32 {
        if self.until <= now {
            std::mem::take(&mut self.left)
        } else {
            0
        }
    }

    fn idle(&self, now: OffsetDateTime) -> bool {
        self.left == 0
            && self.until <= now
            && self.refused.is_none_or(|(until, _)| until <= now)
            && Arc::strong_count(&self.asking) == 1
    }
}

type LeaseKey = (RateLimitKey, PerMinute);

/// A [`RateLimiter`] that leases slices of each allowance from a shared one (see the
/// module's documentation).
pub struct LeasedRateLimiter {
    shared: Arc<dyn RateLimiter>,
    clock: Arc<dyn Clock>,
    policy: LeasePolicy,
    holdings: Mutex<HashMap<LeaseKey, Holding>>,
}

impl fmt::Debug for LeasedRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedRateLimiter")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl LeasedRateLimiter {
    pub fn new(shared: Arc<dyn RateLimiter>, clock: Arc<dyn Clock>, policy: LeasePolicy) -> Self {
        Self {
            shared,
            clock,
            policy,
            holdings: Mutex::default(),
        }
    }

    /// Gives back what is left of every slice whose lifetime is over, and forgets subjects
    /// with nothing held (called every second). Returns how many requests' worth went back.
    pub async fn return_expired(&self) -> Result<u64, RateLimitError> {
        let now = self.clock.now();
        let expired: Vec<(LeaseKey, u32)> = {
            let mut holdings = self.holdings.lock().unwrap_or_else(PoisonError::into_inner);
            let expired = holdings
                .iter_mut()
                .map(|(key, holding)| (key.clone(), holding.expired_left(now)))
                .filter(|(_, left)| *left > 0)
                .collect();
            holdings.retain(|_, holding| !holding.idle(now));
            expired
        };
        let mut returned = 0;
        for ((key, rate), left) in expired {
            self.shared.take(&key, rate, 0, left).await?;
            returned += u64::from(left);
        }
        Ok(returned)
    }

    /// Decides here when it can; otherwise the lock to hold while asking the store.
    fn decide_here(
        &self,
        lease_key: &LeaseKey,
    ) -> Result<RateDecision, Arc<tokio::sync::Mutex<()>>> {
        let now = self.clock.now();
        let mut holdings = self.holdings.lock().unwrap_or_else(PoisonError::into_inner);
        let holding = holdings
            .entry(lease_key.clone())
            .or_insert_with(|| Holding::new(now, lease_key.1));
        holding.decide(now).ok_or_else(|| holding.asking.clone())
    }

    /// Asks the store for a slice (giving back what an expired one left), and keeps it.
    async fn ask(&self, lease_key: &LeaseKey, slice: u32) -> Result<RateDecision, RateLimitError> {
        let (key, rate) = lease_key;
        let returned = {
            let now = self.clock.now();
            let mut holdings = self.holdings.lock().unwrap_or_else(PoisonError::into_inner);
            holdings
                .get_mut(lease_key)
                .map_or(0, |holding| holding.expired_left(now))
        };
        let taken = self.shared.take(key, *rate, slice, returned).await?;
        let now = self.clock.now();
        let mut holdings = self.holdings.lock().unwrap_or_else(PoisonError::into_inner);
        let holding = holdings
            .entry(lease_key.clone())
            .or_insert_with(|| Holding::new(now, *rate));
        if taken.granted == 0 {
            let until = now + taken.last.retry_after;
            holding.refused = Some((until, taken.last));
            return Ok(taken.last);
        }
        // The first part is this request's.
        let left = taken.granted - 1;
        holding.left = holding.left.saturating_add(left);
        holding.until = now + LEASE_LIFETIME;
        holding.taken = taken.last;
        holding.refused = None;
        Ok(RateDecision {
            remaining: taken.last.remaining.saturating_add(left).min(rate.get()),
            ..taken.last
        })
    }
}

#[async_trait]
impl RateLimiter for LeasedRateLimiter {
    async fn check(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
    ) -> Result<RateDecision, RateLimitError> {
        let slice = self.policy.slice(rate);
        if slice <= 1 {
            return self.shared.check(key, rate).await;
        }
        let lease_key = (key.clone(), rate);
        let asking = match self.decide_here(&lease_key) {
            Ok(decision) => return Ok(decision),
            Err(asking) => asking,
        };
        let _asking = asking.lock().await;
        // Another request may have asked while this one waited.
        match self.decide_here(&lease_key) {
            Ok(decision) => Ok(decision),
            Err(_) => self.ask(&lease_key, slice).await,
        }
    }

    async fn take(
        &self,
        key: &RateLimitKey,
        rate: PerMinute,
        wanted: u32,
        returned: u32,
    ) -> Result<Taken, RateLimitError> {
        self.shared.take(key, rate, wanted, returned).await
    }

    async fn forget_idle(&self) -> Result<u64, RateLimitError> {
        self.shared.forget_idle().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::model::ApiKeyId;
    use crate::rate_limit::model::{LimitSubject, LimitedAction};
    use std::sync::atomic::{AtomicU32, Ordering};
    use uuid::Uuid;

    /// A shared store counting a fixed allowance (no refill within a test), and its calls.
    struct Store {
        left: Mutex<u32>,
        calls: AtomicU32,
    }

    impl Store {
        fn with(allowance: u32) -> Arc<Self> {
            Arc::new(Self {
                left: Mutex::new(allowance),
                calls: AtomicU32::new(0),
            })
        }

        fn left(&self) -> u32 {
            *self.left.lock().unwrap()
        }
    }

    fn decision(allowed: bool, limit: u32, remaining: u32) -> RateDecision {
        RateDecision {
            allowed,
            limit,
            remaining,
            reset_after: Duration::from_secs(1),
            retry_after: if allowed {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            },
        }
    }

    #[async_trait]
    impl RateLimiter for Store {
        async fn check(
            &self,
            key: &RateLimitKey,
            rate: PerMinute,
        ) -> Result<RateDecision, RateLimitError> {
            let taken = self.take(key, rate, 1, 0).await?;
            Ok(taken.last)
        }

        async fn take(
            &self,
            _key: &RateLimitKey,
            rate: PerMinute,
            wanted: u32,
            returned: u32,
        ) -> Result<Taken, RateLimitError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut left = self.left.lock().unwrap();
            *left += returned;
            let granted = wanted.min(*left);
            *left -= granted;
            Ok(Taken {
                granted,
                last: decision(granted > 0, rate.get(), *left),
            })
        }

        async fn forget_idle(&self) -> Result<u64, RateLimitError> {
            Ok(0)
        }
    }

    struct FixedClock(Mutex<OffsetDateTime>);

    impl Clock for FixedClock {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }

    fn key() -> RateLimitKey {
        RateLimitKey {
            action: LimitedAction::GenerationsByKey,
            subject: LimitSubject::key(ApiKeyId(Uuid::from_u128(7))),
        }
    }

    fn rate(n: u32) -> PerMinute {
        PerMinute::new(n).unwrap()
    }

    fn leased(store: &Arc<Store>, percent: u8) -> (LeasedRateLimiter, Arc<FixedClock>) {
        let clock = Arc::new(FixedClock(Mutex::new(OffsetDateTime::UNIX_EPOCH)));
        let limiter = LeasedRateLimiter::new(store.clone(), clock.clone(), LeasePolicy { percent });
        (limiter, clock)
    }

    #[test]
    fn a_slice_is_a_share_of_the_allowance_and_small_ones_are_not_leased() {
        let policy = LeasePolicy { percent: 1 };
        assert_eq!(policy.slice(rate(60)), 1);
        assert_eq!(policy.slice(rate(199)), 1);
        assert_eq!(policy.slice(rate(200)), 2);
        assert_eq!(policy.slice(rate(60_000)), 600);
        assert_eq!(policy.slice(rate(4_000_000_000)), MAX_SLICE);
        assert_eq!(LeasePolicy { percent: 0 }.slice(rate(4_000_000_000)), 1);
    }

    #[tokio::test]
    async fn most_requests_are_decided_without_the_store_and_never_more_than_the_allowance() {
        // 1,000 a minute, slices of 100: 1,000 allowed in 10 calls, then refusals.
        let store = Store::with(1_000);
        let (limiter, _clock) = leased(&store, 10);
        let mut allowed = 0;
        for _ in 0..1_500 {
            if limiter.check(&key(), rate(1_000)).await.unwrap().allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 1_000);
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            11,
            "one call per slice, then one refusal told again while it holds"
        );
    }

    #[tokio::test]
    async fn remaining_counts_the_slice_held_here() {
        let store = Store::with(1_000);
        let (limiter, _clock) = leased(&store, 10);
        let first = limiter.check(&key(), rate(1_000)).await.unwrap();
        assert_eq!(first.remaining, 999);
        let second = limiter.check(&key(), rate(1_000)).await.unwrap();
        assert_eq!(second.remaining, 998);
    }

    #[tokio::test]
    async fn what_an_expired_slice_did_not_use_goes_back() {
        let store = Store::with(1_000);
        let (limiter, clock) = leased(&store, 10);
        limiter.check(&key(), rate(1_000)).await.unwrap();
        assert_eq!(store.left(), 900);
        assert_eq!(limiter.return_expired().await.unwrap(), 0, "still valid");
        *clock.0.lock().unwrap() += LEASE_LIFETIME;
        assert_eq!(limiter.return_expired().await.unwrap(), 99);
        assert_eq!(store.left(), 999);
        // A request after expiry gives back what is left and takes a new slice in one call.
        limiter.check(&key(), rate(1_000)).await.unwrap();
        *clock.0.lock().unwrap() += LEASE_LIFETIME;
        let calls = store.calls.load(Ordering::SeqCst);
        limiter.check(&key(), rate(1_000)).await.unwrap();
        assert_eq!(store.calls.load(Ordering::SeqCst), calls + 1);
        assert_eq!(store.left(), 999 - 2 - 99);
    }

    #[tokio::test]
    async fn two_instances_never_allow_more_than_the_allowance_together() {
        let store = Store::with(1_000);
        let (first, _) = leased(&store, 5);
        let (second, _) = leased(&store, 5);
        let mut allowed = 0;
        for _ in 0..800 {
            for limiter in [&first, &second] {
                if limiter.check(&key(), rate(1_000)).await.unwrap().allowed {
                    allowed += 1;
                }
            }
        }
        assert_eq!(allowed, 1_000);
    }

    #[tokio::test]
    async fn without_a_slice_every_request_goes_to_the_store() {
        let store = Store::with(30);
        let (limiter, _clock) = leased(&store, 1);
        for _ in 0..40 {
            limiter.check(&key(), rate(30)).await.unwrap();
        }
        assert_eq!(store.calls.load(Ordering::SeqCst), 40);
        assert_eq!(store.left(), 0);
    }
}
