//! Dollars at the HTTP edge: amounts are read as a JSON number or a decimal string and shown
//! as a decimal string with 6 places (`"0.067200"`), never as a float.

use nb_domain::money::Usd;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A dollar amount as a client sends it: `50`, `12.5` or `"12.50"`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DollarsIn {
    Number(f64),
    Text(String),
}

impl DollarsIn {
    /// The amount, or a 422 naming `field`.
    pub fn parse(&self, field: &str) -> Result<Usd, ApiError> {
        let parsed = match self {
            Self::Number(dollars) => Usd::from_number(*dollars),
            Self::Text(text) => Usd::parse(text),
        };
        parsed.map_err(|error| ApiError::invalid_field(field, format!("{field} {error}.")))
    }
}

/// A budget change as sent: left out keeps it, `null` clears it, an amount sets it.
pub fn budget_change(
    field: &str,
    sent: Option<Option<DollarsIn>>,
) -> Result<Option<Option<Usd>>, ApiError> {
    sent.map(|value| value.map(|amount| amount.parse(field)).transpose())
        .transpose()
}

/// A budget as shown: dollars with 6 decimals, or `null`.
pub fn shown(amount: Option<Usd>) -> Option<String> {
    amount.map(|usd| usd.to_string())
}
