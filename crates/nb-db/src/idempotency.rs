//! `IdempotencyRepository` on both backends: one row per (API key, idempotency key), which
//! the primary key makes unique across instances.
//!
//! A claim is an `INSERT … ON CONFLICT DO NOTHING`; when a row is there, a conditional
//! `UPDATE` takes it over only if it expired or its running lease lapsed (the `WHERE` is
//! re-checked on the locked row, so of two takers one wins); otherwise the row is read back.
//! Completing and releasing name the lease, so a holder whose lease was taken over changes
//! nothing.

use async_trait::async_trait;
use bytes::Bytes;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nb_domain::RepositoryError;
use nb_domain::idempotency::{
    ClaimOutcome, ExistingEntry, IdempotencyLease, KeptAnswer, NewClaim, RequestFingerprint,
};
use nb_domain::ports::IdempotencyRepository;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::convert::{query_error, to_stored_time};
use crate::pool::{Database, with_connection};
use crate::schema::idempotency_keys;

const RUNNING: &str = "running";
const DONE: &str = "done";

#[derive(Insertable)]
#[diesel(table_name = idempotency_keys)]
struct NewEntryRow {
    api_key_id: String,
    key: String,
    fingerprint: String,
    state: &'static str,
    lease: String,
    created_at: PrimitiveDateTime,
    locked_until: PrimitiveDateTime,
    expires_at: PrimitiveDateTime,
}

type EntryRow = (String, String, Option<i32>, Option<String>, Option<Vec<u8>>);

fn existing(row: EntryRow) -> ExistingEntry {
    let (fingerprint, state, status, content_type, body) = row;
    let answer = match (state.as_str(), status, body) {
        (DONE, Some(status), Some(body)) => Some(KeptAnswer {
            status: u16::try_from(status).unwrap_or(500),
            content_type: content_type.unwrap_or_else(|| "application/json".to_owned()),
            body: Bytes::from(body),
        }),
        _ => None,
    };
    ExistingEntry {
        fingerprint: RequestFingerprint::from_stored(fingerprint),
        answer,
    }
}

#[async_trait]
impl IdempotencyRepository for Database {
    #[tracing::instrument(skip_all, fields(api_key_id = %claim.lease.api_key_id))]
    async fn claim(&self, claim: &NewClaim) -> Result<ClaimOutcome, RepositoryError> {
        let row = NewEntryRow {
            api_key_id: claim.lease.api_key_id.to_string(),
            key: claim.lease.key.as_str().to_owned(),
            fingerprint: claim.fingerprint.as_str().to_owned(),
            state: RUNNING,
            lease: claim.lease.lease_id.to_string(),
            created_at: to_stored_time(claim.now),
            locked_until: to_stored_time(claim.locked_until),
            expires_at: to_stored_time(claim.expires_at),
        };
        let now = row.created_at;
        let outcome = with_connection!(self, |conn| {
            async {
                let inserted = diesel::insert_into(idempotency_keys::table)
                    .values(&row)
                    .on_conflict((idempotency_keys::api_key_id, idempotency_keys::key))
                    .do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 1 {
                    return Ok(ClaimOutcome::Claimed);
                }
                let this_entry = idempotency_keys::table
                    .filter(idempotency_keys::api_key_id.eq(&row.api_key_id))
                    .filter(idempotency_keys::key.eq(&row.key));
                let taken_over = diesel::update(
                    this_entry.filter(
                        idempotency_keys::expires_at
                            .le(now)
                            .or(idempotency_keys::state
                                .eq(RUNNING)
                                .and(idempotency_keys::locked_until.le(now))),
                    ),
                )
                .set((
                    idempotency_keys::fingerprint.eq(&row.fingerprint),
                    idempotency_keys::state.eq(RUNNING),
                    idempotency_keys::lease.eq(&row.lease),
                    idempotency_keys::status.eq(None::<i32>),
                    idempotency_keys::content_type.eq(None::<String>),
                    idempotency_keys::body.eq(None::<Vec<u8>>),
                    idempotency_keys::created_at.eq(row.created_at),
                    idempotency_keys::locked_until.eq(row.locked_until),
                    idempotency_keys::expires_at.eq(row.expires_at),
                ))
                .execute(conn)
                .await?;
                if taken_over == 1 {
                    return Ok(ClaimOutcome::Claimed);
                }
                let found = this_entry
                    .select((
                        idempotency_keys::fingerprint,
                        idempotency_keys::state,
                        idempotency_keys::status,
                        idempotency_keys::content_type,
                        idempotency_keys::body,
                    ))
                    .first::<EntryRow>(conn)
                    .await
                    .optional()?;
                Ok::<_, diesel::result::Error>(found.map_or(ClaimOutcome::Vanished, |row| {
                    ClaimOutcome::Existing(existing(row))
                }))
            }
            .await
        })?;
        outcome.map_err(query_error)
    }

    #[tracing::instrument(skip_all, fields(api_key_id = %lease.api_key_id))]
    async fn complete(
        &self,
        lease: &IdempotencyLease,
        answer: &KeptAnswer,
        expires_at: OffsetDateTime,
    ) -> Result<bool, RepositoryError> {
        let (api_key_id, key, lease_id) = (
            lease.api_key_id.to_string(),
            lease.key.as_str().to_owned(),
            lease.lease_id.to_string(),
        );
        let (status, content_type, body) = (
            i32::from(answer.status),
            answer.content_type.clone(),
            answer.body.to_vec(),
        );
        let expires_at = to_stored_time(expires_at);
        let updated = with_connection!(self, |conn| {
            diesel::update(
                idempotency_keys::table
                    .filter(idempotency_keys::api_key_id.eq(&api_key_id))
                    .filter(idempotency_keys::key.eq(&key))
                    .filter(idempotency_keys::lease.eq(&lease_id))
                    .filter(idempotency_keys::state.eq(RUNNING)),
            )
            .set((
                idempotency_keys::state.eq(DONE),
                idempotency_keys::status.eq(status),
                idempotency_keys::content_type.eq(&content_type),
                idempotency_keys::body.eq(&body),
                idempotency_keys::expires_at.eq(expires_at),
            ))
            .execute(conn)
            .await
        })?;
        updated.map(|count| count == 1).map_err(query_error)
    }

    #[tracing::instrument(skip_all, fields(api_key_id = %lease.api_key_id))]
    async fn release(&self, lease: &IdempotencyLease) -> Result<(), RepositoryError> {
        let (api_key_id, key, lease_id) = (
            lease.api_key_id.to_string(),
            lease.key.as_str().to_owned(),
            lease.lease_id.to_string(),
        );
        let deleted = with_connection!(self, |conn| {
            diesel::delete(
                idempotency_keys::table
                    .filter(idempotency_keys::api_key_id.eq(&api_key_id))
                    .filter(idempotency_keys::key.eq(&key))
                    .filter(idempotency_keys::lease.eq(&lease_id))
                    .filter(idempotency_keys::state.eq(RUNNING)),
            )
            .execute(conn)
            .await
        })?;
        deleted.map(|_| ()).map_err(query_error)
    }

    #[tracing::instrument(skip(self))]
    async fn delete_expired(&self, now: OffsetDateTime) -> Result<u64, RepositoryError> {
        let now = to_stored_time(now);
        let deleted = with_connection!(self, |conn| {
            diesel::delete(idempotency_keys::table.filter(idempotency_keys::expires_at.le(now)))
                .execute(conn)
                .await
        })?;
        deleted.map(|count| count as u64).map_err(query_error)
    }
}
