//! Answer bodies and headers that more than one route sends: a key as its owner (or an
//! admin) sees it, and the header that keeps credentials out of caches.

use crate::money::shown;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use nb_domain::api_keys::{ApiKeyRecord, ApiKeyView, KeyLimits, KeyUsage};
use nb_domain::generation::TokenUsage;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// Answers that carry a secret (an access token, a full key) must not be kept by caches or
/// browsers (RFC 6749 §5.1).
pub const NO_STORE: (HeaderName, HeaderValue) =
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsResponse {
    per_minute: Option<u32>,
    per_day: Option<u64>,
    per_month: Option<u64>,
    /// Dollars a UTC day, with 6 decimals; `null`: none.
    #[schema(example = "5.000000")]
    budget_usd_per_day: Option<String>,
    /// Dollars a calendar month (UTC), with 6 decimals; `null`: none.
    budget_usd_per_month: Option<String>,
}

impl From<KeyLimits> for LimitsResponse {
    fn from(limits: KeyLimits) -> Self {
        Self {
            per_minute: limits.per_minute.map(|n| n.get()),
            per_day: limits.quotas.per_day.map(|n| n.get()),
            per_month: limits.quotas.per_month.map(|n| n.get()),
            budget_usd_per_day: shown(limits.quotas.budget_per_day),
            budget_usd_per_month: shown(limits.quotas.budget_per_month),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotals {
    /// Images made today (UTC).
    today: u64,
    /// Images made this calendar month (UTC).
    this_month: u64,
    /// What they cost, in dollars with 6 decimals.
    #[schema(example = "0.134400")]
    spend_today_usd: String,
    spend_this_month_usd: String,
}

impl From<KeyUsage> for UsageTotals {
    fn from(usage: KeyUsage) -> Self {
        Self {
            today: usage.today,
            this_month: usage.this_month,
            spend_today_usd: usage.spend_today.to_string(),
            spend_this_month_usd: usage.spend_this_month.to_string(),
        }
    }
}

/// A key as its owner sees it: never the key itself, never its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    id: Uuid,
    name: Option<String>,
    prefix: String,
    /// `live` or `test`.
    mode: &'static str,
    /// False once revoked.
    is_active: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    limits: LimitsResponse,
    usage: UsageTotals,
    /// The key this one replaced, when it was rolled.
    rolled_from: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<ApiKeyView> for KeyResponse {
    fn from(view: ApiKeyView) -> Self {
        let record = view.record;
        Self {
            id: record.id.0,
            name: record.name,
            prefix: record.prefix,
            mode: record.mode.as_str(),
            is_active: record.is_active,
            expires_at: record.expires_at,
            limits: record.limits.into(),
            usage: view.usage.into(),
            rolled_from: record.rolled_from.map(|id| id.0),
            last_used_at: record.last_used_at,
            created_at: record.created_at,
        }
    }
}

impl From<ApiKeyRecord> for KeyResponse {
    /// A key no usage has been read for (a new one: it has made nothing).
    fn from(record: ApiKeyRecord) -> Self {
        ApiKeyView {
            record,
            usage: Default::default(),
        }
        .into()
    }
}

/// The tokens Google counted for a generation (its `usageMetadata`), in OpenAI's shape with
/// the thinking tokens apart.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsageResponse {
    /// `promptTokenCount`.
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    /// `candidatesTokenCount`.
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    /// `thoughtsTokenCount`: billed as output, reported apart.
    pub thinking_tokens: u64,
    /// `totalTokenCount`.
    pub total_tokens: u64,
}

/// The input split by modality; `null` when Google did not split it.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputTokensDetails {
    pub text_tokens: Option<u64>,
    pub image_tokens: Option<u64>,
}

/// The output split by modality; `null` when Google did not split it.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputTokensDetails {
    pub image_tokens: Option<u64>,
    pub text_tokens: Option<u64>,
}

impl From<TokenUsage> for TokenUsageResponse {
    fn from(usage: TokenUsage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            input_tokens_details: InputTokensDetails {
                text_tokens: usage.input_text_tokens,
                image_tokens: usage.input_image_tokens,
            },
            output_tokens: usage.output_tokens,
            output_tokens_details: OutputTokensDetails {
                image_tokens: usage.output_image_tokens,
                text_tokens: usage.output_text_tokens,
            },
            thinking_tokens: usage.thinking_tokens,
            total_tokens: usage.total_tokens,
        }
    }
}
