//! `/v1/admin/`: the operator's routes, for the accounts named by `NB_ADMIN_EMAILS` (an
//! access token of one of them; 403 `admin_only` for anyone else).

use actix_web::web;
use nb_domain::accounts::UserId;
use nb_domain::admin::{AccountChanges, AccountOverview, AccountSettings, AuditEntry};
use nb_domain::api_keys::LimitChanges;
use nb_domain::quota::PeriodLimits;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::SignedInUser;
use crate::extract::json::JsonBody;
use crate::extract::json::present;
use crate::extract::query::PageQuery;
use crate::money::{DollarsIn, budget_change, shown};
use crate::state::AppState;
use crate::views::{KeyResponse, UsageTotals};

/// An account's quotas over all its keys (`null`: none beyond the server's).
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountLimitsResponse {
    per_day: Option<u64>,
    per_month: Option<u64>,
    /// Dollars a UTC day over all the account's keys, with 6 decimals.
    budget_usd_per_day: Option<String>,
    /// Dollars a calendar month (UTC) over all the account's keys.
    budget_usd_per_month: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AccountSettingsResponse {
    limits: AccountLimitsResponse,
    disabled: bool,
}

impl From<PeriodLimits> for AccountLimitsResponse {
    fn from(limits: PeriodLimits) -> Self {
        Self {
            per_day: limits.per_day.map(|n| n.get()),
            per_month: limits.per_month.map(|n| n.get()),
            budget_usd_per_day: shown(limits.budget_per_day),
            budget_usd_per_month: shown(limits.budget_per_month),
        }
    }
}

impl From<AccountSettings> for AccountSettingsResponse {
    fn from(settings: AccountSettings) -> Self {
        Self {
            limits: settings.limits.into(),
            disabled: settings.disabled,
        }
    }
}

/// An account as the operator sees it.
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountResponse {
    id: Uuid,
    email: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    limits: AccountLimitsResponse,
    disabled: bool,
    /// Images made by all its keys today and this month (UTC), and what they cost.
    usage: UsageTotals,
    /// What its keys' images cost today (UTC), in dollars with 6 decimals.
    #[schema(example = "1.344000")]
    spend_today_usd: String,
    /// What they cost this calendar month (UTC).
    spend_this_month_usd: String,
}

impl From<AccountOverview> for AccountResponse {
    fn from(overview: AccountOverview) -> Self {
        let settings = AccountSettingsResponse::from(overview.settings);
        Self {
            id: overview.user.id.0,
            email: overview.user.email.as_str().to_owned(),
            created_at: overview.user.created_at,
            limits: settings.limits,
            disabled: settings.disabled,
            spend_today_usd: overview.usage.spend_today.to_string(),
            spend_this_month_usd: overview.usage.spend_this_month.to_string(),
            usage: overview.usage.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AccountListResponse {
    users: Vec<AccountResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// `PATCH`: a field left out keeps its value; a limit sent as `null` is removed.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateAccountRequest {
    #[serde(default)]
    limits: Option<AccountLimitsPatch>,
    /// A disabled account's tokens and keys are refused with 403 `account_disabled`.
    #[serde(default)]
    disabled: Option<bool>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountLimitsPatch {
    /// Images a UTC day over all the account's keys.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    per_day: Option<Option<i64>>,
    /// Images a calendar month (UTC) over all the account's keys.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    per_month: Option<Option<i64>>,
    /// Dollars a UTC day over all the account's keys (number or decimal string); `null`
    /// clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    budget_usd_per_day: Option<Option<DollarsIn>>,
    /// Dollars a calendar month (UTC) over all the account's keys; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    budget_usd_per_month: Option<Option<DollarsIn>>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AccountKeyListResponse {
    keys: Vec<KeyResponse>,
    next_cursor: Option<String>,
}

/// One operator action, with the account's settings before and after.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEntryResponse {
    id: Uuid,
    /// The admin who acted.
    actor_id: Uuid,
    /// `account.update`.
    action: String,
    /// The account acted on.
    target_id: Uuid,
    before: AccountSettingsResponse,
    after: AccountSettingsResponse,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

impl From<AuditEntry> for AuditEntryResponse {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            actor_id: entry.actor.0,
            action: entry.action,
            target_id: entry.target.0,
            before: entry.before.into(),
            after: entry.after.into(),
            at: entry.at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuditListResponse {
    entries: Vec<AuditEntryResponse>,
    next_cursor: Option<String>,
}

/// An account id from the path: a malformed one names no account.
fn user_id(raw: &str) -> Result<UserId, ApiError> {
    Uuid::parse_str(raw)
        .map(UserId)
        .map_err(|_| ApiError::not_found("user_not_found", "No such account."))
}

/// Every account, newest first, with its quotas, whether it is disabled and what its keys
/// made today and this month.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("access_token" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of accounts", body = AccountListResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not an admin (`admin_only`), or the account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 422, description = "Invalid `limit` or `cursor`", body = ErrorBody),
    ))]
pub(crate) async fn list_users(
    state: web::Data<AppState>,
    SignedInUser(admin): SignedInUser,
    query: web::Query<PageQuery>,
) -> Result<web::Json<AccountListResponse>, ApiError> {
    state.admin.require_admin(&admin).await?;
    let page = state.admin.accounts(&admin, query.page()?).await?;
    Ok(web::Json(AccountListResponse {
        users: page.items.into_iter().map(AccountResponse::from).collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}

/// Set an account's quotas (over all its keys) or disable it. Audited. A disabled account's
/// tokens are refused at once everywhere and its keys at once on this instance (within
/// `NB_KEY_CACHE_TTL_SECONDS` on others; generation is refused at once wherever a quota
/// applies).
#[utoipa::path(patch, path = "/v1/admin/users/{user_id}", tag = "admin", security(("access_token" = [])),
    params(("user_id" = Uuid, Path, description = "The account's id")),
    request_body = UpdateAccountRequest,
    responses(
        (status = 200, description = "The account's settings as they now are", body = AccountSettingsResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not an admin (`admin_only`), or the account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid limits, or an admin disabling their own account", body = ErrorBody),
    ))]
pub(crate) async fn update_user(
    state: web::Data<AppState>,
    SignedInUser(admin): SignedInUser,
    path: web::Path<String>,
    body: JsonBody<UpdateAccountRequest>,
) -> Result<web::Json<AccountSettingsResponse>, ApiError> {
    // Who may ask comes before what was asked: a non-admin learns nothing from a 404 or 422.
    state.admin.require_admin(&admin).await?;
    let target = user_id(&path)?;
    let request = body.0;
    let limits = request.limits.unwrap_or_default();
    let parsed = LimitChanges::parse(None, limits.per_day, limits.per_month)
        .map_err(|error| ApiError::invalid_field(&error.field(), error.to_string()))?;
    let changes = AccountChanges {
        per_day: parsed.per_day,
        per_month: parsed.per_month,
        budget_per_day: budget_change("limits.budget_usd_per_day", limits.budget_usd_per_day)?,
        budget_per_month: budget_change(
            "limits.budget_usd_per_month",
            limits.budget_usd_per_month,
        )?,
        disabled: request.disabled,
    };
    let after = state.admin.update_account(&admin, target, changes).await?;
    Ok(web::Json(after.into()))
}

/// An account's keys, newest first: prefixes and settings, never a key or its hash.
#[utoipa::path(get, path = "/v1/admin/users/{user_id}/keys", tag = "admin", security(("access_token" = [])),
    params(("user_id" = Uuid, Path, description = "The account's id"), PageQuery),
    responses(
        (status = 200, description = "One page of the account's keys", body = AccountKeyListResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not an admin (`admin_only`), or the account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "Invalid `limit` or `cursor`", body = ErrorBody),
    ))]
pub(crate) async fn list_user_keys(
    state: web::Data<AppState>,
    SignedInUser(admin): SignedInUser,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<AccountKeyListResponse>, ApiError> {
    state.admin.require_admin(&admin).await?;
    let target = user_id(&path)?;
    let page = state
        .admin
        .account_keys(&admin, target, query.page()?)
        .await?;
    Ok(web::Json(AccountKeyListResponse {
        keys: page.items.into_iter().map(KeyResponse::from).collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}

/// Every admin action, newest first.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("access_token" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of the audit", body = AuditListResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not an admin (`admin_only`), or the account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 422, description = "Invalid `limit` or `cursor`", body = ErrorBody),
    ))]
pub(crate) async fn audit(
    state: web::Data<AppState>,
    SignedInUser(admin): SignedInUser,
    query: web::Query<PageQuery>,
) -> Result<web::Json<AuditListResponse>, ApiError> {
    state.admin.require_admin(&admin).await?;
    let page = state.admin.audit(&admin, query.page()?).await?;
    Ok(web::Json(AuditListResponse {
        entries: page
            .items
            .into_iter()
            .map(AuditEntryResponse::from)
            .collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}
