//! `WebhookRepository` on both backends: endpoints (their secrets sealed, as the domain hands
//! them over), the outbox of their events (filled beside each generation's outcome, see
//! `generations::rows::enqueue_events`) and the attempts.
//!
//! Due deliveries are claimed like jobs: on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so the
//! deliverers of every instance take different ones; the claim moves `next_attempt_at` to the
//! end of a lease, so a delivery whose deliverer died is due again then; recording an attempt
//! is conditional on the lease token.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::accounts::UserId;
use nb_domain::generation::GenerationId;
use nb_domain::pagination::{Cursor, Page, PageRequest};
use nb_domain::ports::WebhookRepository;
use nb_domain::webhooks::{
    AttemptRecord, AttemptResult, DueDelivery, Endpoint, EndpointPatch, EndpointStatus, EventType,
    EventTypes, NewEndpoint, NextStep, SealedSecrets, WebhookId, WebhookUrl,
};
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use crate::convert::{from_stored_time, parse_stored_id, to_stored_time};
use crate::pool::{Database, with_connection, with_transaction};
use crate::schema::{webhook_attempts, webhook_deliveries, webhook_endpoints};

#[derive(Queryable, Selectable, Clone)]
#[diesel(table_name = webhook_endpoints)]
struct EndpointRow {
    id: String,
    user_id: String,
    url: String,
    description: Option<String>,
    on_succeeded: bool,
    on_failed: bool,
    on_canceled: bool,
    status: String,
    secret: Vec<u8>,
    previous_secret: Option<Vec<u8>>,
    previous_secret_expires_at: Option<PrimitiveDateTime>,
    created_at: PrimitiveDateTime,
}

impl EndpointRow {
    fn endpoint(&self) -> Result<Endpoint, RepositoryError> {
        Ok(Endpoint {
            id: WebhookId(parse_stored_id(&self.id)?),
            user_id: UserId(parse_stored_id(&self.user_id)?),
            url: WebhookUrl::from_stored(self.url.clone()),
            events: EventTypes {
                succeeded: self.on_succeeded,
                failed: self.on_failed,
                canceled: self.on_canceled,
            },
            description: self.description.clone(),
            status: EndpointStatus::parse(&self.status)
                .ok_or_else(|| RepositoryError::unexpected("an endpoint's status"))?,
            created_at: from_stored_time(self.created_at),
            previous_secret_expires_at: self.previous_secret_expires_at.map(from_stored_time),
        })
    }

    /// Its secrets that sign at `now`.
    fn secrets(&self, now: PrimitiveDateTime) -> SealedSecrets {
        SealedSecrets {
            current: self.secret.clone(),
            previous: self.previous_secret.clone().filter(|_| {
                self.previous_secret_expires_at
                    .is_some_and(|until| until > now)
            }),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
struct DeliveryRow {
    generation_id: String,
    event: String,
    occurred_at: PrimitiveDateTime,
    attempts: i32,
    body: Option<Vec<u8>>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
struct AttemptRow {
    id: String,
    generation_id: String,
    event: String,
    attempt: i32,
    attempted_at: PrimitiveDateTime,
    status_code: Option<i32>,
    error: Option<String>,
    duration_ms: i64,
}

fn event_of(stored: &str) -> Result<EventType, RepositoryError> {
    EventType::parse(&format!("generation.{stored}"))
        .ok_or_else(|| RepositoryError::unexpected("a webhook event"))
}

impl AttemptRow {
    fn record(self) -> Result<AttemptRecord, RepositoryError> {
        Ok(AttemptRecord {
            id: parse_stored_id(&self.id)?,
            generation_id: GenerationId::parse(&self.generation_id)
                .map_err(RepositoryError::unexpected)?,
            event: event_of(&self.event)?,
            attempt: u32::try_from(self.attempt).map_err(RepositoryError::unexpected)?,
            attempted_at: from_stored_time(self.attempted_at),
            status_code: self.status_code.and_then(|code| u16::try_from(code).ok()),
            error: self.error,
            duration: std::time::Duration::from_millis(
                u64::try_from(self.duration_ms).unwrap_or(0),
            ),
        })
    }
}

/// The `(endpoint, generation)` of due deliveries, per backend (`$1`/`?1`: now; `$2`/`?2`:
/// how many).
#[derive(QueryableByName)]
struct DueKey {
    #[diesel(sql_type = diesel::sql_types::Text)]
    endpoint_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    generation_id: String,
}

const DUE_POSTGRES: &str = "SELECT endpoint_id, generation_id FROM webhook_deliveries \
     WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2 \
     FOR UPDATE SKIP LOCKED";
const DUE_SQLITE: &str = "SELECT endpoint_id, generation_id FROM webhook_deliveries \
     WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2";

impl Database {
    /// The user's endpoint `id`, when it is theirs.
    async fn endpoint_row(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<Option<EndpointRow>, RepositoryError> {
        let (user, id) = (user_id.to_string(), id.0.to_string());
        with_transaction!(self, |conn, run| {
            run!(
                webhook_endpoints::table
                    .find(&id)
                    .filter(webhook_endpoints::user_id.eq(&user))
                    .select(EndpointRow::as_select()),
                get_result,
                conn
            )
            .optional()
        })
    }
}

#[async_trait]
impl WebhookRepository for Database {
    async fn create_endpoint(&self, new: &NewEndpoint) -> Result<(), RepositoryError> {
        let endpoint = &new.endpoint;
        let row = EndpointRow {
            id: endpoint.id.0.to_string(),
            user_id: endpoint.user_id.to_string(),
            url: endpoint.url.as_str().to_owned(),
            description: endpoint.description.clone(),
            on_succeeded: endpoint.events.succeeded,
            on_failed: endpoint.events.failed,
            on_canceled: endpoint.events.canceled,
            status: endpoint.status.as_str().to_owned(),
            secret: new.sealed_secret.clone(),
            previous_secret: None,
            previous_secret_expires_at: None,
            created_at: to_stored_time(endpoint.created_at),
        };
        with_transaction!(self, |conn, run| {
            run!(
                diesel::insert_into(webhook_endpoints::table).values((
                    webhook_endpoints::id.eq(&row.id),
                    webhook_endpoints::user_id.eq(&row.user_id),
                    webhook_endpoints::url.eq(&row.url),
                    webhook_endpoints::description.eq(&row.description),
                    webhook_endpoints::on_succeeded.eq(row.on_succeeded),
                    webhook_endpoints::on_failed.eq(row.on_failed),
                    webhook_endpoints::on_canceled.eq(row.on_canceled),
                    webhook_endpoints::status.eq(&row.status),
                    webhook_endpoints::secret.eq(&row.secret),
                    webhook_endpoints::created_at.eq(row.created_at),
                )),
                execute,
                conn
            )?;
            Ok(())
        })
    }

    async fn list_endpoints(&self, user_id: UserId) -> Result<Vec<Endpoint>, RepositoryError> {
        let user = user_id.to_string();
        let rows: Vec<EndpointRow> = with_transaction!(self, |conn, run| {
            run!(
                webhook_endpoints::table
                    .filter(webhook_endpoints::user_id.eq(&user))
                    .order((webhook_endpoints::created_at, webhook_endpoints::id))
                    .select(EndpointRow::as_select()),
                load,
                conn
            )
        })?;
        rows.iter().map(EndpointRow::endpoint).collect()
    }

    async fn find_endpoint(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<Option<Endpoint>, RepositoryError> {
        let row = self.endpoint_row(user_id, id).await?;
        row.as_ref().map(EndpointRow::endpoint).transpose()
    }

    async fn find_endpoint_with_secrets(
        &self,
        user_id: UserId,
        id: WebhookId,
        now: OffsetDateTime,
    ) -> Result<Option<(Endpoint, SealedSecrets)>, RepositoryError> {
        let row = self.endpoint_row(user_id, id).await?;
        row.map(|row| Ok((row.endpoint()?, row.secrets(to_stored_time(now)))))
            .transpose()
    }

    async fn update_endpoint(
        &self,
        user_id: UserId,
        id: WebhookId,
        patch: &EndpointPatch,
    ) -> Result<Option<Endpoint>, RepositoryError> {
        let (user, id) = (user_id.to_string(), id.0.to_string());
        let patch = patch.clone();
        let row: Option<EndpointRow> = with_transaction!(self, |conn, run| {
            let mine = webhook_endpoints::table
                .find(&id)
                .filter(webhook_endpoints::user_id.eq(&user));
            if let Some(url) = &patch.url {
                run!(
                    diesel::update(mine).set(webhook_endpoints::url.eq(url.as_str())),
                    execute,
                    conn
                )?;
            }
            if let Some(events) = patch.events {
                run!(
                    diesel::update(mine).set((
                        webhook_endpoints::on_succeeded.eq(events.succeeded),
                        webhook_endpoints::on_failed.eq(events.failed),
                        webhook_endpoints::on_canceled.eq(events.canceled),
                    )),
                    execute,
                    conn
                )?;
            }
            if let Some(description) = &patch.description {
                run!(
                    diesel::update(mine).set(webhook_endpoints::description.eq(description)),
                    execute,
                    conn
                )?;
            }
            run!(mine.select(EndpointRow::as_select()), get_result, conn).optional()
        })?;
        row.as_ref().map(EndpointRow::endpoint).transpose()
    }

    async fn delete_endpoint(
        &self,
        user_id: UserId,
        id: WebhookId,
    ) -> Result<bool, RepositoryError> {
        let (user, id) = (user_id.to_string(), id.0.to_string());
        with_transaction!(self, |conn, run| {
            // Explicitly, whether or not the backend enforces the cascade.
            let mine = run!(
                webhook_endpoints::table
                    .find(&id)
                    .filter(webhook_endpoints::user_id.eq(&user))
                    .count(),
                get_result,
                conn
            )?;
            let mine: i64 = mine;
            if mine == 0 {
                return Ok(false);
            }
            run!(
                diesel::delete(
                    webhook_attempts::table.filter(webhook_attempts::endpoint_id.eq(&id))
                ),
                execute,
                conn
            )?;
            run!(
                diesel::delete(
                    webhook_deliveries::table.filter(webhook_deliveries::endpoint_id.eq(&id))
                ),
                execute,
                conn
            )?;
            run!(
                diesel::delete(webhook_endpoints::table.find(&id)),
                execute,
                conn
            )?;
            Ok(true)
        })
    }

    async fn rotate_secret(
        &self,
        user_id: UserId,
        id: WebhookId,
        sealed_secret: &[u8],
        previous_expires_at: OffsetDateTime,
    ) -> Result<Option<Endpoint>, RepositoryError> {
        let (user, id) = (user_id.to_string(), id.0.to_string());
        let sealed = sealed_secret.to_vec();
        let until = to_stored_time(previous_expires_at);
        let row: Option<EndpointRow> = with_transaction!(self, |conn, run| {
            let mine = webhook_endpoints::table
                .find(&id)
                .filter(webhook_endpoints::user_id.eq(&user));
            let rotated = run!(
                diesel::update(mine).set((
                    webhook_endpoints::previous_secret.eq(webhook_endpoints::secret.nullable()),
                    webhook_endpoints::previous_secret_expires_at.eq(Some(until)),
                    webhook_endpoints::secret.eq(&sealed),
                )),
                execute,
                conn
            )?;
            if rotated == 0 {
                return Ok(None);
            }
            run!(mine.select(EndpointRow::as_select()), get_result, conn).optional()
        })?;
        row.as_ref().map(EndpointRow::endpoint).transpose()
    }

    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, RepositoryError> {
        let due = match self.pool.backend_name() {
            "postgres" => DUE_POSTGRES,
            _ => DUE_SQLITE,
        };
        let (now, until) = (to_stored_time(now), to_stored_time(lease_until));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A plain read first: an empty outbox costs no lock.
        let anything_due = with_connection!(self, |conn| {
            webhook_deliveries::table
                .filter(webhook_deliveries::state.eq("pending"))
                .filter(webhook_deliveries::next_attempt_at.le(now))
                .select(webhook_deliveries::generation_id)
                .first::<String>(conn)
                .await
                .optional()
        })?
        .map_err(crate::convert::query_error)?;
        if anything_due.is_none() {
            return Ok(Vec::new());
        }
        let lease = Uuid::new_v4();
        let token = lease.to_string();
        let claimed: Vec<(EndpointRow, DeliveryRow)> = with_transaction!(self, |conn, run| {
            let keys: Vec<DueKey> = run!(
                diesel::sql_query(due)
                    .bind::<diesel::sql_types::Timestamp, _>(now)
                    .bind::<diesel::sql_types::BigInt, _>(limit),
                load,
                conn
            )?;
            let mut claimed = Vec::with_capacity(keys.len());
            for key in &keys {
                let this = webhook_deliveries::table.find((&key.endpoint_id, &key.generation_id));
                run!(
                    diesel::update(this).set((
                        webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
                        webhook_deliveries::next_attempt_at.eq(until),
                        webhook_deliveries::lease_token.eq(&token),
                    )),
                    execute,
                    conn
                )?;
                let found: (EndpointRow, DeliveryRow) = run!(
                    this.inner_join(webhook_endpoints::table)
                        .select((EndpointRow::as_select(), DeliveryRow::as_select())),
                    get_result,
                    conn
                )?;
                claimed.push(found);
            }
            Ok(claimed)
        })?;
        claimed
            .into_iter()
            .map(|(endpoint, delivery)| {
                Ok(DueDelivery {
                    endpoint: endpoint.endpoint()?,
                    secrets: endpoint.secrets(now),
                    generation_id: GenerationId::parse(&delivery.generation_id)
                        .map_err(RepositoryError::unexpected)?,
                    event: event_of(&delivery.event)?,
                    occurred_at: from_stored_time(delivery.occurred_at),
                    attempt: u32::try_from(delivery.attempts)
                        .map_err(RepositoryError::unexpected)?,
                    body: delivery.body,
                    lease,
                })
            })
            .collect()
    }

    async fn keep_body(&self, delivery: &DueDelivery, body: &[u8]) -> Result<(), RepositoryError> {
        let key = (
            delivery.endpoint.id.0.to_string(),
            delivery.generation_id.to_string(),
        );
        let (token, body) = (delivery.lease.to_string(), body.to_vec());
        with_transaction!(self, |conn, run| {
            run!(
                diesel::update(
                    webhook_deliveries::table
                        .find((&key.0, &key.1))
                        .filter(webhook_deliveries::lease_token.eq(&token)),
                )
                .set(webhook_deliveries::body.eq(&body)),
                execute,
                conn
            )?;
            Ok(())
        })
    }

    async fn record_attempt(
        &self,
        delivery: &DueDelivery,
        at: OffsetDateTime,
        result: &AttemptResult,
        next: NextStep,
    ) -> Result<bool, RepositoryError> {
        let (endpoint_id, generation_id) = (
            delivery.endpoint.id.0.to_string(),
            delivery.generation_id.to_string(),
        );
        let token = delivery.lease.to_string();
        let event = delivery
            .event
            .as_str()
            .trim_start_matches("generation.")
            .to_owned();
        let attempt = i32::try_from(delivery.attempt).unwrap_or(i32::MAX);
        let at = to_stored_time(at);
        let status_code = result.status_code.map(i32::from);
        let error = result.error.map(str::to_owned);
        let duration_ms = i64::try_from(result.duration.as_millis()).unwrap_or(i64::MAX);
        let attempt_id = Uuid::now_v7().to_string();
        with_transaction!(self, |conn, run| {
            let this = webhook_deliveries::table
                .find((&endpoint_id, &generation_id))
                .filter(webhook_deliveries::lease_token.eq(&token));
            let held = match next {
                NextStep::Delivered => run!(
                    diesel::update(this).set((
                        webhook_deliveries::state.eq("delivered"),
                        webhook_deliveries::lease_token.eq(None::<String>),
                    )),
                    execute,
                    conn
                )?,
                NextStep::RetryAt(when) => run!(
                    diesel::update(this).set((
                        webhook_deliveries::next_attempt_at.eq(to_stored_time(when)),
                        webhook_deliveries::lease_token.eq(None::<String>),
                    )),
                    execute,
                    conn
                )?,
                NextStep::GiveUp => run!(
                    diesel::update(this).set((
                        webhook_deliveries::state.eq("failed"),
                        webhook_deliveries::lease_token.eq(None::<String>),
                    )),
                    execute,
                    conn
                )?,
            };
            if held == 0 {
                return Ok(false);
            }
            run!(
                diesel::insert_into(webhook_attempts::table).values((
                    webhook_attempts::id.eq(&attempt_id),
                    webhook_attempts::endpoint_id.eq(&endpoint_id),
                    webhook_attempts::generation_id.eq(&generation_id),
                    webhook_attempts::event.eq(&event),
                    webhook_attempts::attempt.eq(attempt),
                    webhook_attempts::attempted_at.eq(at),
                    webhook_attempts::status_code.eq(status_code),
                    webhook_attempts::error.eq(&error),
                    webhook_attempts::duration_ms.eq(duration_ms),
                )),
                execute,
                conn
            )?;
            let status = match next {
                NextStep::Delivered => Some("active"),
                NextStep::GiveUp => Some("failing"),
                NextStep::RetryAt(_) => None,
            };
            if let Some(status) = status {
                run!(
                    diesel::update(webhook_endpoints::table.find(&endpoint_id))
                        .set(webhook_endpoints::status.eq(status)),
                    execute,
                    conn
                )?;
            }
            Ok(true)
        })
    }

    async fn list_attempts(
        &self,
        user_id: UserId,
        id: WebhookId,
        page: PageRequest,
    ) -> Result<Option<Page<AttemptRecord>>, RepositoryError> {
        let (user, id) = (user_id.to_string(), id.0.to_string());
        let limit = i64::from(page.limit) + 1;
        let after = page
            .after
            .map(|cursor| (to_stored_time(cursor.created_at), cursor.id.to_string()));
        let rows: Option<Vec<AttemptRow>> = with_transaction!(self, |conn, run| {
            let mine: i64 = run!(
                webhook_endpoints::table
                    .find(&id)
                    .filter(webhook_endpoints::user_id.eq(&user))
                    .count(),
                get_result,
                conn
            )?;
            if mine == 0 {
                return Ok(None);
            }
            let mut query = webhook_attempts::table
                .filter(webhook_attempts::endpoint_id.eq(&id))
                .order((
                    webhook_attempts::attempted_at.desc(),
                    webhook_attempts::id.desc(),
                ))
                .limit(limit)
                .select(AttemptRow::as_select())
                .into_boxed();
            if let Some((at, after_id)) = &after {
                query = query.filter(
                    webhook_attempts::attempted_at
                        .lt(*at)
                        .or(webhook_attempts::attempted_at
                            .eq(*at)
                            .and(webhook_attempts::id.lt(after_id.clone()))),
                );
            }
            run!(query, load, conn).map(Some)
        })?;
        let Some(mut rows) = rows else {
            return Ok(None);
        };
        let more = rows.len() > usize::from(page.limit);
        rows.truncate(usize::from(page.limit));
        let items: Vec<AttemptRecord> = rows
            .into_iter()
            .map(AttemptRow::record)
            .collect::<Result<_, _>>()?;
        let next = if more {
            items.last().map(|last| Cursor {
                created_at: last.attempted_at,
                id: last.id,
            })
        } else {
            None
        };
        Ok(Some(Page { items, next }))
    }
}
