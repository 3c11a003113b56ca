//! What `Idempotency-Key` keeps: the key, the request's fingerprint, the answer, and the
//! claim on an entry.

use std::fmt;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api_keys::model::ApiKeyId;

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
