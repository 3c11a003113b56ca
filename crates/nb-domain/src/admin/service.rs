//! The operator's view: admin accounts (named by `NB_ADMIN_EMAILS`) list accounts with their
//! usage, set an account's quotas, disable it, and read the audit of every such change.

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

use super::model::{
    ACCOUNT_UPDATE, AccountChanges, AccountOverview, AccountSettings, AdminEmails, AuditEntry,
};
use super::ports::AdminRepository;
use crate::accounts::model::{User, UserId};
use crate::accounts::ports::UserRepository;
use crate::api_keys::model::ApiKeyRecord;
use crate::api_keys::ports::{ApiKeyRepository, KeyInvalidation};
use crate::error::RepositoryError;
use crate::pagination::{Page, PageRequest};
use crate::system::{Clock, IdGenerator};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The caller is not an admin.
    #[error("only admins may do this")]
    NotAdmin,
    #[error("no such account")]
    NotFound,
    /// An admin may not disable their own account (nobody could enable it again).
    #[error("admins cannot disable their own account")]
    DisablingSelf,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The ports an [`AdminService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct AdminPorts {
    pub accounts: Arc<dyn AdminRepository>,
    pub users: Arc<dyn UserRepository>,
    pub keys: Arc<dyn ApiKeyRepository>,
    pub invalidation: Arc<dyn KeyInvalidation>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

#[derive(Clone)]
pub struct AdminService {
    ports: AdminPorts,
    admins: AdminEmails,
}

impl fmt::Debug for AdminService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminService")
            .field("admins", &self.admins)
            .finish_non_exhaustive()
    }
}

/// The operator's view, as the admin routes use it. Every call but `require_admin` checks the actor itself.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Administration: Send + Sync + 'static {
    /// Refuses anyone who is not an admin: an account whose email `NB_ADMIN_EMAILS` names, and
    /// the first account that held that email (the email is bound to it at its first admin
    /// call, and stays bound when it is erased: a later registration of the same email is not
    /// an admin until the operator releases it).
    async fn require_admin(&self, actor: &User) -> Result<(), AdminError>;

    /// Accounts, oldest first, with their settings and usage.
    async fn accounts(
        &self,
        actor: &User,
        page: PageRequest,
    ) -> Result<Page<AccountOverview>, AdminError>;

    /// Sets an account's quotas or disables it; recorded in the audit with the settings
    /// before and after. The account's keys are forgotten by caches at once (on this
    /// instance; elsewhere within the cache's lifetime).
    async fn update_account(
        &self,
        actor: &User,
        user_id: UserId,
        changes: AccountChanges,
    ) -> Result<AccountSettings, AdminError>;

    /// An account's keys (prefixes, never hashes), newest first.
    async fn account_keys(
        &self,
        actor: &User,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyRecord>, AdminError>;

    /// The audit, newest first.
    async fn audit(&self, actor: &User, page: PageRequest) -> Result<Page<AuditEntry>, AdminError>;

    /// The actor's own account as the operator sees it (its quotas, budgets and usage): open
    /// to every signed-in user, for their own account only.
    async fn own_account(&self, actor: &User) -> Result<AccountOverview, AdminError>;
}

impl AdminService {
    pub fn new(ports: AdminPorts, admins: AdminEmails) -> Self {
        Self { ports, admins }
    }

    /// Whether `user`'s email is one of `NB_ADMIN_EMAILS` (whether it is also the account
    /// bound to it is [`Administration::require_admin`]'s question).
    pub fn is_listed(&self, user: &User) -> bool {
        self.admins.includes(&user.email)
    }
}

#[async_trait]
impl Administration for AdminService {
    async fn require_admin(&self, actor: &User) -> Result<(), AdminError> {
        if !self.is_listed(actor) {
            return Err(AdminError::NotAdmin);
        }
        let bound = self
            .ports
            .accounts
            .bind_admin_email(&actor.email, actor.id, self.ports.clock.now())
            .await?;
        if bound == actor.id {
            return Ok(());
        }
        tracing::warn!(
            email = %actor.email,
            bound_to = %bound,
            user_id = %actor.id,
            "an account holds an admin email that is bound to an earlier account (erased?): it \
             is not an admin until the operator runs `nanobanana admin release <email>`"
        );
        Err(AdminError::NotAdmin)
    }

    async fn accounts(
        &self,
        actor: &User,
        page: PageRequest,
    ) -> Result<Page<AccountOverview>, AdminError> {
        self.require_admin(actor).await?;
        Ok(self
            .ports
            .accounts
            .list_accounts(page, self.ports.clock.now())
            .await?)
    }

    #[tracing::instrument(skip(self, actor), fields(actor = %actor.id))]
    async fn update_account(
        &self,
        actor: &User,
        user_id: UserId,
        changes: AccountChanges,
    ) -> Result<AccountSettings, AdminError> {
        self.require_admin(actor).await?;
        if actor.id == user_id && changes.disabled == Some(true) {
            return Err(AdminError::DisablingSelf);
        }
        let entry = AuditEntry {
            id: self.ports.ids.new_id(),
            actor: actor.id,
            action: ACCOUNT_UPDATE.to_owned(),
            target: user_id,
            before: AccountSettings::default(),
            after: AccountSettings::default(),
            at: self.ports.clock.now(),
        };
        let (_, after) = self
            .ports
            .accounts
            .update_account(user_id, &changes, &entry)
            .await?
            .ok_or(AdminError::NotFound)?;
        self.ports.invalidation.account_changed(user_id).await;
        Ok(after)
    }

    async fn account_keys(
        &self,
        actor: &User,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<ApiKeyRecord>, AdminError> {
        self.require_admin(actor).await?;
        if self.ports.users.find_user_by_id(user_id).await?.is_none() {
            return Err(AdminError::NotFound);
        }
        Ok(self.ports.keys.list_api_keys(user_id, page).await?)
    }

    async fn audit(&self, actor: &User, page: PageRequest) -> Result<Page<AuditEntry>, AdminError> {
        self.require_admin(actor).await?;
        Ok(self.ports.accounts.list_audit(page).await?)
    }

    async fn own_account(&self, actor: &User) -> Result<AccountOverview, AdminError> {
        self.ports
            .accounts
            .find_account(actor.id, self.ports.clock.now())
            .await?
            .ok_or(AdminError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::model::EmailAddress;
    use crate::accounts::ports::MockUserRepository;
    use crate::admin::ports::MockAdminRepository;
    use crate::api_keys::ports::{MockApiKeyRepository, MockKeyInvalidation};
    use crate::quota::model::PeriodLimits;
    use crate::quota::model::QuotaLimit;
    use crate::system::{MockClock, MockIdGenerator};
    use time::OffsetDateTime;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    fn user(email: &str) -> User {
        User {
            id: UserId(Uuid::now_v7()),
            email: EmailAddress::parse(email).unwrap(),
            created_at: NOW,
            disabled: false,
        }
    }

    /// Admin emails are bound to whichever account asks: the one asking.
    fn service(accounts: MockAdminRepository, invalidation: MockKeyInvalidation) -> AdminService {
        service_bound_to(accounts, invalidation, None)
    }

    /// Admin emails are bound to `bound_to` (`None`: the account asking).
    fn service_bound_to(
        mut accounts: MockAdminRepository,
        invalidation: MockKeyInvalidation,
        bound_to: Option<UserId>,
    ) -> AdminService {
        accounts
            .expect_bind_admin_email()
            .returning(move |_, asking, _| Ok(bound_to.unwrap_or(asking)));
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(Uuid::from_u128(7));
        AdminService::new(
            AdminPorts {
                accounts: Arc::new(accounts),
                users: Arc::new(MockUserRepository::new()),
                keys: Arc::new(MockApiKeyRepository::new()),
                invalidation: Arc::new(invalidation),
                clock: Arc::new(clock),
                ids: Arc::new(ids),
            },
            AdminEmails::new(vec![EmailAddress::parse("root@example.com").unwrap()]),
        )
    }

    #[tokio::test]
    async fn any_user_reads_their_own_account_and_only_theirs() {
        let ada = user("ada@example.com");
        let expected = ada.id;
        let mut accounts = MockAdminRepository::new();
        accounts
            .expect_find_account()
            .withf(move |asked, at| *asked == expected && *at == NOW)
            .times(1)
            .returning(|user_id, _| {
                Ok(Some(AccountOverview {
                    user: User {
                        id: user_id,
                        email: EmailAddress::parse("ada@example.com").unwrap(),
                        created_at: NOW,
                        disabled: false,
                    },
                    settings: AccountSettings {
                        limits: PeriodLimits {
                            per_day: QuotaLimit::new(10),
                            ..PeriodLimits::default()
                        },
                        disabled: false,
                    },
                    usage: Default::default(),
                }))
            });
        let own = service(accounts, MockKeyInvalidation::new())
            .own_account(&ada)
            .await
            .unwrap();
        assert_eq!(own.user.id, ada.id);
        assert_eq!(own.settings.limits.per_day, QuotaLimit::new(10));
    }

    #[tokio::test]
    async fn only_admins_get_through() {
        let mut accounts = MockAdminRepository::new();
        accounts.expect_list_accounts().never();
        accounts.expect_update_account().never();
        accounts.expect_list_audit().never();
        let admin = service(accounts, MockKeyInvalidation::new());
        let mallory = user("mallory@example.com");
        let page = PageRequest::first(10);
        assert!(matches!(
            admin.accounts(&mallory, page).await,
            Err(AdminError::NotAdmin)
        ));
        assert!(matches!(
            admin.audit(&mallory, page).await,
            Err(AdminError::NotAdmin)
        ));
        let changes = AccountChanges {
            disabled: Some(true),
            ..AccountChanges::default()
        };
        let disabled = admin.update_account(&mallory, mallory.id, changes).await;
        assert!(matches!(disabled, Err(AdminError::NotAdmin)));
    }

    #[tokio::test]
    async fn a_change_is_audited_and_the_accounts_keys_are_forgotten() {
        let root = user("root@example.com");
        let target = UserId(Uuid::from_u128(42));
        let mut accounts = MockAdminRepository::new();
        let actor = root.id;
        accounts
            .expect_update_account()
            .withf(move |user_id, changes, entry| {
                *user_id == target
                    && changes.disabled == Some(true)
                    && entry.actor == actor
                    && entry.action == ACCOUNT_UPDATE
                    && entry.at == NOW
            })
            .times(1)
            .returning(|_, _, _| {
                let after = AccountSettings {
                    disabled: true,
                    ..AccountSettings::default()
                };
                Ok(Some((AccountSettings::default(), after)))
            });
        let mut invalidation = MockKeyInvalidation::new();
        invalidation
            .expect_account_changed()
            .withf(move |user_id| *user_id == target)
            .times(1)
            .return_const(());
        let changes = AccountChanges {
            disabled: Some(true),
            ..AccountChanges::default()
        };
        let after = service(accounts, invalidation)
            .update_account(&root, target, changes)
            .await
            .unwrap();
        assert!(after.disabled);
    }

    #[tokio::test]
    async fn an_admin_cannot_disable_their_own_account() {
        let root = user("root@example.com");
        let mut accounts = MockAdminRepository::new();
        accounts.expect_update_account().never();
        let changes = AccountChanges {
            disabled: Some(true),
            ..AccountChanges::default()
        };
        let refused = service(accounts, MockKeyInvalidation::new())
            .update_account(&root, root.id, changes)
            .await;
        assert!(matches!(refused, Err(AdminError::DisablingSelf)));
    }

    #[test]
    fn changes_keep_what_they_leave_out_and_remove_what_they_clear() {
        let limit = |n| QuotaLimit::new(n);
        let before = AccountSettings {
            limits: PeriodLimits {
                per_day: limit(5),
                per_month: limit(100),
                budget_per_day: None,
                budget_per_month: Some(crate::money::Usd::parse("50").unwrap()),
            },
            disabled: true,
        };
        let changes = AccountChanges {
            per_day: Some(None),
            per_month: None,
            budget_per_day: Some(Some(crate::money::Usd::parse("1.5").unwrap())),
            budget_per_month: Some(None),
            disabled: Some(false),
        };
        assert!(changes.touches_quotas());
        let after = changes.apply(before);
        assert_eq!(after.limits.per_day, None);
        assert_eq!(after.limits.budget_per_day.unwrap().to_string(), "1.500000");
        assert_eq!(after.limits.budget_per_month, None);
        assert_eq!(after.limits.per_month, limit(100));
        assert!(!after.disabled);
        assert!(!AccountChanges::default().touches_quotas());
        assert_eq!(AccountChanges::default().apply(before), before);
    }

    /// The admin email is bound to the account that held it first (now erased): a later
    /// registration of the same email is refused like anyone else.
    #[tokio::test]
    async fn an_admin_email_registered_again_is_not_an_admin() {
        let mut accounts = MockAdminRepository::new();
        accounts.expect_list_accounts().never();
        let first_holder = UserId(Uuid::from_u128(1));
        let admin = service_bound_to(accounts, MockKeyInvalidation::new(), Some(first_holder));
        let newcomer = user("root@example.com");
        assert!(matches!(
            admin.require_admin(&newcomer).await,
            Err(AdminError::NotAdmin)
        ));
        assert!(matches!(
            admin.accounts(&newcomer, PageRequest::first(10)).await,
            Err(AdminError::NotAdmin)
        ));
        let original = User {
            id: first_holder,
            ..user("root@example.com")
        };
        assert!(admin.require_admin(&original).await.is_ok());
    }
}
