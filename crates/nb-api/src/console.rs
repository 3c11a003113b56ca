//! The web console: a small hand-written ES-module front-end, compiled into the binary and
//! served at `/console/`. It is a client of the public API only (cookie sessions are the
//! API's `?session=cookie`); this module just serves its three files, under a strict
//! Content-Security-Policy: scripts and styles from this origin only, nothing inline.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// The console's policy; `image_origins` are where stored images are fetched from besides
/// this origin (the R2/S3 endpoint or public URL), space-separated.
pub fn content_security_policy(image_origins: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: \
         {image_origins}; connect-src 'self'; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    )
    .replace("  ", " ")
}

/// The scheme, host and port of `url` (`https://bucket.example.com`), for the policy.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(redirect_to_console))
        .route("/console/", web::get().to(index))
        .route("/console/app.js", web::get().to(script))
        .route("/console/app.css", web::get().to(stylesheet));
}

async fn redirect_to_console() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

fn asset(state: &AppState, content_type: &'static str, body: &'static str) -> HttpResponse {
    let policy = HeaderValue::from_str(&state.console_policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, policy))
        // Served from the binary: a new build brings new files, so check each time.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("cross-origin-opener-policy", "same-origin"))
        .body(body)
}

async fn index(state: web::Data<AppState>) -> HttpResponse {
    asset(&state, "text/html; charset=utf-8", INDEX_HTML)
}

async fn script(state: web::Data<AppState>) -> HttpResponse {
    asset(&state, "text/javascript; charset=utf-8", APP_JS)
}

async fn stylesheet(state: web::Data<AppState>) -> HttpResponse {
    asset(&state, "text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_nothing_inline_and_names_the_image_origins() {
        let policy = content_security_policy("https://images.example.com");
        assert!(policy.contains("script-src 'self';"));
        assert!(policy.contains("style-src 'self';"));
        assert!(!policy.contains("unsafe-inline"));
        assert!(policy.contains("frame-ancestors 'none'"));
        assert!(policy.contains("img-src 'self' data: blob: https://images.example.com;"));
        assert_eq!(
            origin_of("https://acc.r2.cloudflarestorage.com/bucket/x").as_deref(),
            Some("https://acc.r2.cloudflarestorage.com")
        );
        assert_eq!(origin_of("not a url"), None);
    }
}
