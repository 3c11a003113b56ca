//! Where the operator's view of accounts, and its audit, are kept.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::model::{AccountChanges, AccountOverview, AccountSettings, AuditEntry};
use crate::accounts::model::{EmailAddress, UserId};
use crate::error::RepositoryError;
use crate::pagination::{Page, PageRequest};

/// Accounts as the operator manages them, and the audit of what operators do.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AdminRepository: Send + Sync + 'static {
    /// One page of accounts, oldest first (by `created_at`, then id), with their settings and
    /// what all their keys made on the UTC day and in the calendar month holding `at`.
    async fn list_accounts(
        &self,
        page: PageRequest,
        at: OffsetDateTime,
    ) -> Result<Page<AccountOverview>, RepositoryError>;

    /// One account with its settings and usage at `at`; `Ok(None)` when there is none.
    async fn find_account(
        &self,
        user_id: UserId,
        at: OffsetDateTime,
    ) -> Result<Option<AccountOverview>, RepositoryError>;

    /// Applies `changes` and writes `entry` (with the settings before and after filled in)
    /// to the audit, in one transaction; when the quotas change, the account's counters for
    /// the periods holding `entry.at` are set from its recorded usage. Returns the settings
    /// before and after, or `Ok(None)` (writing nothing) when no account has this id.
    async fn update_account(
        &self,
        user_id: UserId,
        changes: &AccountChanges,
        entry: &AuditEntry,
    ) -> Result<Option<(AccountSettings, AccountSettings)>, RepositoryError>;

    /// One page of the audit, newest first.
    async fn list_audit(&self, page: PageRequest) -> Result<Page<AuditEntry>, RepositoryError>;

    /// Binds the admin email `email` to the account `user_id` unless it is bound already,
    /// and MUST return the account it is bound to: the first that held it, one winner among
    /// concurrent callers on every instance. A binding outlives its account (an erased
    /// account keeps its email's admin rights away from whoever registers it next).
    async fn bind_admin_email(
        &self,
        email: &EmailAddress,
        user_id: UserId,
        at: OffsetDateTime,
    ) -> Result<UserId, RepositoryError>;

    /// Forgets the binding of `email`, so the next account that holds it is bound; whether
    /// there was one.
    async fn release_admin_email(&self, email: &EmailAddress) -> Result<bool, RepositoryError>;
}
