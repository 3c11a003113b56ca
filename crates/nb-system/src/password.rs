//! Password hashing behind the domain's `PasswordHasher` port: bcrypt, on tokio's blocking
//! pool.

use std::ops::RangeInclusive;
use std::sync::Arc;

use async_trait::async_trait;
use nb_domain::accounts::{Password, PasswordHash, PasswordHasher, PasswordHashingError};
use sha2::{Digest, Sha256};

/// The work factors bcrypt accepts.
pub const BCRYPT_COSTS: RangeInclusive<u32> = 4..=31;

/// The default work factor: about a quarter of a second per hash on a current server core.
pub const DEFAULT_BCRYPT_COST: u32 = 12;

/// bcrypt on tokio's blocking pool.
///
/// bcrypt reads at most 72 bytes of its input, and passwords may be 128 characters (up to 512
/// bytes), so the password is first reduced to the base64 of its SHA-256 (44 bytes): every
/// character counts and no input is silently truncated.
#[derive(Debug, Clone)]
pub struct BcryptPasswordHasher {
    cost: u32,
    /// What logins with an unknown email are checked against, made once at start-up so that
    /// the first such login costs what every other does.
    dummy_hash: Arc<String>,
}

impl BcryptPasswordHasher {
    /// Hashes the dummy password at once (one bcrypt, before the server serves anything).
    pub fn new(cost: u32) -> Result<Self, PasswordHashingError> {
        let dummy_hash = bcrypt::hash("nanobanana-dummy", cost)
            .map_err(|error| PasswordHashingError(Box::new(error)))?;
        Ok(Self {
            cost,
            dummy_hash: Arc::new(dummy_hash),
        })
    }
}

fn prehash(password: &Password) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(password.expose_secret()))
}

async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
) -> Result<T, PasswordHashingError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|error| PasswordHashingError(Box::new(error))),
        Err(join_error) => Err(PasswordHashingError(Box::new(join_error))),
    }
}

#[async_trait]
impl PasswordHasher for BcryptPasswordHasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, PasswordHashingError> {
        let (input, cost) = (prehash(password), self.cost);
        let encoded = on_blocking_pool(move || bcrypt::hash(input, cost)).await?;
        Ok(PasswordHash::new(encoded))
    }

    async fn verify(
        &self,
        password: &Password,
        hash: &PasswordHash,
    ) -> Result<bool, PasswordHashingError> {
        let (input, hash) = (prehash(password), hash.as_str().to_owned());
        // An unreadable stored hash is a failed check, not a crash.
        on_blocking_pool(move || Ok(bcrypt::verify(input, &hash).unwrap_or(false))).await
    }

    async fn verify_against_dummy(&self, password: &Password) {
        let dummy = PasswordHash::new(self.dummy_hash.as_str().to_owned());
        let _ = self.verify(password, &dummy).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_per_password() {
        let hasher = BcryptPasswordHasher::new(4).unwrap();
        let password = Password::parse_new("correct horse battery".into()).unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.as_str().starts_with("$2b$04$"));
        assert!(hasher.verify(&password, &hash).await.unwrap());
        let wrong = Password::attempt("correct horse battery!".into());
        assert!(!hasher.verify(&wrong, &hash).await.unwrap());
    }

    #[tokio::test]
    async fn characters_past_bcrypts_72_bytes_still_count() {
        let hasher = BcryptPasswordHasher::new(4).unwrap();
        let long = "a".repeat(100);
        let hash = hasher
            .hash(&Password::parse_new(long.clone()).unwrap())
            .await
            .unwrap();
        let same_first_72 = format!("{}b", "a".repeat(99));
        assert!(
            !hasher
                .verify(&Password::attempt(same_first_72), &hash)
                .await
                .unwrap()
        );
        assert!(
            hasher
                .verify(&Password::attempt(long), &hash)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unreadable_hash_is_a_failed_check() {
        let hasher = BcryptPasswordHasher::new(4).unwrap();
        let garbage = PasswordHash::new("not a bcrypt hash".into());
        assert!(
            !hasher
                .verify(&Password::attempt("whatever1".into()), &garbage)
                .await
                .unwrap()
        );
    }

    #[test]
    fn the_dummy_hash_is_made_at_start_up_with_the_configured_cost() {
        let hasher = BcryptPasswordHasher::new(5).unwrap();
        assert!(
            hasher.dummy_hash.starts_with("$2b$05$"),
            "{}",
            hasher.dummy_hash
        );
    }
}
