//! Operator routes: liveness, readiness and Prometheus metrics.

use actix_web::FromRequest;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_httpauth::extractors::bearer::BearerAuth;
use nb_domain::ports::NotReady;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The process is up and serving.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers and its schema is current; 503 naming the failed check otherwise.
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.readiness.check_ready().await {
        Ok(()) => HttpResponse::Ok()
            .json(json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok"}})),
        Err(problem) => {
            tracing::warn!(problem = %problem, "not ready");
            let checks = match problem {
                NotReady::DatabaseUnreachable(_) => {
                    json!({"database": "unreachable", "migrations": "unknown"})
                }
                NotReady::MigrationsPending(_) => {
                    json!({"database": "ok", "migrations": "pending"})
                }
            };
            HttpResponse::ServiceUnavailable()
                .insert_header(("retry-after", "5"))
                .json(json!({"status": "not_ready", "checks": checks, "message": problem.to_string()}))
        }
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Prometheus text format, behind `NB_METRICS_TOKEN` when it is set.
pub(crate) async fn metrics(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.metrics_token {
        let presented = BearerAuth::extract(&request)
            .await
            .map(|auth| auth.token().to_owned())
            .unwrap_or_default();
        if !same_secret(presented.as_bytes(), token.expose_secret().as_bytes()) {
            return Err(ApiError::unauthorized(
                "invalid_metrics_token",
                "GET /metrics needs `Authorization: Bearer <NB_METRICS_TOKEN>`.",
            ));
        }
    }
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::handle().render()))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
