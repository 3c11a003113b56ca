//! The bytes of request bodies the server holds at once, across every worker
//! (`NB_MAX_BODY_BYTES_IN_FLIGHT`).
//!
//! A request with a large body (over `NB_MAX_BODY_BYTES`: images to edit) reserves its
//! declared length before a byte of it is read, and holds the reservation until its answer is
//! ready (its images, decoded, live that long). When the budget is spent, the request is
//! refused at once with 503 `server_busy` and `Retry-After`, its body unread: memory is
//! bounded by the budget, not by how many clients send at once. A large body sent without a
//! length (chunked) reserves the most its route accepts. Small bodies are never counted.

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_LENGTH;
use nb_domain::generation::InputImageLimits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The default budget: room for the sixteen 14.7 MB edits of the probe that set it, with a
/// margin, on a small machine.
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// What a busy server asks a client to wait: bodies in flight are freed as generations end.
const RETRY_AFTER_SECONDS: u64 = 2;

/// The budget is counted in KiB (a semaphore's permits are a `u32` per acquisition).
const UNIT: usize = 1024;

/// Room in a multipart body for everything but the images (text fields, part headers).
pub const FORM_TEXT_ALLOWANCE_BYTES: usize = 1024 * 1024;

/// The largest body a JSON request with images may have: `NB_MAX_BODY_BYTES` plus the images'
/// total limit in base64 (a third more).
pub fn largest_json_body(max_body_bytes: usize, images: InputImageLimits) -> usize {
    max_body_bytes + images.max_total_bytes.div_ceil(3) * 4
}

/// The largest multipart form (an OpenAI edit): the images' total limit plus room for text.
pub fn largest_form_body(images: InputImageLimits) -> usize {
    images.max_total_bytes + FORM_TEXT_ALLOWANCE_BYTES
}

/// The largest body any request may have: the budget must hold at least one.
pub fn largest_request_body(max_body_bytes: usize, images: InputImageLimits) -> usize {
    largest_json_body(max_body_bytes, images).max(largest_form_body(images))
}

/// The server-wide budget; cheap to clone (every clone shares it).
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_units: usize,
    /// Bodies up to this many bytes are not counted.
    uncounted_up_to: usize,
}

/// A body's share of the budget, given back when dropped.
#[derive(Debug)]
#[must_use = "the reservation lasts as long as it is held"]
pub struct BodyReservation {
    _units: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// `total` bytes of bodies at once; bodies of at most `uncounted_up_to` bytes are free.
    pub fn new(total: usize, uncounted_up_to: usize) -> Self {
        let units = (total / UNIT).min(Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(units)),
            total_units: units,
            uncounted_up_to,
        }
    }

    /// Reserves room for the request's body (its `Content-Length`, or `most` when it has
    /// none), or refuses it with 503 `server_busy`.
    pub fn reserve(&self, request: &HttpRequest, most: usize) -> Result<BodyReservation, ApiError> {
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
        // A declared length over `most` is refused as too large by the reader, unread.
        let bytes = declared.map_or(most, |length| length.min(most));
        if bytes <= self.uncounted_up_to {
            return Ok(BodyReservation { _units: None });
        }
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        match self.units.clone().try_acquire_many_owned(units) {
            Ok(permit) => Ok(BodyReservation {
                _units: Some(permit),
            }),
            Err(_) => {
                metrics::counter!("request_bodies_refused_total").increment(1);
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    "The server holds as many request bodies as it may at once; retry shortly.",
                )
                .with_retry_after(RETRY_AFTER_SECONDS))
            }
        }
    }

    /// Bytes of bodies held now.
    pub fn held_bytes(&self) -> usize {
        (self.total_units - self.units.available_permits()) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn with_length(bytes: usize) -> HttpRequest {
        TestRequest::post()
            .insert_header((CONTENT_LENGTH, bytes.to_string()))
            .to_http_request()
    }

    #[test]
    fn bodies_are_admitted_until_the_budget_is_spent_then_refused() {
        let budget = BodyBudget::new(10 * 1024 * 1024, 64 * 1024);
        let most = 8 * 1024 * 1024;
        let first = budget.reserve(&with_length(4 * 1024 * 1024), most).unwrap();
        let second = budget.reserve(&with_length(4 * 1024 * 1024), most).unwrap();
        let refused = budget
            .reserve(&with_length(4 * 1024 * 1024), most)
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code(), "server_busy");
        // Small bodies are never counted, even now.
        let small = budget.reserve(&with_length(64 * 1024), most).unwrap();
        assert_eq!(budget.held_bytes(), 8 * 1024 * 1024);
        drop((first, small));
        let third = budget.reserve(&with_length(4 * 1024 * 1024), most).unwrap();
        assert_eq!(budget.held_bytes(), 8 * 1024 * 1024);
        drop((second, third));
        assert_eq!(budget.held_bytes(), 0);
    }

    #[test]
    fn a_body_without_a_length_reserves_the_most_its_route_accepts() {
        let budget = BodyBudget::new(10 * 1024 * 1024, 64 * 1024);
        let chunked = TestRequest::post().to_http_request();
        let held = budget.reserve(&chunked, 8 * 1024 * 1024).unwrap();
        assert_eq!(budget.held_bytes(), 8 * 1024 * 1024);
        assert!(budget.reserve(&chunked, 8 * 1024 * 1024).is_err());
        drop(held);
        assert_eq!(budget.held_bytes(), 0);
    }
}
