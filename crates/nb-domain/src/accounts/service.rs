//! Accounts: registration, login, sessions (what access tokens stand for), password changes.

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::accounts::model::{EmailAddress, NewUser, Password, Session, SessionId, User, UserId};
use crate::accounts::ports::{
    InsertUserError, PasswordHasher, PasswordHashingError, SessionRepository, UserRepository,
};
use crate::admin::model::AdminEmails;
use crate::error::RepositoryError;
use crate::quota::model::PeriodLimits;
use crate::system::{Clock, IdGenerator};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("an account with this email already exists")]
    EmailTaken,
    /// At a top-level domain no mailbox can be at (`.invalid`, `.test`, `.example`,
    /// `.localhost`).
    #[error("this email is at a reserved domain")]
    ReservedDomain,
    /// Looks the same as an admin's email without being it.
    #[error("this email looks like one reserved on this server")]
    LooksLikeAReservedEmail,
    #[error(transparent)]
    Hashing(#[from] PasswordHashingError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown email or wrong password: one case, so the two cannot be told apart.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The right password, for an account an operator disabled.
    #[error("the account is disabled")]
    AccountDisabled,
    #[error(transparent)]
    Hashing(#[from] PasswordHashingError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum FindUserError {
    /// No such user, or no such live session of theirs.
    #[error("no such user or session")]
    NotFound,
    /// The account was disabled by an operator.
    #[error("the account is disabled")]
    Disabled,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    /// The current password given is not the user's.
    #[error("the current password is wrong")]
    WrongPassword,
    /// The account went away meanwhile.
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Hashing(#[from] PasswordHashingError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The ports an [`AccountService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct AccountPorts {
    pub users: Arc<dyn UserRepository>,
    pub sessions: Arc<dyn SessionRepository>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

/// Registers users, checks their passwords, and keeps their sessions.
#[derive(Clone)]
pub struct AccountService {
    users: Arc<dyn UserRepository>,
    sessions: Arc<dyn SessionRepository>,
    hasher: Arc<dyn PasswordHasher>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    session_ttl: Duration,
    new_account_limits: PeriodLimits,
    /// Protected emails and their skeletons.
    look_alikes: Vec<(EmailAddress, String)>,
}

impl fmt::Debug for AccountService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountService")
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

/// Accounts as the HTTP adapter uses them: registration, login, sessions, password changes.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// A new session for the user, starting now.
    async fn start_session(&self, user_id: UserId) -> Result<Session, RepositoryError>;

    /// The user of a live session: an access token's owner, as long as the session has not
    /// ended (logout, password change) or expired.
    async fn signed_in_user(
        &self,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<User, FindUserError>;

    /// Ends one session: its access token stops working at once.
    async fn end_session(
        &self,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<(), RepositoryError>;

    /// Checks the current password, stores the new one, and ends every session of the user
    /// (every access token issued so far); returns a new session to carry on with.
    async fn change_password(
        &self,
        user_id: UserId,
        current: Password,
        new: Password,
    ) -> Result<Session, ChangePasswordError>;

    async fn register(
        &self,
        email: EmailAddress,
        password: Password,
    ) -> Result<User, RegisterError>;

    /// Checks an email and password. A malformed email (`None`) is just a failed login, at
    /// the same cost as any other.
    async fn login(
        &self,
        email: Option<EmailAddress>,
        password: Password,
    ) -> Result<User, LoginError>;
}

impl AccountService {
    /// Sessions last `session_ttl` (the access tokens' lifetime).
    pub fn new(ports: AccountPorts, session_ttl: Duration) -> Self {
        Self {
            users: ports.users,
            sessions: ports.sessions,
            hasher: ports.hasher,
            clock: ports.clock,
            ids: ports.ids,
            session_ttl,
            new_account_limits: PeriodLimits::default(),
            look_alikes: Vec::new(),
        }
    }

    /// Emails that no one else's may look like (the admins'): a registration whose email has
    /// the same UTS #39 skeleton as one of them, without being it, is refused.
    pub fn with_protected_emails(mut self, emails: &AdminEmails) -> Self {
        self.look_alikes = emails
            .iter()
            .map(|email| (email.clone(), email.skeleton()))
            .collect();
        self
    }

    /// New accounts get these quotas (the deployment's defaults).
    pub fn with_new_account_limits(mut self, limits: PeriodLimits) -> Self {
        self.new_account_limits = limits;
        self
    }

    /// Forgets sessions that have expired.
    pub async fn forget_expired_sessions(&self) -> Result<u64, RepositoryError> {
        self.sessions
            .delete_expired_sessions(self.clock.now())
            .await
    }
}

#[async_trait]
impl Accounts for AccountService {
    async fn start_session(&self, user_id: UserId) -> Result<Session, RepositoryError> {
        let created_at = self.clock.now();
        let session = Session {
            id: SessionId(self.ids.new_id()),
            user_id,
            created_at,
            expires_at: created_at + self.session_ttl,
        };
        self.sessions.insert_session(&session).await?;
        Ok(session)
    }

    async fn signed_in_user(
        &self,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<User, FindUserError> {
        let user = self
            .sessions
            .find_session_user(user_id, session_id, self.clock.now())
            .await?
            .ok_or(FindUserError::NotFound)?;
        if user.disabled {
            return Err(FindUserError::Disabled);
        }
        Ok(user)
    }

    async fn end_session(
        &self,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<(), RepositoryError> {
        self.sessions.delete_session(user_id, session_id).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    async fn change_password(
        &self,
        user_id: UserId,
        current: Password,
        new: Password,
    ) -> Result<Session, ChangePasswordError> {
        let credentials = self
            .users
            .find_credentials_by_id(user_id)
            .await?
            .ok_or(ChangePasswordError::NotFound)?;
        if !self
            .hasher
            .verify(&current, &credentials.password_hash)
            .await?
        {
            return Err(ChangePasswordError::WrongPassword);
        }
        let new_hash = self.hasher.hash(&new).await?;
        if !self.users.replace_password(user_id, &new_hash).await? {
            return Err(ChangePasswordError::NotFound);
        }
        Ok(self.start_session(user_id).await?)
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn register(
        &self,
        email: EmailAddress,
        password: Password,
    ) -> Result<User, RegisterError> {
        if email.is_at_a_reserved_domain() {
            return Err(RegisterError::ReservedDomain);
        }
        let skeleton = email.skeleton();
        let looks_like_another = self
            .look_alikes
            .iter()
            .any(|(protected, look)| *look == skeleton && *protected != email);
        if looks_like_another {
            return Err(RegisterError::LooksLikeAReservedEmail);
        }
        // Hash first: no database connection is held during the slow part.
        let password_hash = self.hasher.hash(&password).await?;
        let user = User {
            id: UserId(self.ids.new_id()),
            email,
            created_at: self.clock.now(),
            disabled: false,
        };
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        let new_user = NewUser {
            user: user.clone(),
            password_hash,
            limits: self.new_account_limits,
        };
        match self.users.insert_user(&new_user).await {
            Ok(()) => Ok(user),
            Err(InsertUserError::EmailTaken) => Err(RegisterError::EmailTaken),
            Err(InsertUserError::Repository(error)) => Err(error.into()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn login(
        &self,
        email: Option<EmailAddress>,
        password: Password,
    ) -> Result<User, LoginError> {
        let credentials = match email {
            Some(email) => self.users.find_user_by_email(&email).await?,
            None => None,
        };
        let Some(credentials) = credentials else {
            self.hasher.verify_against_dummy(&password).await;
            return Err(LoginError::InvalidCredentials);
        };
        if !self
            .hasher
            .verify(&password, &credentials.password_hash)
            .await?
        {
            return Err(LoginError::InvalidCredentials);
        }
        if credentials.user.disabled {
            return Err(LoginError::AccountDisabled);
        }
        Ok(credentials.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::model::{PasswordHash, UserCredentials};
    use crate::accounts::ports::{MockPasswordHasher, MockSessionRepository, MockUserRepository};
    use crate::system::{MockClock, MockIdGenerator};
    use time::OffsetDateTime;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
    const USER_ID: Uuid = Uuid::from_u128(42);

    const TTL: Duration = Duration::from_secs(3600);

    fn service_with_sessions(
        users: MockUserRepository,
        sessions: MockSessionRepository,
        hasher: MockPasswordHasher,
    ) -> AccountService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(USER_ID);
        let ports = AccountPorts {
            users: Arc::new(users),
            sessions: Arc::new(sessions),
            hasher: Arc::new(hasher),
            clock: Arc::new(clock),
            ids: Arc::new(ids),
        };
        AccountService::new(ports, TTL)
    }

    fn service(users: MockUserRepository, hasher: MockPasswordHasher) -> AccountService {
        service_with_sessions(users, MockSessionRepository::new(), hasher)
    }

    fn hasher_that_accepts(correct: &'static str) -> MockPasswordHasher {
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_hash().returning(|password| {
            Ok(PasswordHash::new(format!(
                "hashed:{}",
                password.expose_secret()
            )))
        });
        hasher.expect_verify().returning(move |password, hash| {
            Ok(password.expose_secret() == correct && hash.as_str() == format!("hashed:{correct}"))
        });
        hasher
    }

    fn stored_user() -> UserCredentials {
        UserCredentials {
            user: User {
                id: UserId(USER_ID),
                email: EmailAddress::parse("ada@example.com").unwrap(),
                created_at: NOW,
                disabled: false,
            },
            password_hash: PasswordHash::new("hashed:right password".into()),
        }
    }

    #[tokio::test]
    async fn register_stores_the_hash_never_the_password() {
        let mut users = MockUserRepository::new();
        users
            .expect_insert_user()
            .withf(|new_user| {
                new_user.password_hash.as_str() == "hashed:right password"
                    && new_user.user.email.as_str() == "ada@example.com"
                    && new_user.user.id == UserId(USER_ID)
                    && new_user.user.created_at == NOW
            })
            .times(1)
            .returning(|_| Ok(()));
        let user = service(users, hasher_that_accepts("right password"))
            .register(
                EmailAddress::parse("Ada@Example.com").unwrap(),
                Password::parse_new("right password".into()).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(user.id, UserId(USER_ID));
    }

    #[tokio::test]
    async fn register_with_a_taken_email_is_a_conflict() {
        let mut users = MockUserRepository::new();
        users
            .expect_insert_user()
            .returning(|_| Err(InsertUserError::EmailTaken));
        let result = service(users, hasher_that_accepts("right password"))
            .register(
                EmailAddress::parse("ada@example.com").unwrap(),
                Password::parse_new("right password".into()).unwrap(),
            )
            .await;
        assert!(matches!(result, Err(RegisterError::EmailTaken)));
    }

    #[tokio::test]
    async fn emails_at_reserved_domains_and_look_alikes_of_admins_are_refused() {
        let mut users = MockUserRepository::new();
        users.expect_insert_user().times(1).returning(|_| Ok(()));
        let admins = AdminEmails::new(vec![EmailAddress::parse("admin@example.com").unwrap()]);
        let service =
            service(users, hasher_that_accepts("right password")).with_protected_emails(&admins);
        let register = |email: &str| {
            service.register(
                EmailAddress::parse(email).unwrap(),
                Password::parse_new("right password".into()).unwrap(),
            )
        };
        assert!(matches!(
            register("deleted-1@deleted.invalid").await,
            Err(RegisterError::ReservedDomain)
        ));
        assert!(matches!(
            register("adm\u{131}n@example.com").await,
            Err(RegisterError::LooksLikeAReservedEmail)
        ));
        // The admin's own email registers (the one insert this test expects).
        assert!(register("admin@example.com").await.is_ok());
    }

    #[tokio::test]
    async fn login_with_the_right_password_returns_the_user() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_user_by_email()
            .withf(|email| email.as_str() == "ada@example.com")
            .returning(|_| Ok(Some(stored_user())));
        let user = service(users, hasher_that_accepts("right password"))
            .login(
                EmailAddress::parse(" ADA@example.com").ok(),
                Password::attempt("right password".into()),
            )
            .await
            .unwrap();
        assert_eq!(user.id, UserId(USER_ID));
    }

    #[tokio::test]
    async fn login_with_a_wrong_password_is_invalid_credentials() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_user_by_email()
            .returning(|_| Ok(Some(stored_user())));
        let result = service(users, hasher_that_accepts("right password"))
            .login(
                EmailAddress::parse("ada@example.com").ok(),
                Password::attempt("wrong password".into()),
            )
            .await;
        assert!(matches!(result, Err(LoginError::InvalidCredentials)));
    }

    #[tokio::test]
    async fn login_with_an_unknown_email_still_spends_a_verification() {
        let mut users = MockUserRepository::new();
        users.expect_find_user_by_email().returning(|_| Ok(None));
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_verify_against_dummy()
            .times(1)
            .return_const(());
        let result = service(users, hasher)
            .login(
                EmailAddress::parse("nobody@example.com").ok(),
                Password::attempt("whatever1".into()),
            )
            .await;
        assert!(matches!(result, Err(LoginError::InvalidCredentials)));
    }

    #[tokio::test]
    async fn login_with_a_malformed_email_spends_a_verification_without_a_lookup() {
        let mut users = MockUserRepository::new();
        users.expect_find_user_by_email().never();
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_verify_against_dummy()
            .times(1)
            .return_const(());
        let result = service(users, hasher)
            .login(None, Password::attempt("x".into()))
            .await;
        assert!(matches!(result, Err(LoginError::InvalidCredentials)));
    }

    #[tokio::test]
    async fn an_ended_or_unknown_session_is_no_user() {
        let mut sessions = MockSessionRepository::new();
        sessions
            .expect_find_session_user()
            .withf(|_, _, now| *now == NOW)
            .returning(|_, _, _| Ok(None));
        let result = service_with_sessions(
            MockUserRepository::new(),
            sessions,
            MockPasswordHasher::new(),
        )
        .signed_in_user(UserId(USER_ID), SessionId(Uuid::from_u128(9)))
        .await;
        assert!(matches!(result, Err(FindUserError::NotFound)));
    }

    #[tokio::test]
    async fn sessions_last_the_token_lifetime() {
        let mut sessions = MockSessionRepository::new();
        sessions
            .expect_insert_session()
            .withf(|session| session.created_at == NOW && session.expires_at == NOW + TTL)
            .times(1)
            .returning(|_| Ok(()));
        service_with_sessions(
            MockUserRepository::new(),
            sessions,
            MockPasswordHasher::new(),
        )
        .start_session(UserId(USER_ID))
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_password_change_needs_the_current_password_and_ends_every_session() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_credentials_by_id()
            .returning(|_| Ok(Some(stored_user())));
        users
            .expect_replace_password()
            .withf(|_, hash| hash.as_str() == "hashed:new password!")
            .times(1)
            .returning(|_, _| Ok(true));
        let mut sessions = MockSessionRepository::new();
        sessions
            .expect_insert_session()
            .times(1)
            .returning(|_| Ok(()));
        let accounts =
            service_with_sessions(users, sessions, hasher_that_accepts("right password"));
        let wrong = accounts
            .change_password(
                UserId(USER_ID),
                Password::attempt("wrong password".into()),
                Password::parse_new("new password!".into()).unwrap(),
            )
            .await;
        assert!(matches!(wrong, Err(ChangePasswordError::WrongPassword)));
        let session = accounts
            .change_password(
                UserId(USER_ID),
                Password::attempt("right password".into()),
                Password::parse_new("new password!".into()).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(session.user_id, UserId(USER_ID));
    }
}
