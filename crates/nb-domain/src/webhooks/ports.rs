//! What webhooks need from the outside: where endpoints and the outbox are kept, how an
//! event is sent, how secrets are sealed, and how an event's body is written.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::model::{
    AttemptRecord, AttemptResult, DueDelivery, Endpoint, EndpointPatch, EventType, NewEndpoint,
    NextStep, SealedSecrets, WebhookId,
};
use crate::accounts::model::UserId;
use crate::error::RepositoryError;
use crate::generation::stored::GenerationView;
use crate::pagination::{Page, PageRequest};

/// Endpoints and the outbox of their events. The outbox is filled by the generation
/// repositories: the outcome of a generation (succeeded, failed, canceled) and one pending
/// delivery per endpoint of the account that takes that event commit in one transaction.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookRepository: Send + Sync + 'static {
    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<(), RepositoryError>;

    /// The user's endpoints, oldest first.
    async fn list_endpoints(&self, user_id: UserId) -> Result<Vec<Endpoint>, RepositoryError>;

    /// MUST return `Ok(None)` when it is not the user's.
    async fn find_endpoint(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<Option<Endpoint>, RepositoryError>;

    /// The endpoint with its secrets that sign at `now` (the previous one only while it has
    /// not expired). MUST return `Ok(None)` when it is not the user's.
    async fn find_endpoint_with_secrets(
        &self,
        user_id: UserId,
        id: WebhookId,
        now: OffsetDateTime,
    ) -> Result<Option<(Endpoint, SealedSecrets)>, RepositoryError>;

    /// `Ok(None)` when it is not the user's.
    async fn update_endpoint(
        &self,
        user_id: UserId,
        id: WebhookId,
        patch: &EndpointPatch,
    ) -> Result<Option<Endpoint>, RepositoryError>;

    /// Removes it with its pending deliveries and its attempts; `Ok(false)` when it is not
    /// the user's.
    async fn delete_endpoint(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<bool, RepositoryError>;

    /// Makes `sealed_secret` the current secret; the current one becomes the previous one,
    /// signing beside it until `previous_expires_at`. `Ok(None)` when it is not the user's.
    async fn rotate_secret(
        &self,
        user_id: UserId,
        id: WebhookId,
        sealed_secret: &[u8],
        previous_expires_at: OffsetDateTime,
    ) -> Result<Option<Endpoint>, RepositoryError>;

    /// Takes up to `limit` pending deliveries due at `now` (their endpoints' secrets with
    /// them: the previous one only while it has not expired at `now`), holding each until
    /// `lease_until` (then it is due again) and counting the attempt. Two deliverers never
    /// hold the same delivery at once.
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, RepositoryError>;

    /// Keeps the body rendered for the delivery's first attempt, so that retries send the
    /// same bytes.
    async fn keep_body(&self, delivery: &DueDelivery, body: &[u8]) -> Result<(), RepositoryError>;

    /// Records the attempt and what comes next, while the delivery's lease holds (else
    /// nothing and `Ok(false)`): `Delivered` ends it (and marks the endpoint active),
    /// `RetryAt` makes it due again then, `GiveUp` ends it and marks the endpoint failing.
    async fn record_attempt(
        &self,
        delivery: &DueDelivery,
        at: OffsetDateTime,
        result: &AttemptResult,
        next: NextStep,
    ) -> Result<bool, RepositoryError>;

    /// One page of the endpoint's attempts, newest first. `Ok(None)` when the endpoint is
    /// not the user's.
    async fn list_attempts(
        &self,
        user_id: UserId,
        id: WebhookId,
        page: PageRequest,
    ) -> Result<Option<Page<AttemptRecord>>, RepositoryError>;
}

/// Sends one signed event. MUST NOT follow redirects, MUST read at most 64 KB of the answer,
/// MUST give up after the timeout, and MUST check every address a name resolves to against
/// the target policy before connecting (`blocked_address` when one is refused, with no
/// connection made).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookSender: Send + Sync + 'static {
    async fn send(&self, url: &str, headers: Vec<(String, String)>, body: Vec<u8>)
    -> AttemptResult;
}

/// Why a sealed secret cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sealed secret could not be opened (a different NB_ENCRYPTION_KEY?)")]
pub struct UnsealError;

/// Encrypts secrets at rest (an AEAD keyed by the deployment's `NB_ENCRYPTION_KEY`).
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait SecretSealer: Send + Sync + 'static {
    fn seal(&self, secret: &[u8]) -> Result<Vec<u8>, crate::system::RandomnessUnavailable>;
    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, UnsealError>;
}

/// Writes an event's body: `{"type", "timestamp", "data": <the generation object>}`, the
/// generation as the API shows it.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait EventBodies: Send + Sync + 'static {
    fn body(
        &self,
        event: EventType,
        occurred_at: OffsetDateTime,
        generation: &GenerationView,
    ) -> Vec<u8>;

    /// A test event's body: `{"type": "webhook.test", "timestamp", "data": {"webhook_id"}}`.
    fn test_body(&self, endpoint: &Endpoint, occurred_at: OffsetDateTime) -> Vec<u8>;
}
