//! What the operator sees and changes of an account, and the audit of each change.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::model::{EmailAddress, User, UserId};
use crate::api_keys::model::KeyUsage;
use crate::money::Usd;
use crate::quota::model::{PeriodLimits, QuotaLimit};

/// The accounts that may use the admin routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminEmails(Vec<EmailAddress>);

impl AdminEmails {
    pub fn new(emails: Vec<EmailAddress>) -> Self {
        Self(emails)
    }

    pub fn includes(&self, email: &EmailAddress) -> bool {
        self.0.contains(email)
    }

    pub fn iter(&self) -> impl Iterator<Item = &EmailAddress> {
        self.0.iter()
    }
}

/// What an operator sets on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountSettings {
    /// Day and month quotas over all the account's keys.
    pub limits: PeriodLimits,
    /// A disabled account's tokens and keys are refused (403 `account_disabled`).
    pub disabled: bool,
}

/// Changes to an account: `None` leaves a setting as it is; `Some(None)` removes a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountChanges {
    pub per_day: Option<Option<QuotaLimit>>,
    pub per_month: Option<Option<QuotaLimit>>,
    pub budget_per_day: Option<Option<Usd>>,
    pub budget_per_month: Option<Option<Usd>>,
    pub disabled: Option<bool>,
}

impl AccountChanges {
    /// Whether a quota or a budget changes (the account's counters must then be re-read).
    pub fn touches_quotas(&self) -> bool {
        self.per_day.is_some()
            || self.per_month.is_some()
            || self.budget_per_day.is_some()
            || self.budget_per_month.is_some()
    }

    pub fn apply(&self, before: AccountSettings) -> AccountSettings {
        AccountSettings {
            limits: PeriodLimits {
                per_day: self.per_day.unwrap_or(before.limits.per_day),
                per_month: self.per_month.unwrap_or(before.limits.per_month),
                budget_per_day: self.budget_per_day.unwrap_or(before.limits.budget_per_day),
                budget_per_month: self
                    .budget_per_month
                    .unwrap_or(before.limits.budget_per_month),
            },
            disabled: self.disabled.unwrap_or(before.disabled),
        }
    }
}

/// An account as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountOverview {
    pub user: User,
    pub settings: AccountSettings,
    /// Images made by all its keys today and this month (UTC).
    pub usage: KeyUsage,
}

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor: UserId,
    /// What was done: `account.update`.
    pub action: String,
    pub target: UserId,
    pub before: AccountSettings,
    pub after: AccountSettings,
    pub at: OffsetDateTime,
}

pub const ACCOUNT_UPDATE: &str = "account.update";
