//! `GET /images/…`: images kept on local disk, read through the storage port. Only paths of
//! the exact shape images are stored under (`<yyyy>/<mm>/<dd>/gen_<uuid>.<png|jpg|webp>`) name
//! anything; everything else is a JSON 404. The content type is that of the bytes; a
//! generated image never changes, so answers are cacheable for a year and carry an ETag
//! (from the file's size and modification time) that conditional requests are checked
//! against.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use nb_domain::generation::{FetchedImage, ObjectKey};
use time::format_description::well_known::Rfc2822;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Raw bytes: how binary bodies (images) are documented.
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

fn no_such_image() -> ApiError {
    ApiError::not_found("not_found", "There is no such image.")
}

/// A strong validator that changes whenever the stored object could have.
fn entity_tag(image: &FetchedImage) -> String {
    format!(
        "\"{:x}-{:x}\"",
        image.bytes.len(),
        image.last_modified.unix_timestamp_nanos()
    )
}

/// HTTP-date (RFC 9110 §5.6.7), always in GMT.
fn http_date(image: &FetchedImage) -> Option<String> {
    let formatted = image.last_modified.format(&Rfc2822).ok()?;
    Some(formatted.replace("+0000", "GMT"))
}

fn matches_a_tag(request: &HttpRequest, tag: &str) -> bool {
    request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == "*" || candidate == tag)
}

/// A stored image (local storage only), cacheable for a year.
#[utoipa::path(get, path = "/images/{tail}", tag = "generation",
    params(("tail" = String, Path, description = "`<yyyy>/<mm>/<dd>/gen_<uuid>.<png|jpg|webp>`")),
    responses(
        (status = 200, description = "The image", content(
            (Binary = "image/png"),
            (Binary = "image/jpeg"),
            (Binary = "image/webp"),
        )),
        (status = 304, description = "Not modified (`If-None-Match` matched the ETag)"),
        (status = 404, description = "No such image", body = ErrorBody),
    ))]
pub(crate) async fn serve(
    state: web::Data<AppState>,
    request: HttpRequest,
    tail: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let storage = state.served_images.as_ref().ok_or_else(no_such_image)?;
    let (key, _) = ObjectKey::parse_image_path(&tail).ok_or_else(no_such_image)?;
    let image = storage
        .fetch(&key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(no_such_image)?;
    let tag = entity_tag(&image);
    let not_modified = matches_a_tag(&request, &tag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, tag))
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
    if let Some(date) = http_date(&image) {
        response.insert_header((header::LAST_MODIFIED, date));
    }
    if not_modified {
        return Ok(response.finish());
    }
    Ok(response
        .content_type(image.content_type.as_str())
        .body(image.bytes))
}
