//! The application: every route, middleware and piece of app data in one place
//! ([`configure_app`]), and the HTTP server that runs it on a listener the composition root
//! bound ([`serve`]).

use std::net::TcpListener;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpServer, web};

use crate::extract::query::query_config;
use crate::generation_flow::idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use crate::middleware::request_context::{REQUEST_ID_HEADER, request_context};
use crate::middleware::security_headers::security_headers;
use crate::routes::ops::OpenApiDocument;
use crate::settings::CorsOrigin;
use crate::state::AppState;
use crate::{console, headers, openapi, routes};

/// Runs the app on `listener` with the server settings' timeouts, worker count and shutdown
/// grace; `extra_routes` lets tests mount routes of their own beside the app's. Signals are
/// the caller's to handle: it stops the server through the returned handle.
pub fn serve(
    listener: TcpListener,
    state: AppState,
    extra_routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> std::io::Result<Server> {
    let settings = state.server.clone();
    let cors_origins = settings.cors_origins.clone();
    let state = web::Data::new(state);
    let document = web::Data::new(OpenApiDocument(openapi::document()));
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(Condition::new(
                !cors_origins.is_empty(),
                cors(&cors_origins),
            ))
            .wrap(from_fn(security_headers))
            .wrap(from_fn(request_context))
            .configure(extra_routes.clone())
            .app_data(document.clone())
            .configure(configure_app(state.clone()))
    })
    // Answers go out as soon as they are written: a streamed answer's events are small writes,
    // and with Nagle's algorithm each waited for the client's delayed ACK (~40 ms).
    .tcp_nodelay(true)
    .client_request_timeout(settings.client_request_timeout)
    .keep_alive(settings.keep_alive)
    .shutdown_timeout(settings.shutdown_grace.as_secs())
    .disable_signals();
    if let Some(workers) = settings.workers {
        server = server.workers(workers.get());
    }
    Ok(server.listen(listener)?.run())
}

/// Everything an `App` serves: state (which body extractors read their limits from),
/// routes, the console, the API documentation and the JSON 404.
pub fn configure_app(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .app_data(query_config())
            .service(openapi::docs())
            .route("/docs", web::get().to(openapi::docs_redirect))
            .configure(console::configure)
            .configure(routes::configure)
            .default_service(web::to(routes::not_found));
    }
}

/// Cross-origin requests from the configured origins only (`NB_CORS_ORIGINS`): the API's
/// methods and headers, with the headers clients read exposed.
fn cors(origins: &[CorsOrigin]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            IDEMPOTENCY_KEY,
            REQUEST_ID_HEADER,
        ])
        .expose_headers([
            header::RETRY_AFTER,
            REQUEST_ID_HEADER,
            HeaderName::from_static("server-timing"),
            IDEMPOTENT_REPLAYED,
        ])
        .expose_headers(headers::ALL)
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin.as_str());
    }
    cors
}
