//! `JobRepository` on both backends: the durable queue of asynchronous generations.
//!
//! A job row sits beside its generation row from submission until it ends. A worker claims
//! the oldest due job in one transaction — on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so
//! workers of every instance take different jobs without waiting on each other; on SQLite
//! the transaction's write lock serialises claims — and writes a fresh lease token and
//! expiry. Every later change (renew, retry, succeed, fail) is conditional on that token:
//! once a lease has run out and another worker has claimed the job, the first worker's
//! writes change nothing. Succeeding and failing are each one transaction (the job row
//! deleted, the generation row written, usage counted, the reservation settled), so a job's
//! image is counted once and its reservation settled once, whatever the retries.
//!
//! The queue is written on `SKIP LOCKED` by hand rather than with a job-queue crate: the
//! maintained ones (apalis, graphile_worker, sqlxmq, fang) are built on sqlx or their own
//! PostgreSQL schema, none runs on diesel or on SQLite, and the ending of a job must commit
//! in the same transaction as the generation's usage and quota counters, which are ours.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::accounts::UserId;
use nb_domain::api_keys::{ApiKeyId, AuthenticatedApiKey, KeyMode};
use nb_domain::generation::{
    ClaimedJob, GenerationId, GenerationRecord, ImageFormat, JobOutput, JobRequest, NewJob,
};
use nb_domain::money::Usd;
use nb_domain::ports::JobRepository;
use nb_domain::quota::{Ask, QuotaPeriod, QuotaScope, Reservation, Settlement};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use crate::convert::{from_stored_time, parse_stored_id, to_stored_time};
use crate::generations::rows::{GenerationRow, enqueue_events, increment_usage};
use crate::pool::{Database, with_connection, with_transaction};
use crate::quota::settle_counters;
use crate::schema::{generation_jobs, generations, usage_daily};

/// The request column.
#[derive(Serialize, Deserialize)]
struct RequestJson {
    prompt: String,
    size: String,
    aspect_ratio: Option<String>,
    resolution: String,
    style: String,
    model: String,
    /// Base64.
    images: Vec<String>,
    mask: Option<String>,
    previous: Option<String>,
    output: Option<OutputJson>,
    #[serde(default)]
    fallbacks: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct OutputJson {
    format: String,
    quality: u8,
    quality_asked: bool,
}

impl From<&JobRequest> for RequestJson {
    fn from(request: &JobRequest) -> Self {
        Self {
            prompt: request.prompt.clone(),
            size: request.size.clone(),
            aspect_ratio: request.aspect_ratio.clone(),
            resolution: request.resolution.clone(),
            style: request.style.clone(),
            model: request.model.clone(),
            images: request
                .images
                .iter()
                .map(|bytes| BASE64.encode(bytes))
                .collect(),
            mask: request.mask.as_ref().map(|bytes| BASE64.encode(bytes)),
            previous: request.previous.map(|id| id.to_string()),
            output: request.output.map(|output| OutputJson {
                format: output.format.to_owned(),
                quality: output.quality,
                quality_asked: output.quality_asked,
            }),
            fallbacks: request.fallbacks.clone(),
        }
    }
}

impl RequestJson {
    fn into_request(self) -> Result<JobRequest, RepositoryError> {
        let decode = |text: &str| {
            BASE64
                .decode(text)
                .map(Bytes::from)
                .map_err(RepositoryError::unexpected)
        };
        Ok(JobRequest {
            prompt: self.prompt,
            size: self.size,
            aspect_ratio: self.aspect_ratio,
            resolution: self.resolution,
            style: self.style,
            model: self.model,
            images: self
                .images
                .iter()
                .map(|text| decode(text))
                .collect::<Result<_, _>>()?,
            mask: self.mask.as_deref().map(decode).transpose()?,
            previous: self
                .previous
                .as_deref()
                .map(GenerationId::parse)
                .transpose()
                .map_err(RepositoryError::unexpected)?,
            output: self
                .output
                .map(|output| {
                    ImageFormat::from_extension(&output.format)
                        .map(|format| JobOutput {
                            format: format.extension(),
                            quality: output.quality,
                            quality_asked: output.quality_asked,
                        })
                        .ok_or_else(|| RepositoryError::unexpected("a job's output format"))
                })
                .transpose()?,
            fallbacks: self.fallbacks,
        })
    }
}

/// The reservation column.
#[derive(Serialize, Deserialize)]
struct ReservationJson {
    images: u64,
    estimate_nano_usd: i64,
    /// Unix nanoseconds.
    at: i128,
    /// `(scope, period)` pairs: `("key", "day")`.
    counted: Vec<(String, String)>,
}

impl From<&Reservation> for ReservationJson {
    fn from(reservation: &Reservation) -> Self {
        Self {
            images: reservation.ask.images,
            estimate_nano_usd: reservation.ask.estimate.nanos(),
            at: reservation.at.unix_timestamp_nanos(),
            counted: reservation
                .counted
                .iter()
                .map(|(scope, period)| (scope.as_str().to_owned(), period.as_str().to_owned()))
                .collect(),
        }
    }
}

impl ReservationJson {
    fn into_reservation(
        self,
        key_id: ApiKeyId,
        user_id: UserId,
    ) -> Result<Reservation, RepositoryError> {
        let counted = self
            .counted
            .iter()
            .map(|(scope, period)| {
                let scope = match scope.as_str() {
                    "key" => QuotaScope::Key,
                    "account" => QuotaScope::Account,
                    _ => return Err(RepositoryError::unexpected("a reservation's scope")),
                };
                let period = match period.as_str() {
                    "day" => QuotaPeriod::Day,
                    "month" => QuotaPeriod::Month,
                    _ => return Err(RepositoryError::unexpected("a reservation's period")),
                };
                Ok((scope, period))
            })
            .collect::<Result<_, _>>()?;
        Ok(Reservation {
            key_id,
            user_id,
            ask: Ask {
                images: self.images,
                estimate: Usd::from_nanos(self.estimate_nano_usd),
            },
            at: OffsetDateTime::from_unix_timestamp_nanos(self.at)
                .map_err(RepositoryError::unexpected)?,
            counted,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = generation_jobs)]
struct NewJobRow {
    id: String,
    user_id: String,
    api_key_id: String,
    mode: String,
    quota_applies: bool,
    request: String,
    reservation: Option<String>,
    state: &'static str,
    attempts: i32,
    run_after: PrimitiveDateTime,
    created_at: PrimitiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = generation_jobs)]
struct JobRow {
    id: String,
    user_id: String,
    api_key_id: String,
    mode: String,
    quota_applies: bool,
    request: String,
    reservation: Option<String>,
    attempts: i32,
    last_error_code: Option<String>,
    created_at: PrimitiveDateTime,
}

impl JobRow {
    fn into_claimed(self, lease: Uuid) -> Result<ClaimedJob, RepositoryError> {
        let key_id = ApiKeyId(parse_stored_id(&self.api_key_id)?);
        let user_id = UserId(parse_stored_id(&self.user_id)?);
        let request: RequestJson =
            serde_json::from_str(&self.request).map_err(RepositoryError::unexpected)?;
        let reservation = self
            .reservation
            .as_deref()
            .map(|json| stored_reservation(json, &self.api_key_id, user_id))
            .transpose()?;
        Ok(ClaimedJob {
            id: GenerationId::parse(&self.id).map_err(RepositoryError::unexpected)?,
            caller: AuthenticatedApiKey {
                key_id,
                user_id,
                per_minute: None,
                quota_applies: self.quota_applies,
                mode: KeyMode::parse(&self.mode).map_err(RepositoryError::unexpected)?,
            },
            request: request.into_request()?,
            reservation,
            created_at: from_stored_time(self.created_at),
            attempt: u32::try_from(self.attempts).map_err(RepositoryError::unexpected)?,
            last_error_code: self.last_error_code,
            lease,
        })
    }
}

/// The job `$id` while the lease `$token` holds it.
macro_rules! held_job {
    ($id:expr, $token:expr) => {
        generation_jobs::table
            .find($id)
            .filter(generation_jobs::lease_token.eq($token))
    };
}

/// Takes the job `$id` out of the queue in the caller's transaction while the lease `$token`
/// still holds it; else ends the transaction with `Ok(false)`, having changed nothing.
macro_rules! end_held_job {
    ($conn:expr, $run:ident, $id:expr, $token:expr) => {
        if $run!(diesel::delete(held_job!($id, $token)), execute, $conn)? == 0 {
            return Ok(false);
        }
    };
}

/// A reservation as its column holds it.
fn stored_reservation(
    json: &str,
    key_id: &str,
    user_id: UserId,
) -> Result<Reservation, RepositoryError> {
    serde_json::from_str::<ReservationJson>(json)
        .map_err(RepositoryError::unexpected)?
        .into_reservation(ApiKeyId(parse_stored_id(key_id)?), user_id)
}

/// The id of the oldest due job, per backend (`$1`/`?`: now).
#[derive(QueryableByName)]
struct DueJob {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

const DUE_POSTGRES: &str = "SELECT id FROM generation_jobs \
     WHERE (state = 'queued' AND run_after <= $1) OR (state = 'running' AND lease_until < $1) \
     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED";
const DUE_SQLITE: &str = "SELECT id FROM generation_jobs \
     WHERE (state = 'queued' AND run_after <= ?1) OR (state = 'running' AND lease_until < ?1) \
     ORDER BY created_at LIMIT 1";

const OVERDUE_POSTGRES: &str = "SELECT id FROM generation_jobs \
     WHERE state = 'queued' AND attempts = 0 AND created_at < $1 \
     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED";
const OVERDUE_SQLITE: &str = "SELECT id FROM generation_jobs \
     WHERE state = 'queued' AND attempts = 0 AND created_at < ?1 ORDER BY created_at LIMIT 1";

impl Database {
    /// Takes the job `select` finds (binding `bound` as its one parameter), marking it and its
    /// generation `running` under a new lease and counting the attempt.
    async fn take_job(
        &self,
        select: &'static str,
        bound: PrimitiveDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<ClaimedJob>, RepositoryError> {
        let until = to_stored_time(lease_until);
        let lease = Uuid::new_v4();
        let token = lease.to_string();
        let claimed = with_transaction!(self, |conn, run| {
            let found: Vec<DueJob> = run!(
                diesel::sql_query(select).bind::<diesel::sql_types::Timestamp, _>(bound),
                load,
                conn
            )?;
            let Some(DueJob { id }) = found.into_iter().next() else {
                return Ok(None);
            };
            run!(
                diesel::update(generation_jobs::table.find(&id)).set((
                    generation_jobs::state.eq("running"),
                    generation_jobs::attempts.eq(generation_jobs::attempts + 1),
                    generation_jobs::lease_token.eq(&token),
                    generation_jobs::lease_until.eq(until),
                )),
                execute,
                conn
            )?;
            run!(
                diesel::update(generations::table.find(&id)).set(generations::status.eq("running")),
                execute,
                conn
            )?;
            let row: JobRow = run!(
                generation_jobs::table.find(&id).select(JobRow::as_select()),
                get_result,
                conn
            )?;
            Ok(Some(row))
        })?;
        claimed.map(|row| row.into_claimed(lease)).transpose()
    }
}

#[async_trait]
impl JobRepository for Database {
    #[tracing::instrument(skip_all, fields(generation_id = %job.id))]
    async fn submit(&self, job: &NewJob) -> Result<(), RepositoryError> {
        let generation = GenerationRow::queued(job);
        let request = serde_json::to_string(&RequestJson::from(&job.request))
            .map_err(RepositoryError::unexpected)?;
        let reservation = job
            .reservation
            .as_ref()
            .map(|reservation| serde_json::to_string(&ReservationJson::from(reservation)))
            .transpose()
            .map_err(RepositoryError::unexpected)?;
        let row = NewJobRow {
            id: job.id.to_string(),
            user_id: job.caller.user_id.to_string(),
            api_key_id: job.caller.key_id.to_string(),
            mode: job.caller.mode.as_str().to_owned(),
            quota_applies: job.caller.quota_applies,
            request,
            reservation,
            state: "queued",
            attempts: 0,
            run_after: to_stored_time(job.created_at),
            created_at: to_stored_time(job.created_at),
        };
        with_transaction!(self, |conn, run| {
            run!(
                diesel::insert_into(generations::table).values(&generation),
                execute,
                conn
            )?;
            run!(
                diesel::insert_into(generation_jobs::table).values(&row),
                execute,
                conn
            )?;
            Ok(())
        })
    }

    #[tracing::instrument(skip_all)]
    async fn claim(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<ClaimedJob>, RepositoryError> {
        let now = to_stored_time(now);
        // A plain read first: an idle queue costs no lock (SQLite's write lock is the whole
        // database's).
        let anything_due = with_connection!(self, |conn| {
            generation_jobs::table
                .filter(
                    generation_jobs::state
                        .eq("queued")
                        .and(generation_jobs::run_after.le(now))
                        .or(generation_jobs::state
                            .eq("running")
                            .and(generation_jobs::lease_until.lt(now))),
                )
                .select(generation_jobs::id)
                .first::<String>(conn)
                .await
                .optional()
        })?
        .map_err(crate::convert::query_error)?;
        if anything_due.is_none() {
            return Ok(None);
        }
        let due = match self.pool.backend_name() {
            "postgres" => DUE_POSTGRES,
            _ => DUE_SQLITE,
        };
        self.take_job(due, now, lease_until).await
    }

    #[tracing::instrument(skip_all)]
    async fn claim_overdue(
        &self,
        submitted_before: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<ClaimedJob>, RepositoryError> {
        let cutoff = to_stored_time(submitted_before);
        let anything_overdue = with_connection!(self, |conn| {
            generation_jobs::table
                .filter(generation_jobs::state.eq("queued"))
                .filter(generation_jobs::attempts.eq(0))
                .filter(generation_jobs::created_at.lt(cutoff))
                .select(generation_jobs::id)
                .first::<String>(conn)
                .await
                .optional()
        })?
        .map_err(crate::convert::query_error)?;
        if anything_overdue.is_none() {
            return Ok(None);
        }
        let overdue = match self.pool.backend_name() {
            "postgres" => OVERDUE_POSTGRES,
            _ => OVERDUE_SQLITE,
        };
        self.take_job(overdue, cutoff, lease_until).await
    }

    #[tracing::instrument(skip_all, fields(generation_id = %job.id))]
    async fn renew(
        &self,
        job: &ClaimedJob,
        lease_until: OffsetDateTime,
    ) -> Result<bool, RepositoryError> {
        let (id, token) = (job.id.to_string(), job.lease.to_string());
        let until = to_stored_time(lease_until);
        with_transaction!(self, |conn, run| {
            let renewed = run!(
                diesel::update(held_job!(&id, &token)).set(generation_jobs::lease_until.eq(until)),
                execute,
                conn
            )?;
            Ok(renewed == 1)
        })
    }

    #[tracing::instrument(skip_all, fields(generation_id = %job.id))]
    async fn retry(
        &self,
        job: &ClaimedJob,
        error_code: &str,
        run_after: OffsetDateTime,
    ) -> Result<bool, RepositoryError> {
        let (id, token) = (job.id.to_string(), job.lease.to_string());
        let error_code = error_code.to_owned();
        let run_after = to_stored_time(run_after);
        with_transaction!(self, |conn, run| {
            let requeued = run!(
                diesel::update(held_job!(&id, &token)).set((
                    generation_jobs::state.eq("queued"),
                    generation_jobs::lease_token.eq(None::<String>),
                    generation_jobs::lease_until.eq(None::<PrimitiveDateTime>),
                    generation_jobs::last_error_code.eq(&error_code),
                    generation_jobs::run_after.eq(run_after),
                )),
                execute,
                conn
            )?;
            if requeued == 1 {
                run!(
                    diesel::update(generations::table.find(&id))
                        .set(generations::status.eq("queued")),
                    execute,
                    conn
                )?;
            }
            Ok(requeued == 1)
        })
    }

    #[tracing::instrument(skip_all, fields(generation_id = %job.id))]
    async fn succeed(
        &self,
        job: &ClaimedJob,
        record: &GenerationRecord,
        settlement: Settlement,
    ) -> Result<bool, RepositoryError> {
        let (id, token) = (job.id.to_string(), job.lease.to_string());
        let row = GenerationRow::from(record);
        let (key_id, day, cost) = row.usage_increment();
        let reservation = job.reservation.clone();
        with_transaction!(self, |conn, run| {
            end_held_job!(conn, run, &id, &token);
            run!(
                diesel::update(generations::table.find(&id)).set(&row),
                execute,
                conn
            )?;
            run!(increment_usage!(&key_id, day, 1i64, cost), execute, conn)?;
            if let Some(reservation) = &reservation {
                settle_counters!(conn, run, reservation, settlement);
            }
            enqueue_events!(conn, run, std::slice::from_ref(&id));
            Ok(true)
        })
    }

    #[tracing::instrument(skip_all, fields(generation_id = %job.id, error_code))]
    async fn fail(
        &self,
        job: &ClaimedJob,
        error_code: &str,
        latency: Duration,
        settlement: Settlement,
    ) -> Result<bool, RepositoryError> {
        let (id, token) = (job.id.to_string(), job.lease.to_string());
        let error_code = error_code.to_owned();
        let latency_ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
        let reservation = job.reservation.clone();
        with_transaction!(self, |conn, run| {
            end_held_job!(conn, run, &id, &token);
            run!(
                diesel::update(generations::table.find(&id)).set((
                    generations::status.eq("failed"),
                    generations::error_code.eq(&error_code),
                    generations::latency_ms.eq(latency_ms),
                )),
                execute,
                conn
            )?;
            if let Some(reservation) = &reservation {
                settle_counters!(conn, run, reservation, settlement);
            }
            enqueue_events!(conn, run, std::slice::from_ref(&id));
            Ok(true)
        })
    }

    #[tracing::instrument(skip(self, user_id))]
    async fn cancel(&self, user_id: UserId, id: GenerationId) -> Result<bool, RepositoryError> {
        let (id, user) = (id.to_string(), user_id.to_string());
        with_transaction!(self, |conn, run| {
            let found: Option<(String, Option<String>)> = run!(
                generation_jobs::table
                    .find(&id)
                    .filter(generation_jobs::user_id.eq(&user))
                    .filter(generation_jobs::state.eq("queued"))
                    .select((generation_jobs::api_key_id, generation_jobs::reservation)),
                get_result,
                conn
            )
            .optional()?;
            let Some((key_id, reservation)) = found else {
                return Ok(false);
            };
            // Conditional again: a worker that claimed it meanwhile wins.
            let canceled = run!(
                diesel::delete(
                    generation_jobs::table
                        .find(&id)
                        .filter(generation_jobs::state.eq("queued")),
                ),
                execute,
                conn
            )?;
            if canceled == 0 {
                return Ok(false);
            }
            run!(
                diesel::update(generations::table.find(&id))
                    .set(generations::status.eq("canceled")),
                execute,
                conn
            )?;
            if let Some(json) = reservation {
                let reservation = stored_reservation(&json, &key_id, user_id).map_err(|error| {
                    diesel::result::Error::DeserializationError(Box::new(error))
                })?;
                let settlement = reservation.settlement(0, Usd::ZERO);
                settle_counters!(conn, run, &reservation, settlement);
            }
            enqueue_events!(conn, run, std::slice::from_ref(&id));
            Ok(true)
        })
    }

    async fn depth(&self) -> Result<u64, RepositoryError> {
        let count = with_transaction!(self, |conn, run| {
            let count: i64 = run!(generation_jobs::table.count(), get_result, conn)?;
            Ok(count)
        })?;
        u64::try_from(count).map_err(RepositoryError::unexpected)
    }
}
