//! `Idempotency-Key` on the generating routes: the glue between a request and the domain's
//! [`Idempotency`](nb_domain::idempotency::Idempotency) service.
//!
//! A route reads and checks its request first (so requests refused before any work are never
//! kept), then runs its work through [`idempotent`]: with a key, the work runs only when this
//! request claims the key; its answer is kept when it is worth replaying (a success, or a
//! content rejection: the same request would be refused again), and otherwise the claim is
//! released so that a retry runs afresh. A request abandoned midway (the client went away)
//! releases its claim too.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::idempotency::{
    Claim, FingerprintBuilder, Idempotency, IdempotencyKey, IdempotencyLease, KeptAnswer,
    RequestFingerprint,
};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Error codes whose answers are kept: the same request would get them again.
const KEPT_ERROR_CODES: [&str; 1] = ["content_rejected"];

/// Whether the request carries an `Idempotency-Key` (valid or not).
pub fn carries_key(request: &HttpRequest) -> bool {
    request.headers().contains_key(IDEMPOTENCY_KEY)
}

/// The request's `Idempotency-Key`, if any; a malformed one, or more than one, is a 400.
pub fn key_of(request: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut sent = request.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = sent.next() else {
        return Ok(None);
    };
    if sent.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Send one Idempotency-Key header, not several.",
        )
        .with_field(Some("Idempotency-Key".into())));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                format!("{error}."),
            )
            .with_field(Some("Idempotency-Key".into()))
        })
}

/// A JSON request's fingerprint: its method, path and document in a canonical form (object
/// keys sorted, no whitespace), so that two encodings of one request are the same request.
pub fn json_fingerprint(method: &str, path: &str, document: &Value) -> RequestFingerprint {
    let mut builder = FingerprintBuilder::new(method, path);
    canonical(document, &mut builder);
    builder.finish()
}

fn canonical(value: &Value, builder: &mut FingerprintBuilder) {
    match value {
        Value::Null => {
            builder.piece(b"n");
        }
        Value::Bool(flag) => {
            builder.piece(if *flag { b"t" } else { b"f" });
        }
        Value::Number(number) => {
            builder.piece(b"#").piece(number.to_string().as_bytes());
        }
        Value::String(text) => {
            builder.piece(b"s").piece(text.as_bytes());
        }
        Value::Array(items) => {
            builder
                .piece(b"[")
                .piece(&(items.len() as u64).to_be_bytes());
            for item in items {
                canonical(item, builder);
            }
        }
        Value::Object(fields) => {
            let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
            builder
                .piece(b"{")
                .piece(&(sorted.len() as u64).to_be_bytes());
            for (name, value) in sorted {
                builder.piece(name.as_bytes());
                canonical(value, builder);
            }
        }
    }
}

/// A multipart request's fingerprint: its text fields sorted by name, then its files in
/// order (the boundary and the parts' order among text fields do not matter).
pub fn form_fingerprint<'a>(
    request: &HttpRequest,
    fields: impl IntoIterator<Item = (&'a String, &'a String)>,
    images: &[Bytes],
    mask: Option<&Bytes>,
) -> RequestFingerprint {
    let mut builder = FingerprintBuilder::new(request.method().as_str(), request.path());
    let sorted: BTreeMap<&String, &String> = fields.into_iter().collect();
    builder.piece(&(sorted.len() as u64).to_be_bytes());
    for (name, value) in sorted {
        builder.piece(name.as_bytes()).piece(value.as_bytes());
    }
    builder.piece(&(images.len() as u64).to_be_bytes());
    for image in images {
        builder.piece(image);
    }
    match mask {
        Some(mask) => builder.piece(b"mask").piece(mask),
        None => builder.piece(b"no mask"),
    };
    builder.finish()
}

/// Releases a claim when dropped before it was settled: the request was abandoned midway.
struct ClaimGuard {
    service: Arc<dyn Idempotency>,
    lease: Option<IdempotencyLease>,
}

impl ClaimGuard {
    fn settle(&mut self) -> Option<IdempotencyLease> {
        self.lease.take()
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let service = self.service.clone();
        runtime.spawn(async move {
            if let Err(error) = service.release(&lease).await {
                tracing::warn!(%error, "could not release an abandoned idempotency claim");
            }
        });
    }
}

/// Runs `work` under the request's `Idempotency-Key` (when it has one): see the module's
/// documentation. `render` turns an error into this API's answer.
pub async fn idempotent(
    state: &AppState,
    caller: &AuthenticatedApiKey,
    key: Option<IdempotencyKey>,
    fingerprint: Option<RequestFingerprint>,
    render: impl Fn(ApiError) -> HttpResponse,
    work: impl Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let (Some(key), Some(fingerprint)) = (key, fingerprint) else {
        return Ok(work.await.unwrap_or_else(render));
    };
    let service = &state.idempotency;
    let lease = match service.begin(caller.key_id, key, fingerprint).await {
        Ok(Claim::Proceed(lease)) => lease,
        Ok(Claim::Replay(answer)) => return Ok(replay(answer)),
        Err(error) => return Err(ApiError::from(error)),
    };
    let mut guard = ClaimGuard {
        service: service.clone(),
        lease: Some(lease),
    };
    let response = work.await.unwrap_or_else(render);
    let Some(lease) = guard.settle() else {
        return Ok(response);
    };
    if !worth_keeping(&response) {
        if let Err(error) = service.release(&lease).await {
            tracing::warn!(%error, "could not release an idempotency claim");
        }
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let body = match body.try_into_bytes() {
        Ok(bytes) => bytes,
        Err(body) => match actix_web::body::to_bytes(body).await {
            Ok(bytes) => bytes,
            Err(_) => {
                let _ = service.release(&lease).await;
                return Err(ApiError::internal("an answer's body could not be read"));
            }
        },
    };
    let answer = KeptAnswer {
        status: head.status().as_u16(),
        content_type: head
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/json")
            .to_owned(),
        body: body.clone(),
    };
    // The client gets its answer even when it cannot be kept: the claim then lapses after
    // its lease, and a retry after that runs afresh.
    if let Err(error) = service.complete(&lease, &answer).await {
        tracing::warn!(%error, "could not keep an answer for its Idempotency-Key");
    }
    Ok(head.set_body(BoxBody::new(body)))
}

fn worth_keeping(response: &HttpResponse) -> bool {
    response.status().is_success()
        || response
            .extensions()
            .get::<ErrorCode>()
            .is_some_and(|code| KEPT_ERROR_CODES.contains(&code.0))
}

fn replay(answer: KeptAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let content_type = HeaderValue::from_str(&answer.content_type)
        .unwrap_or(HeaderValue::from_static("application/json"));
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")))
        .body(answer.body)
}
