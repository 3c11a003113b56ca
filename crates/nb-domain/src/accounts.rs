//! Accounts: registration, login and looking a user up.

use std::fmt;
use std::sync::Arc;

use crate::RepositoryError;
use crate::ports::{
    Clock, IdGenerator, InsertUserError, PasswordHasher, PasswordHashingError, UserRepository,
};
use crate::user::{EmailAddress, NewUser, Password, User, UserId};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("an account with this email already exists")]
    EmailTaken,
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
    #[error(transparent)]
    Hashing(#[from] PasswordHashingError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum FindUserError {
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Registers users and checks their passwords.
#[derive(Clone)]
pub struct AccountService {
    users: Arc<dyn UserRepository>,
    hasher: Arc<dyn PasswordHasher>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl fmt::Debug for AccountService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountService").finish_non_exhaustive()
    }
}

impl AccountService {
    pub fn new(
        users: Arc<dyn UserRepository>,
        hasher: Arc<dyn PasswordHasher>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self {
            users,
            hasher,
            clock,
            ids,
        }
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn register(
        &self,
        email: EmailAddress,
        password: Password,
    ) -> Result<User, RegisterError> {
        // Hash first: no database connection is held during the slow part.
        let password_hash = self.hasher.hash(&password).await?;
        let user = User {
            id: UserId(self.ids.new_id()),
            email,
            created_at: self.clock.now(),
        };
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        let new_user = NewUser {
            user: user.clone(),
            password_hash,
        };
        match self.users.insert_user(&new_user).await {
            Ok(()) => Ok(user),
            Err(InsertUserError::EmailTaken) => Err(RegisterError::EmailTaken),
            Err(InsertUserError::Repository(error)) => Err(error.into()),
        }
    }

    /// Checks an email (as typed) and password. A malformed email is just a failed login.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, email: &str, password: Password) -> Result<User, LoginError> {
        let credentials = match EmailAddress::parse(email) {
            Ok(email) => self.users.find_user_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(credentials) = credentials else {
            self.hasher.verify_against_dummy(&password).await;
            return Err(LoginError::InvalidCredentials);
        };
        if self
            .hasher
            .verify(&password, &credentials.password_hash)
            .await?
        {
            Ok(credentials.user)
        } else {
            Err(LoginError::InvalidCredentials)
        }
    }

    pub async fn find_user(&self, id: UserId) -> Result<User, FindUserError> {
        self.users
            .find_user_by_id(id)
            .await?
            .ok_or(FindUserError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockClock, MockIdGenerator, MockPasswordHasher, MockUserRepository};
    use crate::user::{PasswordHash, UserCredentials};
    use time::OffsetDateTime;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
    const USER_ID: Uuid = Uuid::from_u128(42);

    fn service(users: MockUserRepository, hasher: MockPasswordHasher) -> AccountService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(USER_ID);
        AccountService::new(
            Arc::new(users),
            Arc::new(hasher),
            Arc::new(clock),
            Arc::new(ids),
        )
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
    async fn login_with_the_right_password_returns_the_user() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_user_by_email()
            .withf(|email| email.as_str() == "ada@example.com")
            .returning(|_| Ok(Some(stored_user())));
        let user = service(users, hasher_that_accepts("right password"))
            .login(
                " ADA@example.com",
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
                "ada@example.com",
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
            .login("nobody@example.com", Password::attempt("whatever1".into()))
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
            .login("not an email", Password::attempt("x".into()))
            .await;
        assert!(matches!(result, Err(LoginError::InvalidCredentials)));
    }

    #[tokio::test]
    async fn find_user_reports_missing_users() {
        let mut users = MockUserRepository::new();
        users.expect_find_user_by_id().returning(|_| Ok(None));
        let result = service(users, MockPasswordHasher::new())
            .find_user(UserId(USER_ID))
            .await;
        assert!(matches!(result, Err(FindUserError::NotFound)));
    }
}
