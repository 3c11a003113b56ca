//! Errors on the OpenAI-compatible routes: OpenAI's envelope
//! `{"error": {"message", "type", "param", "code"}}`, with the statuses the official SDKs turn
//! into their matching exceptions. The native error (`ApiError`) is the one source; this only
//! changes its shape:
//!
//! - a request field at fault (our 422 `validation_failed` or `malformed_json`) is a 400 with
//!   `param`, as OpenAI answers it;
//! - a retired model (our 410 `model_retired`) is a 400 with `code: "model_retired"`;
//! - a prompt or image the model refused (`content_rejected`) is a 400 with code
//!   `content_policy_violation`;
//! - `type` is `invalid_request_error` for 4xx, `requests` for rate limits,
//!   `insufficient_quota` for a spent day or month quota, `server_error` for 5xx; `code` is always our snake_case code (or OpenAI's name for the same thing);
//! - answers a retry cannot fix carry `x-should-retry: false`, which the SDKs honour.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::ApiError;

const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// An `ApiError` in OpenAI's envelope.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An error from an extractor of the native API (`actix_web::Error` wrapping an `ApiError`).
impl From<actix_web::Error> for OpenAiError {
    fn from(error: actix_web::Error) -> Self {
        match error.as_error::<ApiError>() {
            Some(api_error) => Self(api_error.public_copy()),
            None => Self(ApiError::new(
                error.as_response_error().status_code(),
                "invalid_request",
                error.to_string(),
            )),
        }
    }
}

/// OpenAI's error body.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OpenAiErrorDetail {
    /// A sentence for people.
    message: String,
    /// `invalid_request_error`, `requests` (rate limits), `insufficient_quota` (a spent day
    /// or month quota) or `server_error`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request parameter at fault, when one is.
    param: Option<String>,
    /// Stable, snake_case.
    code: &'static str,
}

impl OpenAiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        let error = &self.0;
        match (error.status(), error.code()) {
            (_, "content_rejected") => (StatusCode::BAD_REQUEST, "content_policy_violation"),
            // OpenAI answers a model it no longer serves with a 400 naming the model.
            (StatusCode::GONE, code) => (StatusCode::BAD_REQUEST, code),
            (StatusCode::UNPROCESSABLE_ENTITY, code) => (StatusCode::BAD_REQUEST, code),
            (status, code) => (status, code),
        }
    }

    /// OpenAI's error `type`.
    fn kind(&self) -> &'static str {
        let (status, code) = self.status_and_code();
        if matches!(code, "quota_exceeded" | "budget_exceeded") {
            // OpenAI's type for a spent budget: clients tell it from a rate limit by it.
            "insufficient_quota"
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            "requests"
        } else if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        }
    }

    /// Failures a retry of the same request cannot fix.
    fn retry_is_pointless(&self) -> bool {
        let (status, code) = self.status_and_code();
        status.is_client_error()
            && status != StatusCode::TOO_MANY_REQUESTS
            && status != StatusCode::CONFLICT
            && status != StatusCode::REQUEST_TIMEOUT
            || matches!(
                code,
                "model_unavailable"
                    | "upstream_auth_failed"
                    | "generation_not_configured"
                    | "quota_exceeded"
                    | "budget_exceeded"
                    | "storage_full"
            )
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        // The native rendering logs the error and carries its headers; only the body and
        // status change here.
        let native = self.0.error_response();
        let (status, code) = self.status_and_code();
        let kind = self.kind();
        let mut response = HttpResponse::build(status);
        for (name, value) in native.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.insert_header((name.clone(), value.clone()));
            }
        }
        if self.retry_is_pointless() {
            response.insert_header((SHOULD_RETRY, HeaderValue::from_static("false")));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            response.force_close();
        }
        let mut response = response.json(OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.0.message().to_owned(),
                kind,
                param: self.0.field().map(str::to_owned),
                code,
            },
        });
        response
            .extensions_mut()
            .insert(crate::error::ErrorCode(self.0.code()));
        response
    }
}

impl OpenAiError {
    /// The error as the data of a server-sent `error` event, once a stream has started:
    /// `{"type": "error", "error": {message, type, param, code}}` (the SDKs raise it).
    pub(crate) fn event_data(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        serde_json::json!({
            "type": "error",
            "error": {
                "message": self.0.message(),
                "type": self.kind(),
                "param": self.0.field(),
                "code": code,
            }
        })
    }
}

/// An error as this surface answers it, in OpenAI's shape.
pub fn render(error: ApiError) -> HttpResponse {
    OpenAiError(error).error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rendered(error: ApiError) -> (StatusCode, serde_json::Value, HttpResponse) {
        let response = OpenAiError(error).error_response();
        let status = response.status();
        let headers = response.headers().clone();
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        let mut clone = HttpResponse::build(status);
        for (name, value) in &headers {
            clone.insert_header((name.clone(), value.clone()));
        }
        (
            status,
            serde_json::from_slice(&body).unwrap(),
            clone.finish(),
        )
    }

    #[actix_web::test]
    async fn validation_is_400_with_the_param() {
        let (status, body, response) =
            rendered(ApiError::invalid_field("size", "size must be one of …")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            serde_json::json!({"error": {"message": "size must be one of …", "type": "invalid_request_error", "param": "size", "code": "validation_failed"}})
        );
        assert_eq!(response.headers().get("x-should-retry").unwrap(), "false");
    }

    #[actix_web::test]
    async fn a_refused_prompt_is_a_content_policy_violation() {
        let refused = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "content_rejected",
            "The image provider returned no image: SAFETY.",
        );
        let (status, body, _) = rendered(refused).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "content_policy_violation");
        assert_eq!(body["error"]["param"], serde_json::Value::Null);
    }

    #[actix_web::test]
    async fn rate_limits_keep_retry_after_and_may_be_retried() {
        let limited = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .with_retry_after(7);
        let (status, body, response) = rendered(limited).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["type"], "requests");
        assert_eq!(response.headers().get("retry-after").unwrap(), "7");
        assert!(!response.headers().contains_key("x-should-retry"));
    }

    #[actix_web::test]
    async fn provider_failures_are_server_errors() {
        let failed = ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", "failed");
        let (status, body, response) = rendered(failed).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["error"]["type"], "server_error");
        assert!(!response.headers().contains_key("x-should-retry"));
        let retired = ApiError::new(StatusCode::BAD_GATEWAY, "model_unavailable", "gone");
        let (_, _, response) = rendered(retired).await;
        assert_eq!(response.headers().get("x-should-retry").unwrap(), "false");
    }
}
