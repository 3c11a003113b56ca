//! Request bodies: JSON only, bounded in size, and every failure a clear JSON error.

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use nb_domain::idempotency::RequestFingerprint;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;
use crate::state::AppState;

/// The body limit when no application state says otherwise.
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

pub fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The request body is larger than the limit of {limit} bytes."),
        ),
        JsonPayloadError::Deserialize(error) if error.is_data() => {
            let message = error.to_string();
            let field = field_named_in(&message);
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!("The request body does not have the expected fields: {message}."),
            )
            .with_field(field)
        }
        JsonPayloadError::Payload(error)
            if crate::middleware::body_timeout::is_body_timeout(&error) =>
        {
            body_timed_out()
        }
        JsonPayloadError::Deserialize(error) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_json",
            format!("The request body is not valid JSON: {error}."),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request body could not be read.",
        ),
    }
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

/// Reads a JSON body of at most `limit` bytes (with the JSON content type) into a document.
fn read_document(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> LocalBoxFuture<'static, Result<serde_json::Value, ApiError>> {
    let body = web::JsonBody::<serde_json::Value>::new(req, payload, None, true).limit(limit);
    Box::pin(async move { body.await.map_err(json_error) })
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
        let document = read_document(req, payload, limit);
        Box::pin(async move { Ok(Self(typed(document.await?)?)) })
    }
}

/// A generating request's JSON body (at most `limit` bytes), with the request's fingerprint
/// when it carries an `Idempotency-Key` (computed from the document, so key order and
/// whitespace do not matter).
fn fingerprinted<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> LocalBoxFuture<'static, Result<(T, Option<RequestFingerprint>), actix_web::Error>> {
    let document = read_document(req, payload, limit);
    let wants_fingerprint = crate::generation_flow::idempotency::carries_key(req);
    let (method, path) = (req.method().clone(), req.path().to_owned());
    Box::pin(async move {
        let document = document.await?;
        let fingerprint = wants_fingerprint.then(|| {
            crate::generation_flow::idempotency::json_fingerprint(method.as_str(), &path, &document)
        });
        Ok((typed(document)?, fingerprint))
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
#[derive(Debug)]
pub struct GenerationJsonWithImages<T> {
    pub body: T,
    pub fingerprint: Option<RequestFingerprint>,
}

impl<T: DeserializeOwned + 'static> FromRequest for GenerationJsonWithImages<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).map_or(DEFAULT_MAX_BODY_BYTES, |state| {
            state.server.max_body_bytes + state.input_images.max_total_bytes.div_ceil(3) * 4
        });
        let read = fingerprinted(req, payload, limit);
        Box::pin(async move {
            let (body, fingerprint) = read.await?;
            Ok(Self { body, fingerprint })
        })
    }
}

/// A body must be a JSON object: serde would also read a struct from an array of its field
/// values (`["a banana", null]`), which no client means to send.
fn typed<T: DeserializeOwned>(document: serde_json::Value) -> Result<T, ApiError> {
    if !document.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request body must be a JSON object.",
        ));
    }
    serde_path_to_error::deserialize(document).map_err(|error| {
        let path = error.path().to_string();
        let message = without_type_names(&error.inner().to_string());
        let field = if path == "." {
            field_named_in(&message)
        } else {
            Some(path)
        };
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            match &field {
                Some(field) => format!("The field `{field}` is invalid: {message}."),
                None => format!("The request body does not have the expected shape: {message}."),
            },
        )
        .with_field(field)
    })
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
