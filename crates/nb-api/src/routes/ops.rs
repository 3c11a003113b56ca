//! Operator routes: liveness, readiness and Prometheus metrics.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use nb_domain::ports::NotReady;
use serde::Serialize;
use utoipa::ToSchema;

use secrecy::ExposeSecret;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::{bearer_token, same_secret};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub(crate) struct HealthBody {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReadinessBody {
    /// `ready`, `not_ready`, or `draining` (shutting down).
    status: &'static str,
    checks: ReadinessChecks,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReadinessChecks {
    /// `ok` or `unreachable`.
    database: &'static str,
    /// `ok`, `pending` or `unknown`.
    migrations: &'static str,
    /// When `NB_REDIS_URL` is set: `ok`, `unreachable` or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<&'static str>,
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthBody)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthBody { status: "ok" })
}

/// The database answers and its schema is current (and Redis answers, when configured); 503
/// naming the failed check otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadinessBody),
        (status = 503, description = "Not ready; `checks` says which check failed", body = ReadinessBody),
    ))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().json(ReadinessBody {
            status: "draining",
            checks: ReadinessChecks {
                database: "unknown",
                migrations: "unknown",
                redis: state.shared_state.as_ref().map(|_| "unknown"),
            },
            message: Some("The server is shutting down: send requests elsewhere.".into()),
        });
    }
    let redis_unknown = state.shared_state.as_ref().map(|_| "unknown");
    let checked = match state.readiness.check_ready().await {
        Ok(()) => match &state.shared_state {
            Some(shared_state) => shared_state.check_ready().await,
            None => Ok(()),
        },
        Err(problem) => Err(problem),
    };
    match checked {
        Ok(()) => HttpResponse::Ok().json(ReadinessBody {
            status: "ready",
            checks: ReadinessChecks {
                database: "ok",
                migrations: "ok",
                redis: state.shared_state.as_ref().map(|_| "ok"),
            },
            message: None,
        }),
        Err(problem) => {
            tracing::warn!(problem = %problem, "not ready");
            let checks = match problem {
                NotReady::DatabaseUnreachable(_) => ReadinessChecks {
                    database: "unreachable",
                    migrations: "unknown",
                    redis: redis_unknown,
                },
                NotReady::MigrationsPending(_) => ReadinessChecks {
                    database: "ok",
                    migrations: "pending",
                    redis: redis_unknown,
                },
                NotReady::MigrationsUnknown(_) => ReadinessChecks {
                    database: "ok",
                    migrations: "unknown",
                    redis: redis_unknown,
                },
                NotReady::SharedStateUnreachable(_) => ReadinessChecks {
                    database: "ok",
                    migrations: "ok",
                    redis: Some("unreachable"),
                },
            };
            HttpResponse::ServiceUnavailable()
                .insert_header(("retry-after", "5"))
                .json(ReadinessBody {
                    status: "not_ready",
                    checks,
                    message: Some(problem.to_string()),
                })
        }
    }
}

/// Prometheus text format, behind `NB_METRICS_TOKEN` when it is set.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "NB_METRICS_TOKEN is set and was not sent", body = ErrorBody),
    ))]
pub(crate) async fn metrics(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.metrics_token {
        let presented = bearer_token(&request).unwrap_or_default();
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

/// The OpenAPI document, rendered when the app was built.
#[derive(Debug, Clone)]
pub struct OpenApiDocument(pub String);

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_document(document: web::Data<OpenApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.clone())
}

#[cfg(test)]
mod tests {
    use crate::extract::credentials::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
