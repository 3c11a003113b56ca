//! What an API key is: how it looks, what is stored of it, and who it says is calling.
//!
//! A key is `nb_live_` (or `nb_test_` for a test-mode key) followed by 32 lowercase hex
//! characters (128 bits from the OS CSPRNG). Only its SHA-256 is stored, with a short display
//! prefix; the full key exists in memory once, when it is created, and is handed to the
//! caller that single time.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::model::UserId;
use crate::money::Usd;
use crate::quota::model::PeriodLimits;
use crate::text::has_hidden_characters;

pub const API_KEY_PREFIX: &str = "nb_live_";
pub const TEST_API_KEY_PREFIX: &str = "nb_test_";
pub(crate) const API_KEY_RANDOM_BYTES: usize = 16;
/// `nb_live_` (or `nb_test_`) + 32 hex characters.
pub const API_KEY_LENGTH: usize = API_KEY_PREFIX.len() + 2 * API_KEY_RANDOM_BYTES;

/// What a key's generations do: `Live` ones call the image model (and cost money); `Test`
/// ones make a deterministic image locally, never count against live quotas, and let client
/// developers exercise every answer for free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyMode {
    #[default]
    Live,
    Test,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mode must be \"live\" or \"test\"")]
pub struct InvalidKeyMode;

impl KeyMode {
    pub fn parse(raw: &str) -> Result<Self, InvalidKeyMode> {
        match raw {
            "live" => Ok(Self::Live),
            "test" => Ok(Self::Test),
            _ => Err(InvalidKeyMode),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    /// How its keys begin.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Live => API_KEY_PREFIX,
            Self::Test => TEST_API_KEY_PREFIX,
        }
    }

    /// The mode of a presented credential, by its prefix (`None`: not an API key).
    pub fn of_credential(raw: &str) -> Option<Self> {
        [Self::Live, Self::Test]
            .into_iter()
            .find(|mode| raw.starts_with(mode.prefix()))
    }
}
/// How much of a key is kept for display: `nb_live_` and 4 hex characters.
pub const DISPLAY_PREFIX_LENGTH: usize = 12;
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// An API key's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyId(pub Uuid);

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A full API key. `Debug` and `Display` show only its display prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a NanoBanana API key")]
pub struct MalformedApiKey;

impl ApiKeySecret {
    pub(crate) fn from_random_bytes(mode: KeyMode, bytes: &[u8; API_KEY_RANDOM_BYTES]) -> Self {
        Self(format!("{}{}", mode.prefix(), hex::encode(bytes)))
    }

    /// Accepts exactly `nb_live_` or `nb_test_` followed by 32 lowercase hex characters.
    pub fn parse(raw: &str) -> Result<Self, MalformedApiKey> {
        let mode = KeyMode::of_credential(raw).ok_or(MalformedApiKey)?;
        let random_part = &raw[mode.prefix().len()..];
        let well_formed = random_part.len() == 2 * API_KEY_RANDOM_BYTES
            && random_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(MalformedApiKey)
        }
    }

    pub fn mode(&self) -> KeyMode {
        KeyMode::of_credential(&self.0).unwrap_or_default()
    }

    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LENGTH]
    }

    /// The whole key. Call only to hand it to its owner, once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

/// The lowercase hex SHA-256 of a full key: what is stored and looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key's optional label: trimmed, at most 100 characters, no control or invisible
/// formatting characters (zero-width, bidirectional overrides); blank means none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiKeyName(Option<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "name must be at most {MAX_KEY_NAME_CHARS} characters, with no control or invisible characters"
)]
pub struct InvalidApiKeyName;

impl ApiKeyName {
    pub fn parse(raw: Option<&str>) -> Result<Self, InvalidApiKeyName> {
        let Some(trimmed) = raw.map(str::trim).filter(|name| !name.is_empty()) else {
            return Ok(Self(None));
        };
        if trimmed.chars().count() > MAX_KEY_NAME_CHARS || has_hidden_characters(trimmed) {
            return Err(InvalidApiKeyName);
        }
        Ok(Self(Some(trimmed.to_owned())))
    }

    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn into_inner(self) -> Option<String> {
        self.0
    }

    /// A name read back from storage, where it was stored already checked.
    pub fn from_stored(name: Option<String>) -> Self {
        Self(name)
    }
}

/// A key's own limits: a per-minute allowance (on top of the server's) and quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyLimits {
    pub per_minute: Option<NonZeroU32>,
    pub quotas: PeriodLimits,
}

/// A stored key as its owner sees it: never the key itself, never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: Option<String>,
    pub prefix: String,
    pub mode: KeyMode,
    /// False once revoked.
    pub is_active: bool,
    /// After this instant the key is refused (`key_expired`).
    pub expires_at: Option<OffsetDateTime>,
    pub limits: KeyLimits,
    /// The key this one replaced, when it was made by rolling another.
    pub rolled_from: Option<ApiKeyId>,
    pub last_used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl ApiKeyRecord {
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKeyLimits {
    #[error("limits.{0} must be a positive whole number")]
    NotPositive(&'static str),
    #[error("limits.per_minute must be at most {}", u32::MAX)]
    PerMinuteTooLarge,
}

impl InvalidKeyLimits {
    /// The request field at fault (`limits.per_day`, …).
    pub fn field(&self) -> String {
        match self {
            Self::NotPositive(name) => format!("limits.{name}"),
            Self::PerMinuteTooLarge => "limits.per_minute".to_owned(),
        }
    }
}

impl KeyLimits {
    /// Limits as a client sent them: each absent, or a positive number.
    pub fn parse(
        per_minute: Option<i64>,
        per_day: Option<i64>,
        per_month: Option<i64>,
    ) -> Result<Self, InvalidKeyLimits> {
        let positive = |name: &'static str, value: Option<i64>| {
            value
                .map(|n| {
                    u64::try_from(n)
                        .ok()
                        .and_then(NonZeroU64::new)
                        .ok_or(InvalidKeyLimits::NotPositive(name))
                })
                .transpose()
        };
        let per_minute = positive("per_minute", per_minute)?
            .map(|n| {
                u32::try_from(n.get())
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or(InvalidKeyLimits::PerMinuteTooLarge)
            })
            .transpose()?;
        Ok(Self {
            per_minute,
            quotas: PeriodLimits {
                per_day: positive("per_day", per_day)?,
                per_month: positive("per_month", per_month)?,
                ..PeriodLimits::default()
            },
        })
    }
}

/// A new key's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySettings {
    pub name: ApiKeyName,
    pub mode: KeyMode,
    pub expires_at: Option<OffsetDateTime>,
    pub limits: KeyLimits,
}

/// Changes to a key: each `None` leaves its setting as it is (`expires_at: Some(None)`
/// removes the expiry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    pub name: Option<ApiKeyName>,
    pub expires_at: Option<Option<OffsetDateTime>>,
    pub limits: LimitChanges,
}

/// Changes to a key's limits: `None` keeps a limit, `Some(None)` removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitChanges {
    pub per_minute: Option<Option<NonZeroU32>>,
    pub per_day: Option<Option<NonZeroU64>>,
    pub per_month: Option<Option<NonZeroU64>>,
    pub budget_per_day: Option<Option<Usd>>,
    pub budget_per_month: Option<Option<Usd>>,
}

impl LimitChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether a day or month quota or budget changes (its counters must then be re-read).
    pub fn touches_quotas(&self) -> bool {
        self.per_day.is_some()
            || self.per_month.is_some()
            || self.budget_per_day.is_some()
            || self.budget_per_month.is_some()
    }

    pub fn apply(&self, limits: KeyLimits) -> KeyLimits {
        KeyLimits {
            per_minute: self.per_minute.unwrap_or(limits.per_minute),
            quotas: PeriodLimits {
                per_day: self.per_day.unwrap_or(limits.quotas.per_day),
                per_month: self.per_month.unwrap_or(limits.quotas.per_month),
                budget_per_day: self.budget_per_day.unwrap_or(limits.quotas.budget_per_day),
                budget_per_month: self
                    .budget_per_month
                    .unwrap_or(limits.quotas.budget_per_month),
            },
        }
    }

    /// Changes as a client sent them: a value sets, `null` removes, absent keeps.
    pub fn parse(
        per_minute: Option<Option<i64>>,
        per_day: Option<Option<i64>>,
        per_month: Option<Option<i64>>,
    ) -> Result<Self, InvalidKeyLimits> {
        // Each present value is checked as a limit would be.
        let one = |value: Option<Option<i64>>, at: usize| -> Result<_, InvalidKeyLimits> {
            match value {
                None => Ok(None),
                Some(None) => Ok(Some(None)),
                Some(Some(n)) => {
                    let mut raw = [None, None, None];
                    raw[at] = Some(n);
                    Ok(Some(Some(KeyLimits::parse(raw[0], raw[1], raw[2])?)))
                }
            }
        };
        Ok(Self {
            per_minute: one(per_minute, 0)?.map(|set| set.and_then(|l| l.per_minute)),
            per_day: one(per_day, 1)?.map(|set| set.and_then(|l| l.quotas.per_day)),
            per_month: one(per_month, 2)?.map(|set| set.and_then(|l| l.quotas.per_month)),
            budget_per_day: None,
            budget_per_month: None,
        })
    }
}

/// A key as its owner sees it: the record and what it has made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyView {
    pub record: ApiKeyRecord,
    pub usage: KeyUsage,
}

/// Images a key (or an account) has made (successes) today and this month, UTC, and what
/// they cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyUsage {
    pub today: u64,
    pub this_month: u64,
    pub spend_today: Usd,
    pub spend_this_month: Usd,
}

impl KeyUsage {
    /// Adds a day of this month's usage (`today` when it is today's).
    pub fn add(&mut self, images: u64, cost: Usd, today: bool) {
        self.this_month += images;
        self.spend_this_month = self.spend_this_month.saturating_add(cost);
        if today {
            self.today += images;
            self.spend_today = self.spend_today.saturating_add(cost);
        }
    }
}

/// What creating a key asks a repository to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub key_hash: ApiKeyHash,
}

/// A key just created: the only value that ever holds the full key after creation.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    pub record: ApiKeyRecord,
    pub secret: ApiKeySecret,
}

/// Who is calling, once a presented key has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedApiKey {
    pub key_id: ApiKeyId,
    pub user_id: UserId,
    /// The key's own per-minute allowance, when it has one.
    pub per_minute: Option<NonZeroU32>,
    /// Whether a day or month quota applies (the key's or its account's): then each
    /// generation reserves its images first. Never for a test key.
    pub quota_applies: bool,
    pub mode: KeyMode,
}

impl AuthenticatedApiKey {
    /// A caller with no limits of its own.
    pub const fn unlimited(key_id: ApiKeyId, user_id: UserId) -> Self {
        Self {
            key_id,
            user_id,
            per_minute: None,
            quota_applies: false,
            mode: KeyMode::Live,
        }
    }
}

/// What a lookup by hash finds of an unrevoked key: the caller it would be, and what decides
/// whether it may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAccess {
    pub key: AuthenticatedApiKey,
    pub expires_at: Option<OffsetDateTime>,
    pub account_disabled: bool,
}

impl KeyAccess {
    /// The caller, when the key may be used at `now` (see [`KeyState::check`]).
    pub fn check(&self, now: OffsetDateTime) -> Result<AuthenticatedApiKey, KeyRefusal> {
        KeyState {
            revoked: false,
            expires_at: self.expires_at,
            account_disabled: self.account_disabled,
        }
        .check(now)?;
        Ok(self.key)
    }
}

/// Why a key that was issued may not be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Revoked,
    Expired,
    AccountDisabled,
}

/// What decides whether a key may be used: read from the database (a reservation) or from
/// a lookup by hash (authentication), and judged by the one rule in [`KeyState::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState {
    pub revoked: bool,
    pub expires_at: Option<OffsetDateTime>,
    pub account_disabled: bool,
}

impl KeyState {
    /// `Ok` when the key may be used at `now`. Otherwise the first that holds of: revoked,
    /// expired (at or after `expires_at`), its account disabled — so a client is told the
    /// most specific thing it can act on about its key before anything about its account.
    pub fn check(&self, now: OffsetDateTime) -> Result<(), KeyRefusal> {
        if self.revoked {
            return Err(KeyRefusal::Revoked);
        }
        if self.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return Err(KeyRefusal::Expired);
        }
        if self.account_disabled {
            return Err(KeyRefusal::AccountDisabled);
        }
        Ok(())
    }
}

/// Why a key cannot be rolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RollRefusal {
    /// No unrevoked key of the user has this id.
    #[error("no such API key")]
    NotFound,
    /// It was rolled before: its successor is the key to roll.
    #[error("the key was already rolled")]
    AlreadyRolled,
    /// It has expired (its grace, if it had one, is over).
    #[error("the key has expired")]
    Expired,
    /// The successor would be one active key too many (a key in its grace is active).
    #[error("the account already has {max_active} active keys")]
    TooManyActiveKeys { max_active: u32 },
}

/// What a roll is decided on, as the repository reads it in its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollState {
    /// The key to roll: revoked or not, and when it expires.
    pub key: KeyState,
    /// Whether a key already names it in `rolled_from`.
    pub already_rolled: bool,
    /// The account's usable keys (unrevoked, unexpired) at the moment of the roll, the key
    /// itself included.
    pub usable_keys: u32,
}

impl RollState {
    /// Whether the key may be rolled at `at`, the old key then ending at `old_ends_at`, under
    /// a cap of `max_active` usable keys: not when it is gone or revoked, already rolled,
    /// expired (in that order), or when its successor would pass the cap — the old key stays
    /// active through its grace, so rolling with a grace adds a key like creating one does
    /// (without one, the successor takes the old key's place).
    pub fn check(
        state: Option<&Self>,
        at: OffsetDateTime,
        old_ends_at: OffsetDateTime,
        max_active: u32,
    ) -> Result<(), RollRefusal> {
        let state = state.ok_or(RollRefusal::NotFound)?;
        if state.key.revoked {
            return Err(RollRefusal::NotFound);
        }
        if state.already_rolled {
            return Err(RollRefusal::AlreadyRolled);
        }
        if state
            .key
            .expires_at
            .is_some_and(|expires_at| expires_at <= at)
        {
            return Err(RollRefusal::Expired);
        }
        let usable_after_the_old_one_ends = state
            .usable_keys
            .saturating_sub(u32::from(old_ends_at <= at));
        if usable_after_the_old_one_ends >= max_active {
            return Err(RollRefusal::TooManyActiveKeys { max_active });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format_is_prefix_and_32_lowercase_hex() {
        let secret = ApiKeySecret::from_random_bytes(KeyMode::Live, &[0xab; 16]);
        assert_eq!(
            secret.expose_secret(),
            format!("nb_live_{}", "ab".repeat(16))
        );
        assert_eq!(secret.expose_secret().len(), API_KEY_LENGTH);
        assert_eq!(secret.display_prefix(), "nb_live_abab");
    }

    #[test]
    fn parse_accepts_only_well_formed_keys() {
        let good = format!("nb_live_{}", "0123456789abcdef".repeat(2));
        assert_eq!(ApiKeySecret::parse(&good).unwrap().mode(), KeyMode::Live);
        let test = format!("nb_test_{}", "0123456789abcdef".repeat(2));
        assert_eq!(ApiKeySecret::parse(&test).unwrap().mode(), KeyMode::Test);
        for bad in [
            String::new(),
            "nb_live_".into(),
            format!("nb_prod_{}", "a".repeat(32)),
            format!("nb_test_{}", "a".repeat(31)),
            format!("nb_live_{}", "A".repeat(32)),
            format!("nb_live_{}", "g".repeat(32)),
            format!("nb_live_{}", "a".repeat(31)),
            format!("nb_live_{}", "a".repeat(33)),
        ] {
            assert_eq!(ApiKeySecret::parse(&bad), Err(MalformedApiKey), "{bad:?}");
        }
    }

    #[test]
    fn hash_is_the_sha256_hex_of_the_whole_key() {
        let secret = ApiKeySecret::parse(&format!("nb_live_{}", "0".repeat(32))).unwrap();
        // sha256("nb_live_00000000000000000000000000000000"), computed with coreutils.
        assert_eq!(
            secret.hash().as_str(),
            "473131699e2e8655ae2db62511a61035a6fbaeedef5154b64906146ad9098118"
        );
    }

    #[test]
    fn debug_shows_only_the_display_prefix() {
        let secret = ApiKeySecret::from_random_bytes(KeyMode::Test, &[0xcd; 16]);
        let shown = format!("{secret:?}");
        assert!(shown.contains("nb_test_cdcd"));
        assert!(!shown.contains(secret.expose_secret()));
    }

    #[test]
    fn names_are_trimmed_and_blank_means_none() {
        assert_eq!(ApiKeyName::parse(None).unwrap().as_deref(), None);
        assert_eq!(ApiKeyName::parse(Some("   ")).unwrap().as_deref(), None);
        assert_eq!(
            ApiKeyName::parse(Some(" ci ")).unwrap().as_deref(),
            Some("ci")
        );
        assert!(ApiKeyName::parse(Some(&"x".repeat(101))).is_err());
        assert!(ApiKeyName::parse(Some("bad\nname")).is_err());
        assert!(ApiKeyName::parse(Some("\u{202e}gpj.exe")).is_err());
        assert!(ApiKeyName::parse(Some("zero\u{200b}width")).is_err());
    }

    #[test]
    fn limits_are_positive_and_name_the_field_at_fault() {
        let limits = KeyLimits::parse(Some(5), None, Some(1_000)).unwrap();
        assert_eq!(limits.per_minute.map(NonZeroU32::get), Some(5));
        assert_eq!(limits.quotas.per_day, None);
        assert_eq!(limits.quotas.per_month.map(NonZeroU64::get), Some(1_000));
        for (raw, field) in [
            ((Some(0), None, None), "limits.per_minute"),
            ((None, Some(-1), None), "limits.per_day"),
            ((None, None, Some(0)), "limits.per_month"),
            ((Some(i64::MAX), None, None), "limits.per_minute"),
        ] {
            assert_eq!(
                KeyLimits::parse(raw.0, raw.1, raw.2).unwrap_err().field(),
                field
            );
        }
    }

    #[test]
    fn a_key_is_refused_as_revoked_then_expired_then_disabled() {
        let now = time::macros::datetime!(2026-11-30 12:00 UTC);
        let worst = KeyState {
            revoked: true,
            expires_at: Some(now - time::Duration::days(1)),
            account_disabled: true,
        };
        assert_eq!(worst.check(now), Err(KeyRefusal::Revoked));
        let unrevoked = KeyState {
            revoked: false,
            ..worst
        };
        assert_eq!(unrevoked.check(now), Err(KeyRefusal::Expired));
        // Expired at exactly `now`.
        let at_expiry = KeyState {
            expires_at: Some(now),
            ..unrevoked
        };
        assert_eq!(at_expiry.check(now), Err(KeyRefusal::Expired));
        let disabled = KeyState {
            expires_at: None,
            ..unrevoked
        };
        assert_eq!(disabled.check(now), Err(KeyRefusal::AccountDisabled));
        let usable = KeyState {
            account_disabled: false,
            ..disabled
        };
        assert_eq!(usable.check(now), Ok(()));
    }

    #[test]
    fn a_found_key_is_its_caller_when_usable() {
        let now = time::macros::datetime!(2026-11-30 12:00 UTC);
        let key = AuthenticatedApiKey::unlimited(
            ApiKeyId(Uuid::from_u128(1)),
            UserId(Uuid::from_u128(2)),
        );
        let access = KeyAccess {
            key,
            expires_at: Some(now + time::Duration::seconds(1)),
            account_disabled: false,
        };
        assert_eq!(access.check(now), Ok(key));
        let expired_and_disabled = KeyAccess {
            expires_at: Some(now),
            account_disabled: true,
            ..access
        };
        assert_eq!(expired_and_disabled.check(now), Err(KeyRefusal::Expired));
    }

    #[test]
    fn a_key_is_rolled_once_while_it_works_and_the_cap_counts_its_successor() {
        let now = time::macros::datetime!(2026-11-30 12:00 UTC);
        let fine = RollState {
            key: KeyState {
                revoked: false,
                expires_at: Some(now + time::Duration::hours(1)),
                account_disabled: false,
            },
            already_rolled: false,
            usable_keys: 19,
        };
        let grace = now + time::Duration::hours(1);
        assert_eq!(RollState::check(Some(&fine), now, grace, 20), Ok(()));
        assert_eq!(
            RollState::check(None, now, grace, 20),
            Err(RollRefusal::NotFound)
        );
        let revoked = RollState {
            key: KeyState {
                revoked: true,
                ..fine.key
            },
            already_rolled: true,
            ..fine
        };
        assert_eq!(
            RollState::check(Some(&revoked), now, grace, 20),
            Err(RollRefusal::NotFound)
        );
        // Rolled with no grace: expired and rolled; "already rolled" says what to do.
        let rolled = RollState {
            key: KeyState {
                expires_at: Some(now),
                ..fine.key
            },
            already_rolled: true,
            ..fine
        };
        assert_eq!(
            RollState::check(Some(&rolled), now, grace, 20),
            Err(RollRefusal::AlreadyRolled)
        );
        let expired = RollState {
            already_rolled: false,
            ..rolled
        };
        assert_eq!(
            RollState::check(Some(&expired), now, grace, 20),
            Err(RollRefusal::Expired)
        );
        let full = RollState {
            usable_keys: 20,
            ..fine
        };
        assert_eq!(
            RollState::check(Some(&full), now, grace, 20),
            Err(RollRefusal::TooManyActiveKeys { max_active: 20 })
        );
        // Without a grace the successor takes the old key's place: allowed at the cap.
        assert_eq!(RollState::check(Some(&full), now, now, 20), Ok(()));
    }
}
