//! Dry runs: `POST /v1/generate?dry_run=true` and the OpenAI routes with `x-nb-dry-run:
//! true`. The request is checked as a real one would be (fields, key, the conversation, every
//! quota and budget, without reserving) and answered with what it would cost, without
//! calling the model.

use actix_web::{HttpRequest, HttpResponse};
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::generation::{GenerationRequest, ImageCount};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::headers::insert_standings;
use crate::state::AppState;

/// The OpenAI routes' dry-run header.
pub const DRY_RUN_HEADER: &str = "x-nb-dry-run";

/// What a request would make and cost.
#[derive(Serialize, ToSchema)]
pub(crate) struct DryRunResponse {
    /// Always `true`: nothing was made or reserved.
    dry_run: bool,
    /// The budget's estimate: the model's per-image price at the resolution asked × the
    /// images (prompt and reference-image tokens are not estimated), in dollars with 6
    /// decimals; `"0.000000"` for a test key.
    #[schema(example = "0.067200")]
    estimated_cost_usd: String,
    model: String,
    resolution: &'static str,
    /// `null`: the model's choice.
    aspect_ratio: Option<String>,
    images: u64,
}

/// Whether `value` (a query parameter or a header) asks for a dry run: `true` or `false`,
/// anything else a 422 naming `field`.
pub fn asked(value: Option<&str>, field: &str) -> Result<bool, ApiError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::invalid_field(
            field,
            format!("{field} is true or false"),
        )),
    }
}

/// The query parameter of the native route.
#[derive(serde::Deserialize)]
struct DryRunQuery {
    dry_run: Option<String>,
}

/// `dry_run` from the query string of `request` (a query string that cannot be read is a 422
/// naming it).
pub fn in_query(request: &HttpRequest) -> Result<bool, ApiError> {
    let query = actix_web::web::Query::<DryRunQuery>::from_query(request.query_string())
        .map_err(|_| ApiError::invalid_field("dry_run", "dry_run is true or false"))?;
    asked(query.dry_run.as_deref(), "dry_run")
}

/// `x-nb-dry-run` of `request`.
pub fn in_header(request: &HttpRequest) -> Result<bool, ApiError> {
    let value = request
        .headers()
        .get(DRY_RUN_HEADER)
        .map(|value| value.to_str().unwrap_or("?"));
    asked(value, DRY_RUN_HEADER)
}

/// The answer to a dry run of `wanted`, with the standing headers of the quotas and budgets.
pub async fn respond(
    state: &AppState,
    caller: AuthenticatedApiKey,
    wanted: &GenerationRequest,
    count: ImageCount,
) -> Result<HttpResponse, ApiError> {
    let estimate = state.generations.estimate(caller, wanted, count).await?;
    let mut response = HttpResponse::Ok().json(DryRunResponse {
        dry_run: true,
        estimated_cost_usd: estimate.cost.to_string(),
        model: wanted.model.as_str().to_owned(),
        resolution: wanted.shape.resolution.as_str(),
        aspect_ratio: wanted.shape.aspect_ratio.map(|ratio| ratio.to_string()),
        images: estimate.images,
    });
    insert_standings(response.headers_mut(), &estimate.standings);
    Ok(response)
}
