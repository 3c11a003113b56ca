//! `GET /images/…`: images kept on local disk, with their own content type (from the
//! extension the storage gave them), ETag and Last-Modified, long cache lifetimes (a
//! generated image never changes), and a JSON 404 for anything else: no directory listings,
//! no hidden or partial files, no way out of the images folder.

use actix_files::NamedFile;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

fn no_such_image() -> ApiError {
    ApiError::not_found("not_found", "There is no such image.")
}

/// A stored image (local storage only), cacheable for a year.
#[utoipa::path(method(get, head), path = "/images/{tail}", tag = "generation",
    params(("tail" = String, Path, description = "`<yyyy>/<mm>/<dd>/gen_<uuid>.<png|jpg|webp>`")),
    responses(
        (status = 200, description = "The image", content_type = "image/*", body = Vec<u8>),
        (status = 404, description = "No such image", body = ErrorBody),
    ))]
pub(crate) async fn serve(
    state: web::Data<AppState>,
    request: HttpRequest,
    tail: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let storage = state.local_images.as_ref().ok_or_else(no_such_image)?;
    let path = storage
        .path_of(&format!("images/{tail}"))
        .ok_or_else(no_such_image)?;
    let is_file = tokio::fs::metadata(&path)
        .await
        .is_ok_and(|metadata| metadata.is_file());
    if !is_file {
        return Err(no_such_image());
    }
    let file = NamedFile::open_async(&path)
        .await
        .map_err(|_| no_such_image())?;
    let mut response = file
        .use_etag(true)
        .use_last_modified(true)
        .into_response(&request);
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
