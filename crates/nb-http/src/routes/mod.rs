//! The HTTP routes. Handlers parse the request into domain values, call one service, and
//! shape the answer; errors go through `ApiError`.

mod accounts;
mod api_keys;
mod generations;
mod images;
mod ops;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/auth/register")
            .route(web::post().to(accounts::register))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/auth/login")
            .route(web::post().to(accounts::login))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/auth/me")
            .route(web::get().to(accounts::me))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/keys")
            .route(web::get().to(api_keys::list))
            .route(web::post().to(api_keys::create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/keys/{key_id}")
            .route(web::delete().to(api_keys::revoke))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/generate")
            .route(web::post().to(generations::generate))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/images/{tail:.+}")
            .route(web::get().to(images::serve))
            .route(web::head().to(images::serve))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(ops::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(ops::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(ops::metrics))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/usage")
            .route(web::get().to(generations::usage))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not supported on {}.", req.method(), req.path()),
    ))
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "not_found",
        format!("There is nothing at {}.", req.path()),
    ))
}
