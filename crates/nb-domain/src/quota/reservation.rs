//! Reserving quota for a generation: which quotas count a key's images, and whether a
//! reservation fits. Pure rules; the repository reads the state in its transaction, asks
//! [`ReservationState::counters`] and [`decide`], and writes what they decided.
//!
//! A generation reserves its images before the provider is called, with conditional updates
//! of the counters in one transaction (the repository's job), and gives back what it did not
//! make: failures never spend quota, and concurrent requests can never pass a limit.

use time::{Date, OffsetDateTime};

use super::model::{
    PeriodLimits, QuotaLimit, QuotaPeriod, QuotaScope, QuotaStanding, longest_refusal, tightest,
};
use crate::accounts::model::UserId;
use crate::api_keys::model::{ApiKeyId, AuthenticatedApiKey, KeyMode, KeyRefusal, KeyState};
use crate::error::RepositoryError;

/// One counter a generation with a key adds to: whose, for which period, up to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCounter {
    pub scope: QuotaScope,
    pub period: QuotaPeriod,
    pub limit: QuotaLimit,
}

impl QuotaCounter {
    /// The first day of this counter's period holding `at` (its row).
    pub fn starts_on(&self, at: OffsetDateTime) -> Date {
        self.period.starts_on(at)
    }

    /// Where it stands with `used` images counted, read at `at`.
    pub fn standing(&self, used: u64, at: OffsetDateTime) -> QuotaStanding {
        QuotaStanding {
            scope: self.scope,
            period: self.period,
            limit: self.limit.get(),
            used,
            resets_at: self.period.resets_at(at),
            checked_at: at,
        }
    }
}

/// The quotas a generation with a key counts against: the key's own day and month quotas,
/// and its account's unless it is a test key (a test key's images never count against its
/// account's live quotas). The one place this is decided.
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
        (QuotaScope::Key, QuotaPeriod::Day, key.per_day),
        (QuotaScope::Key, QuotaPeriod::Month, key.per_month),
        (QuotaScope::Account, QuotaPeriod::Day, account.per_day),
        (QuotaScope::Account, QuotaPeriod::Month, account.per_month),
    ]
    .into_iter()
    .filter_map(|(scope, period, limit)| {
        limit.map(|limit| QuotaCounter {
            scope,
            period,
            limit,
        })
    })
    .collect()
}

/// Whether a generation with this key reserves quota at all (see [`applicable_quotas`]).
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

/// Whether `images` more fit every quota, given where each stands now: refused with the
/// quota that resets last among those it would pass (so a client waiting for that reset is
/// not refused again by another), or granted with each standing as it will be after.
pub fn decide(
    standings: Vec<QuotaStanding>,
    images: u64,
) -> Result<Vec<QuotaStanding>, ReserveError> {
    let refusals = standings
        .iter()
        .filter(|standing| standing.used.saturating_add(images) > standing.limit)
        .copied();
    if let Some(refusal) = longest_refusal(refusals) {
        return Err(ReserveError::Exceeded(refusal));
    }
    Ok(standings
        .into_iter()
        .map(|standing| QuotaStanding {
            used: standing.used + images,
            ..standing
        })
        .collect())
}

/// Images reserved for a request, to give back what was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub key_id: ApiKeyId,
    pub user_id: UserId,
    pub images: u64,
    /// When it was made: the periods it counts in.
    pub at: OffsetDateTime,
    /// The counters it added to.
    pub counted: Vec<(QuotaScope, QuotaPeriod)>,
}

/// A granted reservation and the tightest quota after it (for the answer's headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub reservation: Reservation,
    pub tightest: Option<QuotaStanding>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Over a quota: nothing was reserved.
    #[error("over the {} {} quota", .0.scope.as_str(), .0.period.as_str())]
    Exceeded(QuotaStanding),
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

impl Reserved {
    /// The reservation of `images` for `caller` at `at` in the counters of `after` (each as
    /// it stands once they are added), with the tightest of them for the answer's headers.
    pub fn new(
        caller: &AuthenticatedApiKey,
        images: u64,
        at: OffsetDateTime,
        after: Vec<QuotaStanding>,
    ) -> Self {
        Self {
            reservation: Reservation {
                key_id: caller.key_id,
                user_id: caller.user_id,
                images,
                at,
                counted: after
                    .iter()
                    .map(|standing| (standing.scope, standing.period))
                    .collect(),
            },
            tightest: tightest(after),
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
            .map(|counter| (counter.scope, counter.period, counter.limit.get()))
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

    fn standing(period: QuotaPeriod, limit: u64, used: u64) -> QuotaStanding {
        QuotaCounter {
            scope: QuotaScope::Account,
            period,
            limit: NonZeroU64::new(limit).unwrap(),
        }
        .standing(used, AT)
    }

    #[test]
    fn a_reservation_that_fits_exactly_is_granted_and_counted() {
        let after = decide(
            vec![
                standing(QuotaPeriod::Day, 10, 7),
                standing(QuotaPeriod::Month, 100, 50),
            ],
            3,
        )
        .unwrap();
        assert_eq!(after.iter().map(|s| s.used).collect::<Vec<_>>(), [10, 53]);
        assert_eq!(after[0].remaining(), 0);
        assert_eq!(decide(Vec::new(), 4).unwrap(), Vec::new());
    }

    #[test]
    fn over_several_quotas_the_one_that_resets_last_is_reported() {
        let day = standing(QuotaPeriod::Day, 10, 9);
        let month = standing(QuotaPeriod::Month, 100, 99);
        match decide(vec![day, month], 2) {
            Err(ReserveError::Exceeded(refusal)) => {
                assert_eq!(refusal, month);
                assert_eq!(refusal.resets_at, datetime!(2026-12-01 00:00 UTC));
            }
            other => panic!("{other:?}"),
        }
        // Over the day only: the day is reported, with the standing as it was (nothing counted).
        match decide(vec![day, standing(QuotaPeriod::Month, 100, 0)], 2) {
            Err(ReserveError::Exceeded(refusal)) => assert_eq!(refusal, day),
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
            1,
        )
        .unwrap();
        let reserved = Reserved::new(&caller, 1, AT, after);
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
}
