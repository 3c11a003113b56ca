//! Managing endpoints (each secret shown once, sealed at rest) and delivering the outbox.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::address::{InvalidWebhookUrl, TargetPolicy, WebhookUrl};
use super::model::{
    AttemptRecord, AttemptResult, DELIVERY_LEASE, DueDelivery, Endpoint, EndpointPatch,
    EndpointStatus, EventTypes, InvalidEventTypes, NewEndpoint, NextStep, ROTATION_OVERLAP,
    RetrySchedule, SealedSecrets, WebhookId,
};
use super::ports::{EventBodies, SecretSealer, WebhookRepository, WebhookSender};
use super::signing::{WebhookSecret, signature_header};
use crate::accounts::model::UserId;
use crate::error::RepositoryError;
use crate::generation::history::{History, HistoryError, HistoryService};
use crate::generation::stored::HistoryScope;
use crate::pagination::{Page, PageRequest};
use crate::system::{Clock, IdGenerator, RandomSource, RandomnessUnavailable};

/// The longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Deliveries one deliverer sends at once.
const DELIVERIES_AT_ONCE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no such webhook endpoint")]
    NotFound,
    #[error(transparent)]
    InvalidUrl(#[from] InvalidWebhookUrl),
    #[error(transparent)]
    InvalidEvents(#[from] InvalidEventTypes),
    #[error("description must be at most {MAX_DESCRIPTION_CHARS} characters")]
    DescriptionTooLong,
    /// The deployment has no key to seal secrets with (`NB_ENCRYPTION_KEY`).
    #[error("webhooks are not configured on this server")]
    NotConfigured,
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// A new endpoint or a new secret: the secret is in the clear this once.
#[derive(Debug, Clone)]
pub struct EndpointWithSecret {
    pub endpoint: Endpoint,
    pub secret: WebhookSecret,
}

/// A change asked for, as sent (checked by the service).
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
}

/// Webhooks as the HTTP adapter uses them.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Webhooks: Send + Sync + 'static {
    async fn create(
        &self,
        user_id: UserId,
        url: String,
        events: Option<Vec<String>>,
        description: Option<String>,
    ) -> Result<EndpointWithSecret, WebhookError>;
    async fn list(&self, user_id: UserId) -> Result<Vec<Endpoint>, WebhookError>;
    async fn get(&self, user_id: UserId, id: WebhookId) -> Result<Endpoint, WebhookError>;
    async fn update(
        &self,
        user_id: UserId,
        id: WebhookId,
        change: EndpointChange,
    ) -> Result<Endpoint, WebhookError>;
    async fn delete(&self, user_id: UserId, id: WebhookId) -> Result<(), WebhookError>;
    /// A new secret; the old one keeps signing beside it for 24 hours.
    async fn rotate(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<EndpointWithSecret, WebhookError>;
    async fn attempts(
        &self,
        user_id: UserId,
        id: WebhookId,
        page: PageRequest,
    ) -> Result<Page<AttemptRecord>, WebhookError>;
    /// Sends a signed `webhook.test` event to the endpoint now, whatever events it takes, and
    /// says how it went. Not kept in the outbox: never retried, not among the deliveries.
    async fn send_test(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<AttemptResult, WebhookError>;
}

/// The ports a [`WebhookService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct WebhookPorts {
    pub webhooks: Arc<dyn WebhookRepository>,
    pub sender: Arc<dyn WebhookSender>,
    /// `None` without `NB_ENCRYPTION_KEY` where one is required: webhooks are off.
    pub sealer: Option<Arc<dyn SecretSealer>>,
    pub bodies: Arc<dyn EventBodies>,
    pub history: HistoryService,
    pub random: Arc<dyn RandomSource>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

/// How webhooks behave (`NB_WEBHOOK_*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookSettings {
    pub targets: TargetPolicy,
    pub retries: RetrySchedule,
}

pub struct WebhookService {
    ports: WebhookPorts,
    settings: WebhookSettings,
}

impl fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How often an idle deliverer looks for due deliveries.
pub const DELIVERY_POLL: Duration = Duration::from_millis(500);

impl WebhookService {
    pub fn new(ports: WebhookPorts, settings: WebhookSettings) -> Self {
        Self { ports, settings }
    }

    /// Whether webhooks can be used (a key seals their secrets).
    pub fn is_configured(&self) -> bool {
        self.ports.sealer.is_some()
    }

    fn sealer(&self) -> Result<&dyn SecretSealer, WebhookError> {
        self.ports
            .sealer
            .as_deref()
            .ok_or(WebhookError::NotConfigured)
    }

    fn checked_description(description: Option<String>) -> Result<Option<String>, WebhookError> {
        let description = description
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        match description {
            Some(text) if text.chars().count() > MAX_DESCRIPTION_CHARS => {
                Err(WebhookError::DescriptionTooLong)
            }
            description => Ok(description),
        }
    }

    fn checked_events(events: Option<Vec<String>>) -> Result<EventTypes, WebhookError> {
        Ok(match events {
            Some(names) => EventTypes::parse(names.iter().map(String::as_str))?,
            None => EventTypes::default(),
        })
    }

    /// Sends what is due until `stop` says so.
    pub async fn deliver(&self, mut stop: watch::Receiver<bool>) {
        if !self.is_configured() {
            return;
        }
        loop {
            if *stop.borrow() {
                return;
            }
            let sent = match self.deliver_due().await {
                Ok(sent) => sent,
                Err(error) => {
                    tracing::warn!(%error, "could not take webhook deliveries");
                    0
                }
            };
            if sent > 0 {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(DELIVERY_POLL) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends the deliveries due now (up to a batch): how many were taken.
    pub async fn deliver_due(&self) -> Result<usize, RepositoryError> {
        let now = self.ports.clock.now();
        let due = self
            .ports
            .webhooks
            .claim_due(now, now + DELIVERY_LEASE, DELIVERIES_AT_ONCE)
            .await?;
        let taken = due.len();
        futures_util::future::join_all(due.iter().map(|delivery| self.send_one(delivery))).await;
        Ok(taken)
    }

    #[tracing::instrument(skip_all, fields(webhook_id = %delivery.endpoint.id, generation_id = %delivery.generation_id, attempt = delivery.attempt))]
    async fn send_one(&self, delivery: &DueDelivery) {
        let result = match self.attempt(delivery).await {
            Ok(result) => result,
            Err(reason) => AttemptResult {
                status_code: None,
                error: Some(reason),
                duration: Duration::ZERO,
            },
        };
        let at = self.ports.clock.now();
        let next = if result.delivered() {
            NextStep::Delivered
        } else {
            self.settings.retries.after_failure(delivery.attempt, at)
        };
        let outcome = match next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retried",
            NextStep::GiveUp => "failed",
        };
        metrics::counter!("nanobanana_webhook_deliveries_total", "outcome" => outcome).increment(1);
        if next == NextStep::GiveUp {
            tracing::warn!(
                error = result.error,
                status = result.status_code,
                "a webhook's last attempt failed: the endpoint is marked failing"
            );
        }
        match self
            .ports
            .webhooks
            .record_attempt(delivery, at, &result, next)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!("a webhook delivery was taken by another deliverer"),
            Err(error) => tracing::warn!(%error, "could not record a webhook attempt"),
        }
    }

    /// One signed POST of the delivery's event; `Err` with a reason when nothing could be
    /// sent.
    async fn attempt(&self, delivery: &DueDelivery) -> Result<AttemptResult, &'static str> {
        let body = match &delivery.body {
            Some(body) => body.clone(),
            None => {
                let scope = HistoryScope {
                    user_id: delivery.endpoint.user_id,
                    key_id: None,
                };
                let generation = match self.ports.history.get(scope, delivery.generation_id).await {
                    Ok(generation) => generation,
                    Err(HistoryError::NotFound) => return Err("generation_gone"),
                    Err(error) => {
                        tracing::warn!(%error, "could not read a webhook's generation");
                        return Err("internal_error");
                    }
                };
                let body =
                    self.ports
                        .bodies
                        .body(delivery.event, delivery.occurred_at, &generation);
                if let Err(error) = self.ports.webhooks.keep_body(delivery, &body).await {
                    tracing::warn!(%error, "could not keep a webhook's body");
                    return Err("internal_error");
                }
                body
            }
        };
        let headers = self.signed_headers(&delivery.secrets, delivery.message_id(), &body)?;
        Ok(self
            .ports
            .sender
            .send(delivery.endpoint.url.as_str(), headers, body)
            .await)
    }

    /// The headers of a signed POST of `body` (Standard Webhooks): signed with every secret
    /// in `secrets`; `Err` with a reason when a secret cannot be opened.
    fn signed_headers(
        &self,
        secrets: &SealedSecrets,
        message_id: String,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, &'static str> {
        let sealer = self.sealer().map_err(|_| "not_configured")?;
        let mut opened_secrets = Vec::with_capacity(2);
        for sealed in std::iter::once(&secrets.current).chain(&secrets.previous) {
            let opened = sealer.open(sealed).map_err(|error| {
                tracing::error!(%error, "a webhook secret cannot be opened");
                "secret_unreadable"
            })?;
            opened_secrets.push(WebhookSecret::from_bytes(opened));
        }
        let timestamp = self.ports.clock.now().unix_timestamp();
        Ok(vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("user-agent".to_owned(), "NanoBanana-Webhooks/1".to_owned()),
            (
                "webhook-signature".to_owned(),
                signature_header(&opened_secrets, &message_id, timestamp, body),
            ),
            ("webhook-id".to_owned(), message_id),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ])
    }
}

#[async_trait]
impl Webhooks for WebhookService {
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    async fn create(
        &self,
        user_id: UserId,
        url: String,
        events: Option<Vec<String>>,
        description: Option<String>,
    ) -> Result<EndpointWithSecret, WebhookError> {
        let sealer = self.sealer()?;
        let url = WebhookUrl::parse(&url, self.settings.targets)?;
        let events = Self::checked_events(events)?;
        let description = Self::checked_description(description)?;
        let secret = WebhookSecret::generate(self.ports.random.as_ref())?;
        let endpoint = Endpoint {
            id: WebhookId(self.ports.ids.new_id()),
            user_id,
            url,
            events,
            description,
            status: EndpointStatus::Active,
            created_at: self.ports.clock.now(),
            previous_secret_expires_at: None,
        };
        self.ports
            .webhooks
            .create_endpoint(&NewEndpoint {
                endpoint: endpoint.clone(),
                sealed_secret: sealer.seal(secret.bytes())?,
            })
            .await?;
        tracing::info!(webhook_id = %endpoint.id, "webhook endpoint created");
        Ok(EndpointWithSecret { endpoint, secret })
    }

    async fn list(&self, user_id: UserId) -> Result<Vec<Endpoint>, WebhookError> {
        Ok(self.ports.webhooks.list_endpoints(user_id).await?)
    }

    async fn get(&self, user_id: UserId, id: WebhookId) -> Result<Endpoint, WebhookError> {
        self.ports
            .webhooks
            .find_endpoint(user_id, id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    async fn update(
        &self,
        user_id: UserId,
        id: WebhookId,
        change: EndpointChange,
    ) -> Result<Endpoint, WebhookError> {
        let patch = EndpointPatch {
            url: change
                .url
                .map(|url| WebhookUrl::parse(&url, self.settings.targets))
                .transpose()?,
            events: change
                .events
                .map(|events| Self::checked_events(Some(events)))
                .transpose()?,
            description: change
                .description
                .map(Self::checked_description)
                .transpose()?,
        };
        self.ports
            .webhooks
            .update_endpoint(user_id, id, &patch)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    async fn delete(&self, user_id: UserId, id: WebhookId) -> Result<(), WebhookError> {
        if self.ports.webhooks.delete_endpoint(user_id, id).await? {
            tracing::info!(webhook_id = %id, "webhook endpoint deleted");
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    async fn rotate(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<EndpointWithSecret, WebhookError> {
        let sealer = self.sealer()?;
        let secret = WebhookSecret::generate(self.ports.random.as_ref())?;
        let sealed = sealer.seal(secret.bytes())?;
        let expires_at = self.ports.clock.now() + ROTATION_OVERLAP;
        let endpoint = self
            .ports
            .webhooks
            .rotate_secret(user_id, id, &sealed, expires_at)
            .await?
            .ok_or(WebhookError::NotFound)?;
        tracing::info!(webhook_id = %id, "webhook secret rotated");
        Ok(EndpointWithSecret { endpoint, secret })
    }

    async fn attempts(
        &self,
        user_id: UserId,
        id: WebhookId,
        page: PageRequest,
    ) -> Result<Page<AttemptRecord>, WebhookError> {
        self.ports
            .webhooks
            .list_attempts(user_id, id, page)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    #[tracing::instrument(skip_all, fields(user_id = %user_id, webhook_id = %id))]
    async fn send_test(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<AttemptResult, WebhookError> {
        self.sealer()?;
        let now = self.ports.clock.now();
        let (endpoint, secrets) = self
            .ports
            .webhooks
            .find_endpoint_with_secrets(user_id, id, now)
            .await?
            .ok_or(WebhookError::NotFound)?;
        let body = self.ports.bodies.test_body(&endpoint, now);
        let message_id = format!("msg_test_{}", self.ports.ids.new_id().simple());
        let result = match self.signed_headers(&secrets, message_id, &body) {
            Ok(headers) => {
                self.ports
                    .sender
                    .send(endpoint.url.as_str(), headers, body)
                    .await
            }
            Err(reason) => AttemptResult {
                status_code: None,
                error: Some(reason),
                duration: Duration::ZERO,
            },
        };
        tracing::info!(
            delivered = result.delivered(),
            status = result.status_code,
            error = result.error,
            "webhook test event sent"
        );
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::history::HistoryPorts;
    use crate::generation::ports::{MockHistoryRepository, MockObjectStorage};
    use crate::system::{MockClock, MockIdGenerator, MockRandomSource};
    use crate::webhooks::ports::{
        MockEventBodies, MockSecretSealer, MockWebhookRepository, MockWebhookSender,
    };
    use time::OffsetDateTime;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-12-07 12:00 UTC);
    const ADA: UserId = UserId(Uuid::from_u128(1));
    const HOOK: WebhookId = WebhookId(Uuid::from_u128(2));
    const MESSAGE: Uuid = Uuid::from_u128(3);

    fn endpoint() -> Endpoint {
        Endpoint {
            id: HOOK,
            user_id: ADA,
            url: WebhookUrl::from_stored("https://hooks.example.com/nb".into()),
            events: EventTypes {
                succeeded: false,
                failed: false,
                canceled: true,
            },
            description: None,
            status: EndpointStatus::Active,
            created_at: NOW,
            previous_secret_expires_at: None,
        }
    }

    /// The service with its repository and sender; secrets are "sealed" as themselves.
    fn service(
        webhooks: MockWebhookRepository,
        sender: MockWebhookSender,
        sealed: bool,
    ) -> WebhookService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().return_const(MESSAGE);
        let mut sealer = MockSecretSealer::new();
        sealer.expect_open().returning(|sealed| Ok(sealed.to_vec()));
        let mut bodies = MockEventBodies::new();
        bodies.expect_test_body().returning(|endpoint, _| {
            format!("{{\"webhook_id\":\"{}\"}}", endpoint.id).into_bytes()
        });
        let history = HistoryService::new(HistoryPorts {
            generations: Arc::new(MockHistoryRepository::new()),
            storage: Arc::new(MockObjectStorage::new()),
            clock: clock.clone(),
        });
        WebhookService::new(
            WebhookPorts {
                webhooks: Arc::new(webhooks),
                sender: Arc::new(sender),
                sealer: sealed.then(|| Arc::new(sealer) as Arc<dyn SecretSealer>),
                bodies: Arc::new(bodies),
                history,
                random: Arc::new(MockRandomSource::new()),
                clock,
                ids: Arc::new(ids),
            },
            WebhookSettings::default(),
        )
    }

    #[tokio::test]
    async fn a_test_event_is_signed_with_every_secret_sent_now_and_its_outcome_returned() {
        let mut webhooks = MockWebhookRepository::new();
        webhooks
            .expect_find_endpoint_with_secrets()
            .withf(|user, id, now| *user == ADA && *id == HOOK && *now == NOW)
            .returning(|_, _, _| {
                Ok(Some((
                    endpoint(),
                    SealedSecrets {
                        current: b"current secret".to_vec(),
                        previous: Some(b"previous secret".to_vec()),
                    },
                )))
            });
        // A test event goes to the endpoint alone, now: nothing enters the outbox.
        webhooks.expect_claim_due().never();
        webhooks.expect_record_attempt().never();
        let mut sender = MockWebhookSender::new();
        sender
            .expect_send()
            .times(1)
            .withf(|url, headers, body| {
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value.clone())
                };
                let id = format!("msg_test_{}", MESSAGE.simple());
                let expected = [b"current secret".as_slice(), b"previous secret"]
                    .map(|secret| {
                        WebhookSecret::from_bytes(secret.to_vec()).sign(
                            &id,
                            NOW.unix_timestamp(),
                            body,
                        )
                    })
                    .join(" ");
                url == "https://hooks.example.com/nb"
                    && header("webhook-id") == Some(id)
                    && header("webhook-signature") == Some(expected)
                    && header("webhook-timestamp") == Some(NOW.unix_timestamp().to_string())
                    && body == format!("{{\"webhook_id\":\"{HOOK}\"}}").as_bytes()
            })
            .returning(|_, _, _| AttemptResult {
                status_code: Some(500),
                error: None,
                duration: Duration::from_millis(7),
            });
        let result = service(webhooks, sender, true)
            .send_test(ADA, HOOK)
            .await
            .unwrap();
        assert_eq!(result.status_code, Some(500));
        assert!(!result.delivered());
        assert_eq!(result.duration, Duration::from_millis(7));
    }

    #[tokio::test]
    async fn a_test_event_to_an_endpoint_that_is_not_the_users_is_not_found() {
        let mut webhooks = MockWebhookRepository::new();
        webhooks
            .expect_find_endpoint_with_secrets()
            .returning(|_, _, _| Ok(None));
        let mut sender = MockWebhookSender::new();
        sender.expect_send().never();
        let refused = service(webhooks, sender, true).send_test(ADA, HOOK).await;
        assert!(
            matches!(refused, Err(WebhookError::NotFound)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn without_a_sealing_key_no_test_event_is_sent() {
        let mut webhooks = MockWebhookRepository::new();
        webhooks.expect_find_endpoint_with_secrets().never();
        let mut sender = MockWebhookSender::new();
        sender.expect_send().never();
        let refused = service(webhooks, sender, false).send_test(ADA, HOOK).await;
        assert!(
            matches!(refused, Err(WebhookError::NotConfigured)),
            "{refused:?}"
        );
    }
}
