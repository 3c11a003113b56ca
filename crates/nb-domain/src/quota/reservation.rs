//! Reserving quota and budget for a generation: which counters a key's images count in, and
//! whether a reservation fits. Pure rules; the repository reads the state in its
//! transaction, asks [`ReservationState::counters`] and [`decide`], and writes what they
//! decided.
//!
//! A generation reserves its images, and its estimated cost, before the provider is called,
//! with conditional updates of the counters in one transaction (the repository's job), then
//! settles: gives back the images it did not make and replaces the estimate by the real
//! cost. Failures never spend quota or budget, and concurrent requests can never pass a
//! quota, nor a budget when the estimates are at or above the real costs.

use time::{Date, OffsetDateTime};

use super::model::{
    BudgetStanding, PeriodLimits, QuotaLimit, QuotaPeriod, QuotaScope, QuotaStanding,
    longest_refusal, tightest,
};
use crate::accounts::model::UserId;
use crate::api_keys::model::{ApiKeyId, AuthenticatedApiKey, KeyMode, KeyRefusal, KeyState};
use crate::error::RepositoryError;
use crate::money::Usd;

/// One counter a generation with a key adds to: whose, for which period, up to how many
/// images and how many dollars (either or both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCounter {
    pub scope: QuotaScope,
    pub period: QuotaPeriod,
    pub limit: Option<QuotaLimit>,
    pub budget: Option<Usd>,
}

impl QuotaCounter {
    /// The first day of this counter's period holding `at` (its row).
    pub fn starts_on(&self, at: OffsetDateTime) -> Date {
        self.period.starts_on(at)
    }

    /// Where it stands with `used` images and `spent` dollars counted, read at `at`.
    pub fn standing(&self, used: u64, spent: Usd, at: OffsetDateTime) -> CounterStanding {
        CounterStanding {
            counter: *self,
            used,
            spent,
            resets_at: self.period.resets_at(at),
            checked_at: at,
        }
    }
}

/// Where one counter stands: its images and its dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterStanding {
    pub counter: QuotaCounter,
    pub used: u64,
    pub spent: Usd,
    pub resets_at: OffsetDateTime,
    pub checked_at: OffsetDateTime,
}

impl CounterStanding {
    /// Its image quota's standing, when it has one.
    pub fn quota(&self) -> Option<QuotaStanding> {
        self.counter.limit.map(|limit| QuotaStanding {
            scope: self.counter.scope,
            period: self.counter.period,
            limit: limit.get(),
            used: self.used,
            resets_at: self.resets_at,
            checked_at: self.checked_at,
        })
    }

    /// Its budget's standing, when it has one.
    pub fn budget(&self) -> Option<BudgetStanding> {
        self.counter.budget.map(|budget| BudgetStanding {
            scope: self.counter.scope,
            period: self.counter.period,
            budget,
            spent: self.spent,
            resets_at: self.resets_at,
            checked_at: self.checked_at,
        })
    }
}

/// The counters a generation with a key counts in: the key's own day and month quotas and
/// budgets, and its account's unless it is a test key (a test key's images never count
/// against its account's live quotas). The one place this is decided.
pub fn applicable_quotas(
    key: PeriodLimits,
    mode: KeyMode,
    account: PeriodLimits,
) -> Vec<QuotaCounter> {
    let account = match mode {
        KeyMode::Live => account,
        KeyMode::Test => PeriodLimits::default(),
    };
    [
        (QuotaScope::Key, QuotaPeriod::Day, key),
        (QuotaScope::Key, QuotaPeriod::Month, key),
        (QuotaScope::Account, QuotaPeriod::Day, account),
        (QuotaScope::Account, QuotaPeriod::Month, account),
    ]
    .into_iter()
    .map(|(scope, period, limits)| QuotaCounter {
        scope,
        period,
        limit: limits.get(period),
        budget: limits.budget(period),
    })
    .filter(|counter| counter.limit.is_some() || counter.budget.is_some())
    .collect()
}

/// Whether a generation with this key reserves at all (see [`applicable_quotas`]).
pub fn quota_applies(key: PeriodLimits, mode: KeyMode, account: PeriodLimits) -> bool {
    !applicable_quotas(key, mode, account).is_empty()
}

/// What a reservation is decided on: the key's and its account's state and limits as the
/// repository reads them in its transaction (not as a cache last saw them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationState {
    pub key: KeyState,
    pub mode: KeyMode,
    pub key_quotas: PeriodLimits,
    pub account_quotas: PeriodLimits,
}

impl ReservationState {
    /// The counters to read and add to at `at`, or why this key may not reserve: revoked
    /// (or gone), expired, its account disabled, in that order (as for authentication).
    pub fn counters(
        state: Option<&Self>,
        at: OffsetDateTime,
    ) -> Result<Vec<QuotaCounter>, ReserveError> {
        let state = state.ok_or(ReserveError::KeyRevoked)?;
        state.key.check(at).map_err(ReserveError::from)?;
        Ok(applicable_quotas(
            state.key_quotas,
            state.mode,
            state.account_quotas,
        ))
    }
}

impl From<KeyRefusal> for ReserveError {
    fn from(refusal: KeyRefusal) -> Self {
        match refusal {
            KeyRefusal::Revoked => Self::KeyRevoked,
            KeyRefusal::Expired => Self::KeyExpired,
            KeyRefusal::AccountDisabled => Self::AccountDisabled,
        }
    }
}

/// What a generation asks to reserve: its images, and what they are estimated to cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub images: u64,
    pub estimate: Usd,
}

/// Whether `ask` fits every counter, given where each stands now: refused with the quota
/// (else the budget) that resets last among those it would pass (so a client waiting for
/// that reset is not refused again by another), or granted with each standing as it will be
/// after. A budget refuses when the estimate would pass it, and when it is already spent
/// (so that what is not estimated cannot run on forever).
pub fn decide(
    standings: Vec<CounterStanding>,
    ask: Ask,
) -> Result<Vec<CounterStanding>, ReserveError> {
    let over_quota = standings
        .iter()
        .filter_map(CounterStanding::quota)
        .filter(|quota| quota.used.saturating_add(ask.images) > quota.limit);
    if let Some(refusal) = longest_refusal(over_quota) {
        return Err(ReserveError::Exceeded(refusal));
    }
    let over_budget = standings
        .iter()
        .filter_map(CounterStanding::budget)
        .filter(|budget| {
            budget.spent >= budget.budget
                || budget.spent.saturating_add(ask.estimate) > budget.budget
        })
        .max_by_key(|budget| budget.resets_at);
    if let Some(refusal) = over_budget {
        return Err(ReserveError::OverBudget(refusal));
    }
    Ok(standings
        .into_iter()
        .map(|standing| CounterStanding {
            used: standing.used + ask.images,
            spent: standing.spent.saturating_add(ask.estimate),
            ..standing
        })
        .collect())
}

/// Images and an estimate reserved for a request, to settle once it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub key_id: ApiKeyId,
    pub user_id: UserId,
    pub ask: Ask,
    /// When it was made: the periods it counts in.
    pub at: OffsetDateTime,
    /// The counters it added to.
    pub counted: Vec<(QuotaScope, QuotaPeriod)>,
}

/// What a reservation comes to: the images it did not make go back, and its estimate is
/// replaced by what the images made really cost. The default changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settlement {
    pub unmade_images: u64,
    /// Real cost minus the estimate: negative when it cost less (or made fewer images).
    pub cost_change_nanos: i64,
}

impl Reservation {
    pub fn settlement(&self, made: u64, cost: Usd) -> Settlement {
        Settlement {
            unmade_images: self.ask.images.saturating_sub(made),
            cost_change_nanos: cost.nanos().saturating_sub(self.ask.estimate.nanos()),
        }
    }
}

/// A granted reservation, with the tightest quota and budget after it (for the answer's
/// headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub reservation: Reservation,
    pub tightest: Option<QuotaStanding>,
    pub tightest_budget: Option<BudgetStanding>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Over a quota: nothing was reserved.
    #[error("over the {} {} quota", .0.scope.as_str(), .0.period.as_str())]
    Exceeded(QuotaStanding),
    /// Over a budget: nothing was reserved.
    #[error("over the {} {} budget", .0.scope.as_str(), .0.period.as_str())]
    OverBudget(BudgetStanding),
    /// The key was revoked meanwhile (the database is the truth; a cache may lag).
    #[error("the key is revoked")]
    KeyRevoked,
    #[error("the key has expired")]
    KeyExpired,
    #[error("the account is disabled")]
    AccountDisabled,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The budget with the fewest dollars left, then the soonest reset.
pub fn tightest_budget(
    standings: impl IntoIterator<Item = BudgetStanding>,
) -> Option<BudgetStanding> {
    standings
        .into_iter()
        .min_by_key(|standing| (standing.remaining(), standing.resets_at))
}

impl Reserved {
    /// The reservation of `ask` for `caller` at `at` in the counters of `after` (each as it
    /// stands once they are added), with the tightest quota and budget for the headers.
    pub fn new(
        caller: &AuthenticatedApiKey,
        ask: Ask,
        at: OffsetDateTime,
        after: Vec<CounterStanding>,
    ) -> Self {
        Self {
            reservation: Reservation {
                key_id: caller.key_id,
                user_id: caller.user_id,
                ask,
                at,
                counted: after
                    .iter()
                    .map(|standing| (standing.counter.scope, standing.counter.period))
                    .collect(),
            },
            tightest: tightest(after.iter().filter_map(CounterStanding::quota)),
            tightest_budget: tightest_budget(after.iter().filter_map(CounterStanding::budget)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;

    const AT: OffsetDateTime = datetime!(2026-11-30 12:00 UTC);

    fn limits(day: Option<u64>, month: Option<u64>) -> PeriodLimits {
        PeriodLimits {
            per_day: day.and_then(NonZeroU64::new),
            per_month: month.and_then(NonZeroU64::new),
            ..PeriodLimits::default()
        }
    }

    fn usable() -> KeyState {
        KeyState {
            revoked: false,
            expires_at: None,
            account_disabled: false,
        }
    }

    fn state(key: KeyState, mode: KeyMode) -> ReservationState {
        ReservationState {
            key,
            mode,
            key_quotas: limits(Some(10), None),
            account_quotas: limits(Some(100), Some(1000)),
        }
    }

    fn scopes(counters: &[QuotaCounter]) -> Vec<(QuotaScope, QuotaPeriod, u64)> {
        counters
            .iter()
            .map(|counter| {
                let limit = counter.limit.map_or(0, NonZeroU64::get);
                (counter.scope, counter.period, limit)
            })
            .collect()
    }

    #[test]
    fn a_live_key_counts_against_its_own_and_its_accounts_quotas() {
        let counters = applicable_quotas(
            limits(Some(10), None),
            KeyMode::Live,
            limits(Some(100), Some(1000)),
        );
        assert_eq!(
            scopes(&counters),
            [
                (QuotaScope::Key, QuotaPeriod::Day, 10),
                (QuotaScope::Account, QuotaPeriod::Day, 100),
                (QuotaScope::Account, QuotaPeriod::Month, 1000),
            ]
        );
        assert!(quota_applies(
            PeriodLimits::default(),
            KeyMode::Live,
            limits(None, Some(5))
        ));
    }

    #[test]
    fn a_test_keys_images_never_count_against_its_account() {
        let counters = applicable_quotas(
            limits(None, Some(20)),
            KeyMode::Test,
            limits(Some(100), Some(1000)),
        );
        assert_eq!(
            scopes(&counters),
            [(QuotaScope::Key, QuotaPeriod::Month, 20)]
        );
        assert!(!quota_applies(
            PeriodLimits::default(),
            KeyMode::Test,
            limits(Some(100), Some(1000))
        ));
        assert!(!quota_applies(
            PeriodLimits::default(),
            KeyMode::Live,
            PeriodLimits::default()
        ));
    }

    #[test]
    fn revoked_then_expired_then_disabled_is_the_order_of_refusals() {
        let expired = Some(AT);
        let everything_wrong = KeyState {
            revoked: true,
            expires_at: expired,
            account_disabled: true,
        };
        let refusal = |key: KeyState| {
            ReservationState::counters(Some(&state(key, KeyMode::Live)), AT).unwrap_err()
        };
        assert!(matches!(
            refusal(everything_wrong),
            ReserveError::KeyRevoked
        ));
        assert!(matches!(
            refusal(KeyState {
                revoked: false,
                ..everything_wrong
            }),
            ReserveError::KeyExpired
        ));
        assert!(matches!(
            refusal(KeyState {
                account_disabled: true,
                ..usable()
            }),
            ReserveError::AccountDisabled
        ));
        // A key that is not there at all is revoked (deleted with its account).
        assert!(matches!(
            ReservationState::counters(None, AT),
            Err(ReserveError::KeyRevoked)
        ));
        // Its expiry instant is already too late; a microsecond before, it is usable.
        let just_before = KeyState {
            expires_at: Some(AT + time::Duration::microseconds(1)),
            ..usable()
        };
        assert!(ReservationState::counters(Some(&state(just_before, KeyMode::Live)), AT).is_ok());
    }

    #[test]
    fn a_usable_key_gets_the_counters_of_its_mode() {
        let live = ReservationState::counters(Some(&state(usable(), KeyMode::Live)), AT).unwrap();
        assert_eq!(live.len(), 3);
        let test = ReservationState::counters(Some(&state(usable(), KeyMode::Test)), AT).unwrap();
        assert_eq!(scopes(&test), [(QuotaScope::Key, QuotaPeriod::Day, 10)]);
        assert_eq!(test[0].starts_on(AT), time::macros::date!(2026 - 11 - 30));
    }

    fn standing(period: QuotaPeriod, limit: u64, used: u64) -> CounterStanding {
        QuotaCounter {
            scope: QuotaScope::Account,
            period,
            limit: Some(NonZeroU64::new(limit).unwrap()),
            budget: None,
        }
        .standing(used, Usd::ZERO, AT)
    }

    fn images(images: u64) -> Ask {
        Ask {
            images,
            estimate: Usd::ZERO,
        }
    }

    fn usd(raw: &str) -> Usd {
        Usd::parse(raw).unwrap()
    }

    fn budget(
        scope: QuotaScope,
        period: QuotaPeriod,
        budget: &str,
        spent: &str,
    ) -> CounterStanding {
        QuotaCounter {
            scope,
            period,
            limit: None,
            budget: Some(usd(budget)),
        }
        .standing(0, usd(spent), AT)
    }

    #[test]
    fn a_reservation_that_fits_exactly_is_granted_and_counted() {
        let after = decide(
            vec![
                standing(QuotaPeriod::Day, 10, 7),
                standing(QuotaPeriod::Month, 100, 50),
            ],
            images(3),
        )
        .unwrap();
        assert_eq!(after.iter().map(|s| s.used).collect::<Vec<_>>(), [10, 53]);
        assert_eq!(after[0].quota().unwrap().remaining(), 0);
        assert_eq!(decide(Vec::new(), images(4)).unwrap(), Vec::new());
    }

    #[test]
    fn over_several_quotas_the_one_that_resets_last_is_reported() {
        let day = standing(QuotaPeriod::Day, 10, 9);
        let month = standing(QuotaPeriod::Month, 100, 99);
        match decide(vec![day, month], images(2)) {
            Err(ReserveError::Exceeded(refusal)) => {
                assert_eq!(refusal, month.quota().unwrap());
                assert_eq!(refusal.resets_at, datetime!(2026-12-01 00:00 UTC));
            }
            other => panic!("{other:?}"),
        }
        // Over the day only: the day is reported, with the standing as it was (nothing counted).
        match decide(vec![day, standing(QuotaPeriod::Month, 100, 0)], images(2)) {
            Err(ReserveError::Exceeded(refusal)) => assert_eq!(refusal, day.quota().unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_grant_remembers_its_counters_and_the_tightest_quota() {
        let caller = AuthenticatedApiKey::unlimited(
            ApiKeyId(Uuid::from_u128(1)),
            UserId(Uuid::from_u128(2)),
        );
        let after = decide(
            vec![
                standing(QuotaPeriod::Day, 10, 8),
                standing(QuotaPeriod::Month, 100, 8),
            ],
            images(1),
        )
        .unwrap();
        let reserved = Reserved::new(&caller, images(1), AT, after);
        assert_eq!(
            reserved.reservation.counted,
            [
                (QuotaScope::Account, QuotaPeriod::Day),
                (QuotaScope::Account, QuotaPeriod::Month)
            ]
        );
        assert_eq!(reserved.reservation.key_id, caller.key_id);
        let tightest = reserved.tightest.unwrap();
        assert_eq!(
            (tightest.period, tightest.remaining()),
            (QuotaPeriod::Day, 1)
        );
    }

    #[test]
    fn budgets_apply_like_quotas_and_test_keys_never_spend_their_accounts() {
        let key = PeriodLimits {
            budget_per_month: Some(usd("50")),
            ..PeriodLimits::default()
        };
        let account = PeriodLimits {
            per_day: NonZeroU64::new(10),
            budget_per_day: Some(usd("5")),
            ..PeriodLimits::default()
        };
        let counters = applicable_quotas(key, KeyMode::Live, account);
        assert_eq!(
            counters,
            [
                QuotaCounter {
                    scope: QuotaScope::Key,
                    period: QuotaPeriod::Month,
                    limit: None,
                    budget: Some(usd("50")),
                },
                QuotaCounter {
                    scope: QuotaScope::Account,
                    period: QuotaPeriod::Day,
                    limit: NonZeroU64::new(10),
                    budget: Some(usd("5")),
                },
            ]
        );
        assert!(quota_applies(key, KeyMode::Test, PeriodLimits::default()));
        assert_eq!(
            applicable_quotas(PeriodLimits::default(), KeyMode::Test, account),
            []
        );
    }

    #[test]
    fn a_budget_grants_up_to_exactly_its_amount() {
        let ask = Ask {
            images: 1,
            estimate: usd("0.0672"),
        };
        let day = budget(QuotaScope::Key, QuotaPeriod::Day, "0.672", "0.6048");
        let after = decide(vec![day], ask).unwrap();
        assert_eq!(after[0].spent, usd("0.672"));
        assert_eq!(after[0].budget().unwrap().remaining(), Usd::ZERO);
        assert!(matches!(
            decide(after, ask),
            Err(ReserveError::OverBudget(refusal)) if refusal.spent == usd("0.672")
        ));
        // Spent in full: refused even with nothing estimated (an unpriced model).
        let spent = budget(QuotaScope::Key, QuotaPeriod::Day, "1", "1");
        assert!(matches!(
            decide(vec![spent], images(1)),
            Err(ReserveError::OverBudget(_))
        ));
        // Over by what was not estimated (the real cost passed the estimate): still refused.
        let over = budget(QuotaScope::Key, QuotaPeriod::Day, "1", "1.2");
        assert!(matches!(
            decide(vec![over], images(1)),
            Err(ReserveError::OverBudget(refusal)) if refusal.remaining() == Usd::ZERO
        ));
    }

    #[test]
    fn over_a_quota_and_a_budget_the_quota_is_reported_and_budgets_by_their_reset() {
        let ask = Ask {
            images: 1,
            estimate: usd("1"),
        };
        let quota = standing(QuotaPeriod::Day, 1, 1);
        let day = budget(QuotaScope::Account, QuotaPeriod::Day, "1", "0.5");
        let month = budget(QuotaScope::Key, QuotaPeriod::Month, "10", "9.5");
        assert!(matches!(
            decide(vec![quota, day, month], ask),
            Err(ReserveError::Exceeded(_))
        ));
        match decide(vec![day, month], ask) {
            Err(ReserveError::OverBudget(refusal)) => {
                assert_eq!(refusal.period, QuotaPeriod::Month);
                assert_eq!(refusal.seconds_to_reset(), 12 * 60 * 60);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_settlement_gives_back_the_unmade_and_replaces_the_estimate() {
        let caller = AuthenticatedApiKey::unlimited(
            ApiKeyId(Uuid::from_u128(1)),
            UserId(Uuid::from_u128(2)),
        );
        let ask = Ask {
            images: 3,
            estimate: usd("0.2016"),
        };
        let after = decide(
            vec![budget(QuotaScope::Key, QuotaPeriod::Day, "1", "0")],
            ask,
        )
        .unwrap();
        let reserved = Reserved::new(&caller, ask, AT, after);
        assert_eq!(reserved.tightest_budget.unwrap().spent, usd("0.2016"));
        // Two made, costing more than estimated (thinking tokens).
        let settlement = reserved.reservation.settlement(2, usd("0.15"));
        assert_eq!(settlement.unmade_images, 1);
        assert_eq!(
            settlement.cost_change_nanos,
            usd("0.15").nanos() - usd("0.2016").nanos()
        );
    }
}
