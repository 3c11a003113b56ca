//! Deleting an account at its owner's request: what identifies the person and what they
//! made goes; the counts an operator bills and audits by stay, anonymous.
//!
//! In one transaction the account becomes a tombstone (its email replaced, its password
//! unusable, disabled), its keys are revoked and lose their names, and its sessions,
//! generation records (prompts), quota counters and kept idempotency answers are deleted.
//! The daily usage counts (per key id) and the audit log (ids and limits, no email) stay.
//! Then every stored image of the account is deleted; one that cannot be is logged, and the
//! orphan sweep removes it when it is recent enough to be swept.

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::accounts::model::{EmailAddress, Password, UserId};
use crate::accounts::ports::{PasswordHasher, PasswordHashingError, UserRepository};
use crate::admin::model::AdminEmails;
use crate::api_keys::ports::KeyInvalidation;
use crate::error::RepositoryError;
use crate::generation::ports::ObjectStorage;
use crate::system::{Clock, IdGenerator};

/// How many stored images are deleted at once.
const DELETIONS_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum EraseAccountError {
    /// The password given is not the account's.
    #[error("the password is wrong")]
    WrongPassword,
    /// The account went away meanwhile.
    #[error("no such user")]
    NotFound,
    /// The account's email is an admin's (`NB_ADMIN_EMAILS`): erasing it would free the
    /// email for whoever registers it next. The operator takes it off the list first.
    #[error("an admin account cannot erase itself")]
    AdminCannotErase,
    #[error(transparent)]
    Hashing(#[from] PasswordHashingError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// What an erasure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErasureReport {
    pub keys_revoked: usize,
    pub images_deleted: usize,
    /// Images the storage could not delete (logged with their object keys).
    pub images_left: usize,
}

/// The ports an [`AccountErasure`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct ErasurePorts {
    pub users: Arc<dyn UserRepository>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub storage: Arc<dyn ObjectStorage>,
    pub invalidation: Arc<dyn KeyInvalidation>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

#[derive(Clone)]
pub struct AccountErasure {
    ports: ErasurePorts,
    /// Accounts that cannot erase themselves while their email is listed.
    admins: AdminEmails,
}

impl fmt::Debug for AccountErasure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountErasure").finish_non_exhaustive()
    }
}

/// Erasing an account at its owner's request, as the HTTP adapter asks for it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Erasure: Send + Sync + 'static {
    /// Erases the account once its owner has given its password again.
    async fn erase(
        &self,
        user_id: UserId,
        password: Password,
    ) -> Result<ErasureReport, EraseAccountError>;
}

impl AccountErasure {
    /// An admin (an email of `admins`) cannot erase their own account: the operator takes
    /// the email off the list first (see `EraseAccountError::AdminCannotErase`).
    pub fn new(ports: ErasurePorts, admins: AdminEmails) -> Self {
        Self { ports, admins }
    }
}

#[async_trait]
impl Erasure for AccountErasure {
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    async fn erase(
        &self,
        user_id: UserId,
        password: Password,
    ) -> Result<ErasureReport, EraseAccountError> {
        let credentials = self
            .ports
            .users
            .find_credentials_by_id(user_id)
            .await?
            .ok_or(EraseAccountError::NotFound)?;
        if self.admins.includes(&credentials.user.email) {
            return Err(EraseAccountError::AdminCannotErase);
        }
        if !self
            .ports
            .hasher
            .verify(&password, &credentials.password_hash)
            .await?
        {
            return Err(EraseAccountError::WrongPassword);
        }
        let erased = self
            .ports
            .users
            .erase_user(
                user_id,
                &EmailAddress::tombstone(user_id, self.ports.ids.new_id()),
                self.ports.clock.now(),
            )
            .await?
            .ok_or(EraseAccountError::NotFound)?;
        // Keys cached as valid on this instance stop working now.
        self.ports.invalidation.account_changed(user_id).await;
        let storage = &self.ports.storage;
        let results: Vec<bool> = futures_util::stream::iter(erased.object_keys)
            .map(|object_key| async move {
                match storage.delete(&object_key).await {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            object_key = object_key.as_str(),
                            "an erased account's image could not be deleted"
                        );
                        false
                    }
                }
            })
            .buffer_unordered(DELETIONS_IN_FLIGHT)
            .collect()
            .await;
        let images_deleted = results.iter().filter(|deleted| **deleted).count();
        let report = ErasureReport {
            keys_revoked: erased.keys_revoked,
            images_deleted,
            images_left: results.len() - images_deleted,
        };
        tracing::info!(
            keys_revoked = report.keys_revoked,
            images_deleted = report.images_deleted,
            images_left = report.images_left,
            "account erased"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::accounts::model::{EmailAddress, PasswordHash, User, UserCredentials};
    use crate::accounts::ports::{ErasedAccount, MockPasswordHasher, MockUserRepository};
    use crate::api_keys::ports::MockKeyInvalidation;
    use crate::generation::error::StorageError;
    use crate::generation::model::ObjectKey;
    use crate::generation::ports::MockObjectStorage;
    use crate::system::{MockClock, MockIdGenerator};
    use uuid::Uuid;

    const USER: UserId = UserId(Uuid::from_u128(7));
    const NONCE: Uuid = Uuid::from_u128(0xabc);

    fn credentials() -> UserCredentials {
        credentials_of("ada@example.com")
    }

    fn credentials_of(email: &str) -> UserCredentials {
        UserCredentials {
            user: User {
                id: USER,
                email: EmailAddress::parse(email).unwrap(),
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                disabled: false,
            },
            password_hash: PasswordHash::new("$2b$04$hash".into()),
        }
    }

    fn erasure(
        users: MockUserRepository,
        password_is_right: bool,
        storage: MockObjectStorage,
        invalidation: MockKeyInvalidation,
    ) -> AccountErasure {
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_verify()
            .returning(move |_, _| Ok(password_is_right));
        let mut clock = MockClock::new();
        clock
            .expect_now()
            .returning(|| time::OffsetDateTime::UNIX_EPOCH);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(NONCE);
        AccountErasure::new(
            ErasurePorts {
                users: Arc::new(users),
                hasher: Arc::new(hasher),
                storage: Arc::new(storage),
                invalidation: Arc::new(invalidation),
                clock: Arc::new(clock),
                ids: Arc::new(ids),
            },
            AdminEmails::new(vec![EmailAddress::parse("root@example.com").unwrap()]),
        )
    }

    fn password() -> Password {
        Password::attempt("correct horse battery staple".into())
    }

    #[tokio::test]
    async fn a_wrong_password_erases_nothing() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_credentials_by_id()
            .returning(|_| Ok(Some(credentials())));
        users.expect_erase_user().never();
        let result = erasure(
            users,
            false,
            MockObjectStorage::new(),
            MockKeyInvalidation::new(),
        )
        .erase(USER, password())
        .await;
        assert!(matches!(result, Err(EraseAccountError::WrongPassword)));
    }

    #[tokio::test]
    async fn every_image_is_deleted_and_failures_are_counted() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_credentials_by_id()
            .returning(|_| Ok(Some(credentials())));
        users
            .expect_erase_user()
            .withf(|user, tombstone, _| {
                *user == USER
                    && tombstone.as_str()
                        == format!("deleted-{USER}-{}@deleted.invalid", NONCE.simple())
                    && tombstone.is_at_a_reserved_domain()
            })
            .times(1)
            .returning(|_, _, _| {
                Ok(Some(ErasedAccount {
                    keys_revoked: 2,
                    object_keys: vec![
                        ObjectKey::from_stored("images/a.png".into()),
                        ObjectKey::from_stored("images/b.png".into()),
                        ObjectKey::from_stored("images/c.png".into()),
                    ],
                }))
            });
        let mut storage = MockObjectStorage::new();
        storage.expect_delete().times(3).returning(|key| {
            if key.as_str() == "images/b.png" {
                Err(StorageError::Failed("down".into()))
            } else {
                Ok(())
            }
        });
        let mut invalidation = MockKeyInvalidation::new();
        invalidation
            .expect_account_changed()
            .withf(|user| *user == USER)
            .times(1)
            .returning(|_| ());
        let report = erasure(users, true, storage, invalidation)
            .erase(USER, password())
            .await
            .unwrap();
        assert_eq!(
            report,
            ErasureReport {
                keys_revoked: 2,
                images_deleted: 2,
                images_left: 1,
            }
        );
    }

    /// An admin erasing their own account would free the email for whoever registers it
    /// next: refused, whatever the password, and nothing is erased.
    #[tokio::test]
    async fn an_admin_cannot_erase_their_own_account() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_credentials_by_id()
            .returning(|_| Ok(Some(credentials_of("Root@Example.com"))));
        users.expect_erase_user().never();
        let result = erasure(
            users,
            true,
            MockObjectStorage::new(),
            MockKeyInvalidation::new(),
        )
        .erase(USER, password())
        .await;
        assert!(matches!(result, Err(EraseAccountError::AdminCannotErase)));
    }
}
