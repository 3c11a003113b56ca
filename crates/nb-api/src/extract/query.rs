//! Query strings: a page of a listing, and the 422 every unreadable query string gets.

use actix_web::http::StatusCode;
use actix_web::web;
use nb_domain::pagination::PageRequest;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// Query strings that do not parse are 422s, like bodies.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _req| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("The query string is invalid: {error}."),
        )
        .into()
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (default 20).
    #[param(value_type = u16, required = false, minimum = 1, maximum = 100)]
    limit: Option<u16>,
    /// `next_cursor` of the previous page.
    #[param(value_type = String, required = false)]
    cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
            .map_err(|error| ApiError::invalid_field(error.field(), error.to_string()))
    }
}
