//! `multipart/form-data` as the OpenAI SDKs send an edit: text fields, one `image` part or
//! several `image[]` parts, an optional `mask`. Read as it streams in, within bounds: at most
//! [`MAX_PARTS`] parts, text fields of at most [`MAX_TEXT_FIELD_BYTES`], each image within the
//! per-image limit, and the whole body within the images' total limit plus room for the text,
//! so a client can make the server hold no more than that, whatever it sends.

use std::cell::Cell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::HttpRequest;
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_LENGTH;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use nb_domain::generation::InputImageLimits;

use crate::body_budget::largest_form_body;
use crate::error::ApiError;

/// The most parts a form may have.
pub const MAX_PARTS: usize = 64;
/// The longest text field (a prompt is at most 10,000 characters, 40 KB of UTF-8).
pub const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;

/// A form's contents.
#[derive(Debug, Default)]
pub struct EditForm {
    /// Text fields by name (the last one wins when a name repeats).
    pub fields: HashMap<String, String>,
    /// `image` and `image[]` parts, in order.
    pub images: Vec<Bytes>,
    pub mask: Option<Bytes>,
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        .with_field(Some("image".into()))
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_multipart", message)
}

/// The body, failing once more than `limit` bytes have come, and telling when it has ended.
struct Capped {
    inner: Payload,
    remaining: usize,
    ended: Rc<Cell<bool>>,
}

impl Stream for Capped {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match self.remaining.checked_sub(chunk.len()) {
                Some(remaining) => {
                    self.remaining = remaining;
                    Poll::Ready(Some(Ok(chunk)))
                }
                None => Poll::Ready(Some(Err(PayloadError::Overflow))),
            },
            Poll::Ready(None) => {
                self.ended.set(true);
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// The next item of a multipart stream. actix-multipart can wait for ever on a body that
/// ends inside a boundary (it asks for more data after the end, and nothing will wake it):
/// once the body has ended, waiting means the form is incomplete.
async fn next_or_incomplete<S>(
    stream: &mut S,
    ended: &Cell<bool>,
) -> Option<Result<S::Ok, MultipartError>>
where
    S: Stream<Item = Result<<S as TryStreamAlias>::Ok, MultipartError>> + TryStreamAlias + Unpin,
{
    std::future::poll_fn(|cx| match Pin::new(&mut *stream).poll_next(cx) {
        Poll::Pending if ended.get() => Poll::Ready(Some(Err(MultipartError::Incomplete))),
        other => other,
    })
    .await
}

/// Names a stream's success type, for [`next_or_incomplete`].
trait TryStreamAlias {
    type Ok;
}

impl TryStreamAlias for Multipart {
    type Ok = Field;
}

impl TryStreamAlias for Field {
    type Ok = Bytes;
}

fn multipart_error(error: MultipartError, body_limit: usize) -> ApiError {
    match error {
        MultipartError::Payload(PayloadError::Overflow) => too_large(format!(
            "The request body is larger than the limit of {body_limit} bytes."
        )),
        MultipartError::Payload(payload)
            if crate::middleware::body_timeout::is_body_timeout(&payload) =>
        {
            crate::extract::json::body_timed_out()
        }
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the edit as `multipart/form-data` with a boundary.",
        ),
        MultipartError::BoundaryMissing => {
            malformed("The multipart body has no boundary in its Content-Type.")
        }
        MultipartError::Incomplete => malformed("The multipart body ends before its last part."),
        other => malformed(format!("The multipart body cannot be read: {other}.")),
    }
}

async fn read_part(
    field: &mut Field,
    ended: &Cell<bool>,
    limit: usize,
    body_limit: usize,
    over: impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = next_or_incomplete(field, ended).await {
        let chunk = chunk.map_err(|error| multipart_error(error, body_limit))?;
        if bytes.len() + chunk.len() > limit {
            return Err(over());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

/// Reads and drops what is left of a form (the body's bound still applies).
async fn drain(multipart: &mut Multipart, ended: &Cell<bool>) {
    while let Some(Ok(mut field)) = next_or_incomplete(multipart, ended).await {
        while let Some(Ok(_)) = next_or_incomplete(&mut field, ended).await {}
    }
}

/// Reads the whole form, within the limits.
pub async fn read_edit_form(
    request: &HttpRequest,
    payload: Payload,
    limits: InputImageLimits,
) -> Result<EditForm, ApiError> {
    let body_limit = largest_form_body(limits);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > body_limit) {
        return Err(too_large(format!(
            "The request body is larger than the limit of {body_limit} bytes."
        )));
    }
    let ended = Rc::new(Cell::new(false));
    let capped = Capped {
        inner: payload,
        remaining: body_limit,
        ended: ended.clone(),
    };
    let mut multipart = Multipart::new(request.headers(), capped);
    let mut form = EditForm::default();
    let mut parts = 0;
    let mut image_bytes = 0usize;
    while let Some(field) = next_or_incomplete(&mut multipart, &ended).await {
        let mut field = field.map_err(|error| multipart_error(error, body_limit))?;
        parts += 1;
        if parts > MAX_PARTS {
            // Read the rest (within the body's bound) so that the client, still sending,
            // gets the answer rather than a reset connection.
            drop(field);
            drain(&mut multipart, &ended).await;
            return Err(malformed(format!(
                "A form may have at most {MAX_PARTS} parts."
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" | "image[]" | "mask" => {
                if name != "mask" && form.images.len() >= limits.max_images {
                    drop(field);
                    drain(&mut multipart, &ended).await;
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "validation_failed",
                        format!("At most {} images may be sent.", limits.max_images),
                    )
                    .with_field(Some("image".into())));
                }
                let max_image = limits.max_image_bytes;
                let bytes = read_part(&mut field, &ended, max_image, body_limit, || {
                    too_large(format!("Each image may be at most {max_image} bytes."))
                })
                .await?;
                image_bytes += bytes.len();
                if image_bytes > limits.max_total_bytes {
                    return Err(too_large(format!(
                        "The images together may be at most {} bytes.",
                        limits.max_total_bytes
                    )));
                }
                if name == "mask" {
                    form.mask = Some(bytes);
                } else {
                    form.images.push(bytes);
                }
            }
            _ => {
                let bytes = read_part(&mut field, &ended, MAX_TEXT_FIELD_BYTES, body_limit, || {
                    malformed(format!(
                        "The field `{name}` is longer than {MAX_TEXT_FIELD_BYTES} bytes."
                    ))
                    .with_field(Some(name.clone()))
                })
                .await?;
                // Files the SDK may send that this server does not use (`markup`) are read
                // and dropped; text fields must be UTF-8.
                if field
                    .content_disposition()
                    .and_then(|cd| cd.get_filename())
                    .is_some()
                {
                    continue;
                }
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    malformed(format!("The field `{name}` is not UTF-8 text."))
                        .with_field(Some(name.clone()))
                })?;
                form.fields.insert(name, text);
            }
        }
    }
    Ok(form)
}
