//! What a webhook endpoint, an event and a delivery attempt are.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::address::WebhookUrl;
use crate::accounts::model::UserId;
use crate::generation::model::GenerationId;
use crate::generation::stored::GenerationStatus;

/// An endpoint's id: `wh_<uuid>` in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookId(pub Uuid);

impl std::fmt::Display for WebhookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wh_{}", self.0)
    }
}

impl WebhookId {
    pub fn parse(raw: &str) -> Option<Self> {
        raw.strip_prefix("wh_")
            .and_then(|uuid| Uuid::parse_str(uuid).ok())
            .map(Self)
    }
}

/// What happened to a generation, as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    GenerationSucceeded,
    GenerationFailed,
    GenerationCanceled,
}

impl EventType {
    pub const ALL: [Self; 3] = [
        Self::GenerationSucceeded,
        Self::GenerationFailed,
        Self::GenerationCanceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GenerationSucceeded => "generation.succeeded",
            Self::GenerationFailed => "generation.failed",
            Self::GenerationCanceled => "generation.canceled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == raw)
    }

    /// The event a generation's final status is.
    pub fn of_status(status: GenerationStatus) -> Option<Self> {
        match status {
            GenerationStatus::Succeeded => Some(Self::GenerationSucceeded),
            GenerationStatus::Failed => Some(Self::GenerationFailed),
            GenerationStatus::Canceled => Some(Self::GenerationCanceled),
            _ => None,
        }
    }
}

/// Which events an endpoint receives (all of them unless it chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypes {
    pub succeeded: bool,
    pub failed: bool,
    pub canceled: bool,
}

impl Default for EventTypes {
    fn default() -> Self {
        Self {
            succeeded: true,
            failed: true,
            canceled: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventTypes {
    #[error("events must be generation.succeeded, generation.failed or generation.canceled")]
    Unknown,
    #[error("events must name at least one event")]
    Empty,
}

impl EventTypes {
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidEventTypes> {
        let mut chosen = Self {
            succeeded: false,
            failed: false,
            canceled: false,
        };
        for name in names {
            match EventType::parse(name).ok_or(InvalidEventTypes::Unknown)? {
                EventType::GenerationSucceeded => chosen.succeeded = true,
                EventType::GenerationFailed => chosen.failed = true,
                EventType::GenerationCanceled => chosen.canceled = true,
            }
        }
        if chosen.names().is_empty() {
            return Err(InvalidEventTypes::Empty);
        }
        Ok(chosen)
    }

    pub fn names(self) -> Vec<&'static str> {
        EventType::ALL
            .into_iter()
            .filter(|event| self.contains(*event))
            .map(EventType::as_str)
            .collect()
    }

    pub fn contains(self, event: EventType) -> bool {
        match event {
            EventType::GenerationSucceeded => self.succeeded,
            EventType::GenerationFailed => self.failed,
            EventType::GenerationCanceled => self.canceled,
        }
    }
}

/// Whether deliveries to an endpoint get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStatus {
    Active,
    /// An event's last attempt failed; back to `Active` at the next delivery.
    Failing,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Failing => "failing",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "failing" => Some(Self::Failing),
            _ => None,
        }
    }
}

/// An endpoint as its owner sees it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: WebhookId,
    pub user_id: UserId,
    pub url: WebhookUrl,
    pub events: EventTypes,
    pub description: Option<String>,
    pub status: EndpointStatus,
    pub created_at: OffsetDateTime,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<OffsetDateTime>,
}

/// Secrets as stored: sealed (encrypted with the deployment's key), never in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecrets {
    pub current: Vec<u8>,
    /// The secret before the last rotation, while it still signs.
    pub previous: Option<Vec<u8>>,
}

/// What the repository keeps of a new endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    pub endpoint: Endpoint,
    pub sealed_secret: Vec<u8>,
}

/// A change to an endpoint (`None`: unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointPatch {
    pub url: Option<WebhookUrl>,
    pub events: Option<EventTypes>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
}

/// One event for one endpoint, due to be sent, as a deliverer holds it under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub endpoint: Endpoint,
    pub secrets: SealedSecrets,
    pub generation_id: GenerationId,
    pub event: EventType,
    /// When the generation reached its outcome (the body's `timestamp`).
    pub occurred_at: OffsetDateTime,
    /// This attempt's number: 1 for the first.
    pub attempt: u32,
    /// The body, once the first attempt has rendered it (every retry sends the same bytes).
    pub body: Option<Vec<u8>>,
    pub lease: Uuid,
}

impl DueDelivery {
    /// `webhook-id`: one per event, the same on every attempt and for every endpoint.
    pub fn message_id(&self) -> String {
        format!("msg_{}", self.generation_id.0.simple())
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The receiver's status, when it answered.
    pub status_code: Option<u16>,
    /// Why it failed, when it did: `timeout`, `connection_failed`, `blocked_address`,
    /// `redirect`, `status`, `dns_failed`, `invalid_url`.
    pub error: Option<&'static str>,
    pub duration: Duration,
}

impl AttemptResult {
    /// A 2xx answer in time.
    pub fn delivered(&self) -> bool {
        self.error.is_none()
            && self
                .status_code
                .is_some_and(|code| (200..300).contains(&code))
    }
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(OffsetDateTime),
    /// The last attempt failed: the endpoint is marked failing.
    GiveUp,
}

/// One attempt as its owner reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: Uuid,
    pub generation_id: GenerationId,
    pub event: EventType,
    pub attempt: u32,
    pub attempted_at: OffsetDateTime,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
}

/// The delays before each retry (`NB_WEBHOOK_RETRY_SCHEDULE`): `n` delays, `n + 1` attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts over about 27 hours.
    fn default() -> Self {
        Self(
            [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl RetrySchedule {
    /// After attempt `attempt` (1-based) failed at `now`: the next one, or none.
    pub fn after_failure(&self, attempt: u32, now: OffsetDateTime) -> NextStep {
        let index = usize::try_from(attempt)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        match self.0.get(index) {
            Some(delay) => NextStep::RetryAt(now + *delay),
            None => NextStep::GiveUp,
        }
    }
}

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the deliverer holds a due delivery before another may take it.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_eight_attempts() {
        let schedule = RetrySchedule::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            schedule.after_failure(1, now),
            NextStep::RetryAt(now + Duration::from_secs(5))
        );
        assert_eq!(
            schedule.after_failure(7, now),
            NextStep::RetryAt(now + Duration::from_secs(36_000))
        );
        assert_eq!(schedule.after_failure(8, now), NextStep::GiveUp);
        let short = RetrySchedule(vec![Duration::from_secs(1); 3]);
        assert_eq!(short.after_failure(4, now), NextStep::GiveUp);
    }

    #[test]
    fn events_default_to_all_and_unknown_ones_are_refused() {
        assert_eq!(EventTypes::default().names().len(), 3);
        let only = EventTypes::parse(["generation.failed"]).unwrap();
        assert_eq!(only.names(), ["generation.failed"]);
        assert!(!only.contains(EventType::GenerationSucceeded));
        assert_eq!(
            EventTypes::parse(["generation.made"]),
            Err(InvalidEventTypes::Unknown)
        );
        assert_eq!(EventTypes::parse([]), Err(InvalidEventTypes::Empty));
    }

    #[test]
    fn only_two_xx_is_delivered() {
        let answered = |code| AttemptResult {
            status_code: Some(code),
            error: None,
            duration: Duration::ZERO,
        };
        assert!(answered(200).delivered());
        assert!(answered(204).delivered());
        assert!(!answered(301).delivered());
        assert!(!answered(500).delivered());
    }
}
