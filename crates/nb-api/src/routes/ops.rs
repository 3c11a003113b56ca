//! Operator routes: liveness, readiness and Prometheus metrics.

use actix_web::http::{StatusCode, header};
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
    /// Google API keys this instance can use now (resting after a 429 or rejected keys do
    /// not count); absent without keys. Informative: it never makes the instance unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_keys: Option<UpstreamKeysBody>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UpstreamKeysBody {
    usable: usize,
    total: usize,
}

fn upstream_keys(state: &AppState) -> Option<UpstreamKeysBody> {
    state.upstream_keys.as_ref().map(|keys| {
        let availability = keys.availability();
        UpstreamKeysBody {
            usable: availability.usable,
            total: availability.total,
        }
    })
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

/// Where things are, for an API client that opens the server's address.
#[derive(Serialize, ToSchema)]
pub(crate) struct FrontDoor {
    #[schema(example = "NanoBanana")]
    service: &'static str,
    /// The web console (sign up, keys, usage, playground).
    console: &'static str,
    /// This API's OpenAPI document.
    openapi: &'static str,
    /// The same, for people (Swagger UI).
    docs: &'static str,
}

/// Whether the client prefers a page: it names `text/html` (with a non-zero quality), as
/// browsers do when a person opens an address; `*/*` alone (curl, SDKs) is not a page.
fn wants_a_page(request: &HttpRequest) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let is_html = parts
                .next()
                .is_some_and(|media| media.eq_ignore_ascii_case("text/html"));
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_html && !refused
        })
}

/// The server's address: a browser is sent to the console (303); any other client gets
/// where to go, as JSON.
#[utoipa::path(get, path = "/", tag = "operations",
    responses(
        (status = 200, description = "Where things are (clients that do not ask for HTML)", body = FrontDoor),
        (status = 303, description = "To `/console/`, for a browser (`Accept: text/html`)"),
    ))]
pub(crate) async fn front_door(request: HttpRequest) -> HttpResponse {
    if wants_a_page(&request) {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/console/"))
            .finish();
    }
    HttpResponse::Ok().json(FrontDoor {
        service: "NanoBanana",
        console: "/console/",
        openapi: "/openapi.json",
        docs: "/docs/",
    })
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
            upstream_keys: upstream_keys(&state),
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
            upstream_keys: upstream_keys(&state),
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
                    upstream_keys: upstream_keys(&state),
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
        .body(crate::metrics::render()))
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
