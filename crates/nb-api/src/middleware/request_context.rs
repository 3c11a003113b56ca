//! The outermost layer of every request: its id, its span, its log line and its metrics.
//!
//! `HEAD` is served as `GET` without the body (RFC 9110 §9.3.2), for every route: the request
//! is routed as a `GET` and the HTTP layer, which remembers the request was a `HEAD`, sends
//! the head of the answer only.
//!
//! The id is the client's `x-request-id` when it is sane (1–128 characters of letters, digits
//! and `._:-`), else a fresh UUIDv7; it is sent back on every response, and every log line
//! written while serving the request carries it (the request's span is entered around the
//! handler, and database tasks inherit it). One `request completed` line per request gives the
//! method, the route pattern (never the query string or a header), the status and the time.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use crate::middleware::body_timeout::TimedBody;

type BoxedPayloadStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, actix_web::error::PayloadError>>>,
>;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// When the server started on this request, for `Server-Timing: total`.
#[derive(Debug, Clone, Copy)]
pub struct RequestStarted(pub Instant);
const MAX_REQUEST_ID_LENGTH: usize = 128;

/// The client's id when it is safe to log and echo, else a new one.
pub fn request_id(offered: Option<&HeaderValue>) -> String {
    let sane = |id: &&str| {
        (1..=MAX_REQUEST_ID_LENGTH).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    match offered.and_then(|value| value.to_str().ok()).filter(sane) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::now_v7().to_string(),
    }
}

/// The method the client sent, when routing used another (`HEAD` routed as `GET`).
#[derive(Debug, Clone)]
pub struct SentMethod(pub Method);

pub async fn request_context(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    request.extensions_mut().insert(RequestStarted(started));
    let id = request_id(request.headers().get(&REQUEST_ID_HEADER));
    let method = request.method().clone();
    if method == Method::HEAD {
        request.extensions_mut().insert(SentMethod(Method::HEAD));
        request.head_mut().method = Method::GET;
    }
    let body_limits = request
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|state| {
            (
                state.server.client_body_timeout,
                state.server.client_body_deadline,
            )
        });
    if let Some((gap, whole)) = body_limits {
        let body = TimedBody::new(request.take_payload(), gap, whole);
        request.set_payload(Payload::from(Box::pin(body) as BoxedPayloadStream));
    }
    let span =
        tracing::info_span!("request", request_id = %id, method = %method, path = request.path());
    let mut response = next.call(request).instrument(span.clone()).await?;
    let elapsed = started.elapsed();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            route = route.as_str(),
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "request completed"
        );
    });
    crate::metrics::record_request(method.as_str(), &route, status, elapsed);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        let kept = HeaderValue::from_static("req-42.a_b:c");
        assert_eq!(request_id(Some(&kept)), "req-42.a_b:c");
        for insane in ["", "has space", "line\\nbreak", "<script>"] {
            let offered = HeaderValue::from_str(insane).ok();
            let id = request_id(offered.as_ref());
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{insane:?} gave {id}");
        }
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_ne!(request_id(Some(&long)), "a".repeat(129));
        assert!(uuid::Uuid::parse_str(&request_id(None)).is_ok());
    }
}
