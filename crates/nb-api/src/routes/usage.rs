//! `GET /v1/usage` (access token): images made by the user's keys, grouped.

use actix_web::web;
use nb_domain::api_keys::KeyMode;
use nb_domain::usage::{UsageDimension, UsageQuery};
use serde::{Deserialize, Serialize};
use time::Date;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::SignedInUser;
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageParams {
    /// UTC days to cover, ending `to` (default 30); ignored when `from` is given.
    #[param(value_type = u16, required = false, minimum = 1, maximum = 366)]
    days: Option<u16>,
    /// First UTC day, `YYYY-MM-DD` (included).
    #[param(value_type = String, format = Date, required = false)]
    from: Option<String>,
    /// Last UTC day, `YYYY-MM-DD` (included; default today).
    #[param(value_type = String, format = Date, required = false)]
    to: Option<String>,
    /// Comma-separated: `day`, `key`, `model`, `mode` (default `day,key`).
    #[param(value_type = String, required = false, example = "day,model")]
    group_by: Option<String>,
}

/// The count for one combination of the dimensions grouped by; the others are left out.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// `live` or `test`.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    /// Images made (successes; deleted ones still count).
    count: u64,
    /// What they cost, in dollars with 6 decimals: the exact sum of the generations' costs
    /// (test-mode images cost nothing: group by `mode` to see them apart).
    #[schema(example = "0.134400")]
    cost_usd: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UsageResponse {
    usage: Vec<UsageLine>,
    from: String,
    to: String,
    group_by: Vec<&'static str>,
}

fn iso_date(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

fn dimension_name(dimension: UsageDimension) -> &'static str {
    match dimension {
        UsageDimension::Day => "day",
        UsageDimension::Key => "key",
        UsageDimension::Model => "model",
        UsageDimension::Mode => "mode",
    }
}

/// Images made by the user's keys, per UTC day and key by default, over the last `days` days
/// or from `from` to `to` (at most 366 days), grouped by any of day, key, model and mode;
/// newest day first.
#[utoipa::path(get, path = "/v1/usage", tag = "generation", security(("access_token" = [])),
    params(UsageParams),
    responses(
        (status = 200, description = "Counts, newest day first", body = UsageResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 422, description = "`days`, `from`, `to` or `group_by` invalid", body = ErrorBody),
    ))]
pub(crate) async fn usage(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
    params: web::Query<UsageParams>,
) -> Result<web::Json<UsageResponse>, ApiError> {
    let query = UsageQuery::parse(
        params.days,
        params.from.as_deref(),
        params.to.as_deref(),
        params.group_by.as_deref(),
        state.generations.now(),
    )
    .map_err(|error| ApiError::invalid_field(error.field(), error.to_string()))?;
    let rows = state.generations.usage(user.id, &query).await?;
    Ok(web::Json(UsageResponse {
        usage: rows
            .into_iter()
            .map(|row| UsageLine {
                day: row.day.map(iso_date),
                api_key_id: row.api_key_id.map(|id| id.0),
                model: row.model,
                mode: row.mode.map(KeyMode::as_str),
                count: row.count,
                cost_usd: row.cost.to_string(),
            })
            .collect(),
        from: iso_date(query.from),
        to: iso_date(query.to),
        group_by: query.group_by.iter().copied().map(dimension_name).collect(),
    }))
}
