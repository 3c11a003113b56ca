//! The HTTP routes. Handlers parse the request into domain values, call one service, and
//! shape the answer; errors go through `ApiError`.
//!
//! Every route is declared once, in the table below, which both registers it and lists it in
//! [`ROUTES`]; a test checks that each listed route is in the OpenAPI document. `HEAD` is
//! answered for every `GET` route (see `request_context`).

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod generate;
pub mod history;
pub mod images;
pub mod ops;
pub mod usage;
pub mod webhooks;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use crate::error::ApiError;
use crate::middleware::request_context::SentMethod;
use crate::openai;

macro_rules! routes {
    ($($path:literal => { $($method:ident => $handler:path),+ $(,)? }),* $(,)?) => {
        /// `(path pattern, method)` of every registered route.
        pub const ROUTES: &[(&str, &str)] = &[$($(($path, stringify!($method))),+),*];

        /// Registers every route of the table, each path answering 405 for other methods.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.service(
                web::resource($path)
                    $(.route(web::$method().to($handler)))+
                    .default_service(web::to(method_not_allowed)),
            );)*
        }
    };
}

routes! {
    "/v1/auth/register" => { post => accounts::register },
    "/v1/auth/login" => { post => accounts::login },
    "/v1/auth/me" => { get => accounts::me, delete => accounts::delete_account },
    "/v1/auth/logout" => { post => accounts::logout },
    "/v1/auth/password" => { post => accounts::change_password },
    "/v1/keys" => { get => api_keys::list, post => api_keys::create },
    "/v1/keys/{key_id}" => { get => api_keys::get, patch => api_keys::update, delete => api_keys::revoke },
    "/v1/keys/{key_id}/roll" => { post => api_keys::roll },
    "/v1/generate" => { post => generate::generate },
    "/v1/images/generations" => { post => openai::images::generations },
    "/v1/images/edits" => { post => openai::images::edits },
    "/v1/models" => { get => openai::models::list_models },
    "/v1/models/{model}" => { get => openai::models::get_model },
    "/v1/generations" => { get => history::list },
    "/v1/generations/{generation_id}" => { get => history::get, delete => history::delete },
    "/v1/generations/{generation_id}/cancel" => { post => history::cancel },
    "/v1/webhooks" => { get => webhooks::list, post => webhooks::create },
    "/v1/webhooks/{webhook_id}" => { get => webhooks::get, patch => webhooks::update, delete => webhooks::delete },
    "/v1/webhooks/{webhook_id}/rotate" => { post => webhooks::rotate },
    "/v1/webhooks/{webhook_id}/deliveries" => { get => webhooks::deliveries },
    "/v1/webhooks/{webhook_id}/test" => { post => webhooks::send_test },
    "/v1/usage" => { get => usage::usage },
    "/v1/admin/users" => { get => admin::list_users },
    "/v1/admin/users/{user_id}" => { patch => admin::update_user },
    "/v1/admin/users/{user_id}/keys" => { get => admin::list_user_keys },
    "/v1/admin/audit" => { get => admin::audit },
    "/images/{tail:.+}" => { get => images::serve },
    "/" => { get => ops::front_door },
    "/healthz" => { get => ops::healthz },
    "/readyz" => { get => ops::readyz },
    "/metrics" => { get => ops::metrics },
    "/openapi.json" => { get => ops::openapi_document },
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let method = req
        .extensions()
        .get::<SentMethod>()
        .map_or_else(|| req.method().clone(), |sent| sent.0.clone());
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not supported on {}.", req.path()),
    ))
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "not_found",
        format!("There is nothing at {}.", req.path()),
    ))
}
