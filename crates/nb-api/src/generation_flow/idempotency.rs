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
use std::fmt;
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
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha256};

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

/// A JSON request's fingerprint: its method, path and body in a canonical form (object
/// members in the order of their names, no whitespace), so that two encodings of one request
/// are the same request. Read from the body's bytes as it is parsed: no document is built.
pub fn json_fingerprint(
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<RequestFingerprint, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let CanonicalDigest(digest) = CanonicalDigest::deserialize(&mut deserializer)?;
    deserializer.end()?;
    let mut builder = FingerprintBuilder::new(method, path);
    builder.piece(&digest);
    Ok(builder.finish())
}

/// The SHA-256 of a JSON value's canonical form: a tag, then the value (length-prefixed);
/// an array's items' digests in order; an object's members' names and digests sorted by
/// name (so member order does not matter, and each member is hashed once as it is read).
struct CanonicalDigest([u8; 32]);

impl CanonicalDigest {
    fn of(tag: &[u8], value: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(tag);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
        Self(hasher.finalize().into())
    }
}

impl<'de> Deserialize<'de> for CanonicalDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CanonicalVisitor)
    }
}

struct CanonicalVisitor;

impl<'de> Visitor<'de> for CanonicalVisitor {
    type Value = CanonicalDigest;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<CanonicalDigest, E> {
        Ok(CanonicalDigest::of(b"n", b""))
    }

    fn visit_bool<E>(self, flag: bool) -> Result<CanonicalDigest, E> {
        Ok(CanonicalDigest::of(if flag { b"t" } else { b"f" }, b""))
    }

    fn visit_i64<E>(self, number: i64) -> Result<CanonicalDigest, E> {
        Ok(CanonicalDigest::of(b"#", number.to_string().as_bytes()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<CanonicalDigest, E> {
        Ok(CanonicalDigest::of(b"#", number.to_string().as_bytes()))
    }

    fn visit_f64<E>(self, number: f64) -> Result<CanonicalDigest, E> {
        Ok(CanonicalDigest::of(b"#", number.to_string().as_bytes()))
    }

    fn visit_str<E>(self, text: &str) -> Result<CanonicalDigest, E> {
        Ok(CanonicalDigest::of(b"s", text.as_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<CanonicalDigest, A::Error> {
        let mut hasher = Sha256::new();
        hasher.update(b"[");
        let mut count = 0u64;
        while let Some(CanonicalDigest(item)) = items.next_element()? {
            hasher.update(item);
            count += 1;
        }
        hasher.update(count.to_be_bytes());
        Ok(CanonicalDigest(hasher.finalize().into()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CanonicalDigest, A::Error> {
        let mut members = BTreeMap::new();
        while let Some((name, CanonicalDigest(value))) = map.next_entry::<String, _>()? {
            // A name given twice keeps its last value, as a JSON document would.
            members.insert(name, value);
        }
        let mut hasher = Sha256::new();
        hasher.update(b"{");
        hasher.update((members.len() as u64).to_be_bytes());
        for (name, value) in members {
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name);
            hasher.update(value);
        }
        Ok(CanonicalDigest(hasher.finalize().into()))
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
    let mut replayed = HttpResponse::build(status);
    replayed
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")));
    // A job's 202 says where to follow it: the kept body names the generation.
    if status == StatusCode::ACCEPTED
        && let Some(id) = accepted_generation(&answer.body)
    {
        replayed
            .insert_header((
                actix_web::http::header::LOCATION,
                format!("/v1/generations/{id}"),
            ))
            .insert_header((super::prefer::PREFERENCE_APPLIED, "respond-async"));
    }
    replayed.body(answer.body)
}

/// The generation id (`gen_…`) of a kept 202's body.
fn accepted_generation(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Accepted {
        id: String,
    }
    serde_json::from_slice::<Accepted>(body)
        .ok()
        .map(|accepted| accepted.id)
        .filter(|id| nb_domain::generation::GenerationId::parse(id).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(body: &str) -> RequestFingerprint {
        json_fingerprint("POST", "/v1/generate", body.as_bytes()).unwrap()
    }

    #[test]
    fn encodings_of_one_document_have_one_fingerprint() {
        let document =
            r#"{"prompt":"a banana","n":2,"images":["aGk=","aGk="],"x":{"b":null,"a":true}}"#;
        let same = r#" { "x" : { "a" : true , "b" : null } , "images" : [ "aGk=" , "aGk=" ] ,
            "n" : 2 , "prompt" : "a \u0062anana" } "#;
        assert_eq!(fingerprint(document), fingerprint(same));
    }

    #[test]
    fn different_documents_have_different_fingerprints() {
        let base = fingerprint(r#"{"prompt":"a banana","images":["aGk=","aGk="]}"#);
        for other in [
            r#"{"prompt":"a banana","images":["aGk="]}"#,
            r#"{"prompt":"a banana","images":["aGk=aGk="]}"#,
            r#"{"prompt":"a banana","images":["aGk=","aGk="],"n":1}"#,
            r#"{"prompt":"a bananas","images":["aGk=","aGk="]}"#,
            r#"{"prompt":["a banana"],"images":["aGk=","aGk="]}"#,
            r#"{"prompt":"a banana","images":"aGk=aGk="}"#,
            r#"{"promp":"ta banana","images":["aGk=","aGk="]}"#,
        ] {
            assert_ne!(fingerprint(other), base, "{other}");
        }
        assert_ne!(
            fingerprint(r#"{"n":"1"}"#),
            fingerprint(r#"{"n":1}"#),
            "a number is not its text"
        );
        assert_ne!(
            json_fingerprint("POST", "/v1/images/generations", br#"{"n":1}"#).unwrap(),
            fingerprint(r#"{"n":1}"#),
            "the path is part of the request"
        );
    }

    #[test]
    fn only_json_has_a_fingerprint() {
        assert!(json_fingerprint("POST", "/", b"{\"a\":1} trailing").is_err());
        assert!(json_fingerprint("POST", "/", b"{\"a\":").is_err());
    }
}
