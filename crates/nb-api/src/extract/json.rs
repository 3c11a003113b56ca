//! Request bodies: JSON only, bounded in size, and every failure a clear JSON error.

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use nb_domain::idempotency::RequestFingerprint;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};

use crate::body_budget::{BodyReservation, largest_json_body};
use crate::error::ApiError;
use crate::state::AppState;

/// The body limit when no application state says otherwise.
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("The request body is larger than the limit of {limit} bytes."),
    )
}

fn payload_error(error: PayloadError) -> ApiError {
    if crate::middleware::body_timeout::is_body_timeout(&error) {
        return body_timed_out();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The request body could not be read.",
    )
}

/// 408: the client stopped sending its body (see `body_timeout`).
pub fn body_timed_out() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "The request body did not arrive in time (a long pause, or too slow as a whole); send \
         it whole, promptly.",
    )
}

/// Reads a JSON body of at most `limit` bytes (with the JSON content type), whole, into one
/// buffer: of the declared length when there is one, so that a large body is never copied
/// as its buffer grows. A declared length over the limit is refused before anything is read.
fn read_json_body(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> LocalBoxFuture<'static, Result<Bytes, ApiError>> {
    let is_json = matches!(req.mime_type(), Ok(Some(mime))
        if mime.subtype() == actix_web::mime::JSON || mime.suffix() == Some(actix_web::mime::JSON));
    if !is_json {
        return Box::pin(async {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with `Content-Type: application/json`.",
            ))
        });
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Box::pin(async move { Err(too_large(limit)) });
    }
    let mut payload = payload.take();
    Box::pin(async move {
        let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(payload_error)?;
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    })
}

fn state(req: &HttpRequest) -> Option<&web::Data<AppState>> {
    req.app_data::<web::Data<AppState>>()
}

/// A JSON body (at most `NB_MAX_BODY_BYTES`) deserialized into `T`, with the failing field
/// named in the 422 (by `serde_path_to_error`, which tracks where in the document
/// deserialization stopped).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).map_or(DEFAULT_MAX_BODY_BYTES, |state| state.server.max_body_bytes);
        let body = read_json_body(req, payload, limit);
        Box::pin(async move { Ok(Self(typed(&body.await?)?)) })
    }
}

/// A generating request's JSON body (at most `limit` bytes), with the request's fingerprint
/// when it carries an `Idempotency-Key` (of the document's canonical form, so key order and
/// whitespace do not matter). Both are read from the body's bytes: no document is built (with
/// images in base64 it would be a second copy of them), and the body is dropped once read.
fn fingerprinted<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> LocalBoxFuture<'static, Result<(T, Option<RequestFingerprint>), actix_web::Error>> {
    let body = read_json_body(req, payload, limit);
    let wants_fingerprint = crate::generation_flow::idempotency::carries_key(req);
    let (method, path) = (req.method().clone(), req.path().to_owned());
    Box::pin(async move {
        let body = body.await?;
        let typed = typed(&body)?;
        // A body that reads as `T` is valid JSON: its fingerprint cannot fail.
        let fingerprint = wants_fingerprint
            .then(|| {
                crate::generation_flow::idempotency::json_fingerprint(method.as_str(), &path, &body)
            })
            .transpose()
            .map_err(|error| malformed_json(&error))?;
        Ok((typed, fingerprint))
    })
}

/// A generating request's JSON body (at most `NB_MAX_BODY_BYTES`), see [`fingerprinted`].
#[derive(Debug)]
pub struct GenerationJson<T> {
    pub body: T,
    pub fingerprint: Option<RequestFingerprint>,
}

impl<T: DeserializeOwned + 'static> FromRequest for GenerationJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).map_or(DEFAULT_MAX_BODY_BYTES, |state| state.server.max_body_bytes);
        let read = fingerprinted(req, payload, limit);
        Box::pin(async move {
            let (body, fingerprint) = read.await?;
            Ok(Self { body, fingerprint })
        })
    }
}

/// A generating request's JSON body that may carry input images in base64:
/// `NB_MAX_BODY_BYTES` plus room for the images' total limit once encoded (a third more).
/// A large body is read only once the server-wide budget holds it (see [`body_budget`]); the
/// handler keeps the reservation while it works on the decoded images.
///
/// [`body_budget`]: crate::body_budget
#[derive(Debug)]
pub struct GenerationJsonWithImages<T> {
    pub body: T,
    pub fingerprint: Option<RequestFingerprint>,
    pub reservation: BodyReservation,
}

impl<T: DeserializeOwned + 'static> FromRequest for GenerationJsonWithImages<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let Some(state) = state(req) else {
            return Box::pin(async { Err(ApiError::internal("no application state").into()) });
        };
        let limit = largest_json_body(state.server.max_body_bytes, state.input_images);
        let reservation = match state.body_budget.reserve(req, limit) {
            Ok(reservation) => reservation,
            Err(busy) => return Box::pin(async { Err(busy.into()) }),
        };
        let read = fingerprinted(req, payload, limit);
        Box::pin(async move {
            let (body, fingerprint) = read.await?;
            Ok(Self {
                body,
                fingerprint,
                reservation,
            })
        })
    }
}

fn malformed_json(error: &serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_json",
        format!("The request body is not valid JSON: {error}."),
    )
}

/// The body deserialized into `T`, straight from its bytes (strings without escapes are
/// borrowed from them, so a field that decodes base64 never copies the text). It must be a
/// JSON object: serde would also read a struct from an array of its field values
/// (`["a banana", null]`), which no client means to send.
fn typed<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let starts_an_object = body
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|&byte| byte == b'{');
    if !starts_an_object {
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Err(error) => malformed_json(&error),
            Ok(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "The request body must be a JSON object.",
            ),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let error = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => match deserializer.end() {
            Ok(()) => return Ok(value),
            Err(error) => return Err(malformed_json(&error)),
        },
        Err(error) => error,
    };
    if !error.inner().is_data() {
        return Err(malformed_json(error.inner()));
    }
    let path = error.path().to_string();
    let message = without_type_names(&without_position(error.inner()));
    let field = if path == "." {
        field_named_in(&message)
    } else {
        Some(path)
    };
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        match &field {
            Some(field) => format!("The field `{field}` is invalid: {message}."),
            None => format!("The request body does not have the expected shape: {message}."),
        },
    )
    .with_field(field))
}

/// A data error's message without serde_json's ` at line L column C`: the field is named.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&position) {
        Some(message) => message.to_owned(),
        None => message,
    }
}

/// serde's messages name our types (`expected struct KeyLimits`): clients see what they
/// should have sent instead.
fn without_type_names(message: &str) -> String {
    match message.split_once("expected struct ") {
        Some((before, after)) => {
            let rest = after.split_once(' ').map_or("", |(_, rest)| rest);
            format!("{before}expected a JSON object {rest}")
                .trim_end()
                .to_owned()
        }
        None => message.to_owned(),
    }
}

/// serde names the field in "missing field `x`" and "unknown field `x`" messages.
fn field_named_in(message: &str) -> Option<String> {
    let rest = message.split_once("field `")?.1;
    Some(rest.split_once('`')?.0.to_owned())
}

/// A JSON body that may be left out entirely (no body at all); a body that is present must be
/// valid JSON of the right shape, with the JSON content type.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let headers = req.headers();
        let no_body = match headers.get(CONTENT_LENGTH) {
            Some(length) => length.as_bytes() == b"0",
            None => !headers.contains_key(TRANSFER_ENCODING),
        };
        if no_body {
            return Box::pin(async { Ok(Self(None)) });
        }
        let body = JsonBody::<T>::from_request(req, payload);
        Box::pin(async move { Ok(Self(Some(body.await?.0))) })
    }
}

/// A field that is present, as `null` or as a value.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_never_reach_clients() {
        assert_eq!(
            without_type_names("invalid type: integer `5`, expected struct KeyLimits at line 1"),
            "invalid type: integer `5`, expected a JSON object at line 1"
        );
        assert_eq!(
            without_type_names("invalid type: null, expected struct GenerateRequest"),
            "invalid type: null, expected a JSON object"
        );
        assert_eq!(
            without_type_names("missing field `prompt`"),
            "missing field `prompt`"
        );
    }

    #[test]
    fn serde_field_names_are_found() {
        assert_eq!(
            field_named_in("missing field `email` at line 1 column 2").as_deref(),
            Some("email")
        );
        assert_eq!(
            field_named_in("invalid type: integer `5`, expected a string"),
            None
        );
    }
}
