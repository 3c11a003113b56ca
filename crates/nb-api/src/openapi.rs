//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the request and response types, served at `/openapi.json`; Swagger UI at `/docs`, with its
//! assets compiled into the binary (it renders offline).

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::openai;
use crate::routes::{accounts, admin, api_keys, generate, history, images, ops, usage, webhooks};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "NanoBanana",
        description = "Self-hostable image generation: accounts, API keys, and one endpoint that turns a prompt into an image.",
    ),
    paths(
        accounts::register,
        accounts::login,
        accounts::me,
        accounts::logout,
        accounts::change_password,
        accounts::delete_account,
        api_keys::create,
        api_keys::list,
        api_keys::get,
        api_keys::update,
        api_keys::roll,
        api_keys::revoke,
        generate::generate,
        openai::images::generations,
        openai::images::edits,
        openai::models::list_models,
        openai::models::get_model,
        history::list,
        history::get,
        history::delete,
        history::cancel,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::rotate,
        webhooks::deliveries,
        webhooks::send_test,
        usage::usage,
        admin::list_users,
        admin::update_user,
        admin::list_user_keys,
        admin::audit,
        images::serve,
        ops::front_door,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi_document,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "accounts", description = "Registration, login and the signed-in user (access tokens)"),
        (name = "keys", description = "API keys (access tokens)"),
        (name = "generation", description = "Images and usage (API keys)"),
        (name = "openai", description = "OpenAI-compatible images and models (API keys): point an OpenAI SDK's base_url at /v1"),
        (name = "webhooks", description = "Signed webhooks (Standard Webhooks) for the account's generations (access tokens)"),
        (name = "admin", description = "The operator's view (access tokens of the accounts in NB_ADMIN_EMAILS)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.bearer_format = Some(format.to_owned());
            scheme.description = Some(description.to_owned());
            SecurityScheme::Http(scheme)
        };
        components.add_security_scheme(
            "access_token",
            bearer(
                "JWT",
                "An access token from /v1/auth/register or /v1/auth/login.",
            ),
        );
        components.add_security_scheme(
            "api_key",
            bearer("nb_live_<32 hex>", "An API key from POST /v1/keys."),
        );
        components.add_security_scheme(
            "metrics_token",
            bearer("opaque", "NB_METRICS_TOKEN, when the operator sets one."),
        );
    }
}

/// The document, rendered.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

/// `/docs` → `/docs/`.
pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("location", "/docs/"))
        .finish()
}

/// Swagger UI at `/docs/`, reading `/openapi.json`.
pub fn docs() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
}
