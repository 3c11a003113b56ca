//! `Idempotency-Key`: the first final answer to a request is kept, and a repeat of the same
//! request with the same key gets that answer again instead of a second paid image.
//!
//! An entry is claimed before any work (a unique row per API key and idempotency key, so the
//! claim holds across instances), then either completed with the answer to keep or released
//! (the answer is not worth keeping: a retry should run again). A claim that was neither, its
//! holder gone (a crash), lapses after the lease and may be taken over.

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::model::{
    Claim, ClaimOutcome, ExistingEntry, IdempotencyKey, IdempotencyLease, KeptAnswer, NewClaim,
    RequestFingerprint,
};
use super::ports::IdempotencyRepository;
use crate::api_keys::model::ApiKeyId;
use crate::error::RepositoryError;
use crate::system::{Clock, IdGenerator};

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still running")]
    InProgress,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// How long answers are kept, and how long a claim holds without its holder finishing.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyPolicy {
    pub keep_for: Duration,
    pub lease: Duration,
}

/// The ports an [`IdempotencyService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct IdempotencyPorts {
    pub entries: Arc<dyn IdempotencyRepository>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

#[derive(Clone)]
pub struct IdempotencyService {
    ports: IdempotencyPorts,
    policy: IdempotencyPolicy,
}

impl fmt::Debug for IdempotencyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How often a claim is retried when the entry it met vanished in between.
const CLAIM_ATTEMPTS: usize = 3;

/// `Idempotency-Key` as the HTTP adapter uses it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Idempotency: Send + Sync + 'static {
    /// Claims `key` for this request, or says why not: the answer to replay, a different
    /// request under the same key, or the first one still running.
    async fn begin(
        &self,
        api_key_id: ApiKeyId,
        key: IdempotencyKey,
        fingerprint: RequestFingerprint,
    ) -> Result<Claim, IdempotencyError>;

    /// Keeps `answer` for replay, for the configured time from now. A lease that lapsed and
    /// was taken over keeps nothing (the new holder's answer will be kept).
    async fn complete(
        &self,
        lease: &IdempotencyLease,
        answer: &KeptAnswer,
    ) -> Result<(), RepositoryError>;

    /// Gives the entry up: the next request with the key runs afresh.
    async fn release(&self, lease: &IdempotencyLease) -> Result<(), RepositoryError>;
}

impl IdempotencyService {
    pub fn new(ports: IdempotencyPorts, policy: IdempotencyPolicy) -> Self {
        Self { ports, policy }
    }

    /// Removes expired entries; how many.
    pub async fn delete_expired(&self) -> Result<u64, RepositoryError> {
        self.ports
            .entries
            .delete_expired(self.ports.clock.now())
            .await
    }
}

#[async_trait]
impl Idempotency for IdempotencyService {
    async fn begin(
        &self,
        api_key_id: ApiKeyId,
        key: IdempotencyKey,
        fingerprint: RequestFingerprint,
    ) -> Result<Claim, IdempotencyError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let now = self.ports.clock.now();
            let claim = NewClaim {
                lease: IdempotencyLease {
                    api_key_id,
                    key: key.clone(),
                    lease_id: self.ports.ids.new_id(),
                },
                fingerprint: fingerprint.clone(),
                now,
                locked_until: now + self.policy.lease,
                expires_at: now + self.policy.keep_for.max(self.policy.lease),
            };
            match self.ports.entries.claim(&claim).await? {
                ClaimOutcome::Claimed => return Ok(Claim::Proceed(claim.lease)),
                ClaimOutcome::Existing(entry) if entry.fingerprint != fingerprint => {
                    return Err(IdempotencyError::KeyReused);
                }
                ClaimOutcome::Existing(ExistingEntry {
                    answer: Some(answer),
                    ..
                }) => return Ok(Claim::Replay(answer)),
                ClaimOutcome::Existing(ExistingEntry { answer: None, .. }) => {
                    return Err(IdempotencyError::InProgress);
                }
                ClaimOutcome::Vanished => {}
            }
        }
        Err(IdempotencyError::InProgress)
    }

    async fn complete(
        &self,
        lease: &IdempotencyLease,
        answer: &KeptAnswer,
    ) -> Result<(), RepositoryError> {
        let expires_at = self.ports.clock.now() + self.policy.keep_for;
        self.ports
            .entries
            .complete(lease, answer, expires_at)
            .await
            .map(|_| ())
    }

    async fn release(&self, lease: &IdempotencyLease) -> Result<(), RepositoryError> {
        self.ports.entries.release(lease).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::idempotency::model::FingerprintBuilder;
    use crate::idempotency::ports::MockIdempotencyRepository;
    use crate::system::{MockClock, MockIdGenerator};
    use bytes::Bytes;
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn fingerprint(body: &str) -> RequestFingerprint {
        let mut builder = FingerprintBuilder::new("POST", "/v1/generate");
        builder.piece(body.as_bytes());
        builder.finish()
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::parse(b"order-42").unwrap()
    }

    fn service(entries: MockIdempotencyRepository) -> IdempotencyService {
        let mut clock = MockClock::new();
        clock
            .expect_now()
            .returning(|| OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        IdempotencyService::new(
            IdempotencyPorts {
                entries: Arc::new(entries),
                clock: Arc::new(clock),
                ids: Arc::new(ids),
            },
            IdempotencyPolicy {
                keep_for: Duration::from_secs(86_400),
                lease: Duration::from_secs(300),
            },
        )
    }

    #[test]
    fn keys_are_printable_ascii_of_1_to_255_characters() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(b"stainless-python-retry-6f1c2d3e").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 256]).is_err());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(b"tab\there").is_err());
        assert!(IdempotencyKey::parse("caf\u{e9}".as_bytes()).is_err());
        assert!(IdempotencyKey::parse(b"del\x7f").is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart_and_pieces_cannot_be_shifted() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
        let mut ab = FingerprintBuilder::new("POST", "/x");
        ab.piece(b"ab").piece(b"c");
        let mut a_bc = FingerprintBuilder::new("POST", "/x");
        a_bc.piece(b"a").piece(b"bc");
        assert_ne!(ab.finish(), a_bc.finish());
        let mut other_path = FingerprintBuilder::new("POST", "/y");
        other_path.piece(b"ab").piece(b"c");
        let mut ab = FingerprintBuilder::new("POST", "/x");
        ab.piece(b"ab").piece(b"c");
        assert_ne!(ab.finish(), other_path.finish());
    }

    #[tokio::test]
    async fn a_new_key_is_claimed_with_a_lease_and_an_expiry() {
        let mut entries = MockIdempotencyRepository::new();
        entries
            .expect_claim()
            .withf(|claim| {
                claim.locked_until == claim.now + Duration::from_secs(300)
                    && claim.expires_at == claim.now + Duration::from_secs(86_400)
            })
            .returning(|_| Ok(ClaimOutcome::Claimed));
        let claim = service(entries)
            .begin(ApiKeyId(Uuid::nil()), key(), fingerprint("a"))
            .await
            .unwrap();
        assert!(matches!(claim, Claim::Proceed(lease) if lease.key == key()));
    }

    #[tokio::test]
    async fn a_completed_entry_is_replayed_only_to_the_same_request() {
        let answer = KeptAnswer {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::from_static(b"{\"id\":\"gen_1\"}"),
        };
        let kept = answer.clone();
        let mut entries = MockIdempotencyRepository::new();
        entries.expect_claim().returning(move |_| {
            Ok(ClaimOutcome::Existing(ExistingEntry {
                fingerprint: fingerprint("a"),
                answer: Some(kept.clone()),
            }))
        });
        let service = service(entries);
        let replay = service
            .begin(ApiKeyId(Uuid::nil()), key(), fingerprint("a"))
            .await
            .unwrap();
        assert!(matches!(replay, Claim::Replay(replayed) if replayed == answer));
        let reused = service
            .begin(ApiKeyId(Uuid::nil()), key(), fingerprint("b"))
            .await;
        assert!(matches!(reused, Err(IdempotencyError::KeyReused)));
    }

    #[tokio::test]
    async fn a_running_entry_is_in_progress_for_the_same_request_and_reused_for_another() {
        let mut entries = MockIdempotencyRepository::new();
        entries.expect_claim().returning(|_| {
            Ok(ClaimOutcome::Existing(ExistingEntry {
                fingerprint: fingerprint("a"),
                answer: None,
            }))
        });
        let service = service(entries);
        let same = service
            .begin(ApiKeyId(Uuid::nil()), key(), fingerprint("a"))
            .await;
        assert!(matches!(same, Err(IdempotencyError::InProgress)));
        let other = service
            .begin(ApiKeyId(Uuid::nil()), key(), fingerprint("b"))
            .await;
        assert!(matches!(other, Err(IdempotencyError::KeyReused)));
    }

    #[tokio::test]
    async fn a_vanished_entry_is_claimed_again() {
        let mut entries = MockIdempotencyRepository::new();
        let mut calls = 0;
        entries.expect_claim().times(2).returning(move |_| {
            calls += 1;
            Ok(if calls == 1 {
                ClaimOutcome::Vanished
            } else {
                ClaimOutcome::Claimed
            })
        });
        let claim = service(entries)
            .begin(ApiKeyId(Uuid::nil()), key(), fingerprint("a"))
            .await
            .unwrap();
        assert!(matches!(claim, Claim::Proceed(_)));
    }
}
