//! `Idempotency-Key`: the first final answer to a request is kept, and a repeat of the same
//! request with the same key gets that answer again instead of a second paid image.
//!
//! An entry is claimed before any work (a unique row per API key and idempotency key, so the
//! claim holds across instances), then either completed with the answer to keep or released
//! (the answer is not worth keeping: a retry should run again). A claim that was neither, its
//! holder gone (a crash), lapses after the lease and may be taken over.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::RepositoryError;
use crate::api_keys::ApiKeyId;
use crate::ports::{Clock, IdGenerator, IdempotencyRepository};

/// The longest idempotency key (Stripe's limit).
pub const MAX_KEY_LENGTH: usize = 255;

/// A client's `Idempotency-Key`: 1–255 printable ASCII characters, scoped to its API key.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        let printable = raw.iter().all(|byte| (0x20..=0x7e).contains(byte));
        if raw.is_empty() || raw.len() > MAX_KEY_LENGTH || !printable {
            return Err(InvalidIdempotencyKey);
        }
        String::from_utf8(raw.to_vec())
            .map(Self)
            .map_err(|_| InvalidIdempotencyKey)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

/// What makes two requests "the same": the method, the path and the request's content, as a
/// SHA-256 (hex). Built from the parsed request, so two encodings of one request (another
/// multipart boundary, JSON keys in another order) are the same request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RequestFingerprint(String);

impl RequestFingerprint {
    /// A fingerprint as stored.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Builds a [`RequestFingerprint`]: every piece is length-prefixed, so no two different
/// sequences of pieces hash alike.
#[derive(Debug, Clone)]
pub struct FingerprintBuilder(Sha256);

impl FingerprintBuilder {
    pub fn new(method: &str, path: &str) -> Self {
        let mut builder = Self(Sha256::new());
        builder.piece(method.as_bytes()).piece(path.as_bytes());
        builder
    }

    /// One piece of the request (a field's name, a field's value, an image's bytes).
    pub fn piece(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> RequestFingerprint {
        RequestFingerprint(hex::encode(self.0.finalize()))
    }
}

/// An answer kept for replay: what the client got the first time.
#[derive(Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl fmt::Debug for KeptAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptAnswer")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// A request's hold on an entry, from its claim until it completes or releases it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyLease {
    pub api_key_id: ApiKeyId,
    pub key: IdempotencyKey,
    /// Names this holder: only it may complete or release the entry.
    pub lease_id: Uuid,
}

/// What a repository is asked to claim.
#[derive(Debug, Clone)]
pub struct NewClaim {
    pub lease: IdempotencyLease,
    pub fingerprint: RequestFingerprint,
    pub now: OffsetDateTime,
    /// Until when the holder has it; after that, another request may take the entry over.
    pub locked_until: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// An entry someone else holds or has completed.
#[derive(Debug, Clone)]
pub struct ExistingEntry {
    pub fingerprint: RequestFingerprint,
    /// The kept answer once completed; `None` while running.
    pub answer: Option<KeptAnswer>,
}

/// What a claim found.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// The entry is new, or lapsed and taken over: the caller holds it.
    Claimed,
    /// A live entry exists.
    Existing(ExistingEntry),
    /// The entry existed and vanished between the two looks (released): try again.
    Vanished,
}

/// What the caller should do.
#[derive(Debug)]
pub enum Claim {
    /// Do the work, then [`IdempotencyService::complete`] or [`IdempotencyService::release`].
    Proceed(IdempotencyLease),
    /// Answer with this, doing nothing else.
    Replay(KeptAnswer),
}

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

impl IdempotencyService {
    pub fn new(ports: IdempotencyPorts, policy: IdempotencyPolicy) -> Self {
        Self { ports, policy }
    }

    /// Claims `key` for this request, or says why not: the answer to replay, a different
    /// request under the same key, or the first one still running.
    pub async fn begin(
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

    /// Keeps `answer` for replay, for the configured time from now. A lease that lapsed and
    /// was taken over keeps nothing (the new holder's answer will be kept).
    pub async fn complete(
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

    /// Gives the entry up: the next request with the key runs afresh.
    pub async fn release(&self, lease: &IdempotencyLease) -> Result<(), RepositoryError> {
        self.ports.entries.release(lease).await
    }

    /// Removes expired entries; how many.
    pub async fn delete_expired(&self) -> Result<u64, RepositoryError> {
        self.ports
            .entries
            .delete_expired(self.ports.clock.now())
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ports::{MockClock, MockIdGenerator, MockIdempotencyRepository};

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
