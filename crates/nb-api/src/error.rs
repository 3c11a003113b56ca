//! The one place where errors become HTTP responses.
//!
//! Every error body is `{"error": {"code", "message", "field"?}}`. Domain errors are mapped
//! here and nowhere else; an unexpected error becomes an opaque 500 whose cause chain is
//! logged, never sent.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use nb_domain::RepositoryError;
use nb_domain::accounts::EraseAccountError;
use nb_domain::accounts::PasswordHashingError;
use nb_domain::accounts::{ChangePasswordError, FindUserError, LoginError, RegisterError};
use nb_domain::admin::AdminError;
use nb_domain::api_keys::{
    AuthenticateKeyError, CreateKeyError, FindKeyError, RevokeKeyError, RollKeyError, RollRefusal,
    UpdateKeyError,
};
use nb_domain::error::BoxError;
use nb_domain::generation::Standings;
use nb_domain::generation::{
    ConversationError, GenerateError, HistoryError, InvalidGenerationRequest, InvalidImageCount,
    InvalidInputImages, ProviderError, StorageError,
};
use nb_domain::idempotency::IdempotencyError;
use nb_domain::quota::ReserveError;
use nb_domain::rate_limit::{LimitedAction, RateLimitError, ThrottleError};
use serde::Serialize;

use crate::headers::whole_seconds;

/// An error as the client will see it, plus the cause for the log.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
    /// The quota or budget that refused (its headers go on the answer).
    standings: Option<Box<Standings>>,
    cause: Option<BoxError>,
}

/// Every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// Stable, snake_case: what to match on.
    #[schema(example = "validation_failed")]
    code: &'a str,
    /// A sentence for people.
    message: &'a str,
    /// The request field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            standings: None,
            cause: None,
        }
    }

    /// 422 for a request field that is present but not acceptable.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        );
        error.field = Some(field.to_owned());
        error
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn with_field(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    /// Adds `Retry-After: <seconds>`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn with_standings(mut self, standings: Standings) -> Self {
        self.standings = Some(Box::new(standings));
        self
    }

    pub(crate) fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// A 500 whose cause is logged and whose body says nothing more.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side; please try again.",
        )
        .with_cause(cause)
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The same answer without its cause (which is logged here, as rendering would).
    pub fn public_copy(&self) -> Self {
        if let Some(cause) = self.cause.as_deref() {
            tracing::warn!(code = self.code, cause = %cause_chain(cause), "request failed");
        }
        Self {
            status: self.status,
            code: self.code,
            message: self.message.clone(),
            field: self.field.clone(),
            retry_after: self.retry_after,
            standings: self.standings.clone(),
            cause: None,
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status.as_u16())
            .field("code", &self.code)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

/// Writes an error and all its sources on one line: `outer: inner: innermost`.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            let cause = self.cause.as_deref().map(|cause| cause_chain(cause));
            tracing::error!(code = self.code, cause = cause.as_deref(), "request failed");
        } else if let Some(cause) = self.cause.as_deref() {
            tracing::warn!(code = self.code, cause = %cause_chain(cause), "request failed");
        }
        let mut response = HttpResponse::build(self.status);
        // After a body that stopped arriving, the connection cannot be reused.
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response.force_close();
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        let mut response = response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        });
        if let Some(standings) = self.standings.as_deref() {
            crate::headers::insert_standings(response.headers_mut(), standings);
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The `code` of an error answer, on the response's extensions: what decides, after it was
/// rendered, whether the answer is kept for an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl From<RepositoryError> for ApiError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "The database is unavailable; please try again shortly.",
            )
            .with_retry_after(1)
            .with_cause(error),
            RepositoryError::Unexpected(_) => Self::internal(error),
        }
    }
}

impl From<PasswordHashingError> for ApiError {
    fn from(error: PasswordHashingError) -> Self {
        Self::internal(error)
    }
}

impl From<RegisterError> for ApiError {
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::EmailTaken => Self::new(
                StatusCode::CONFLICT,
                "email_taken",
                "An account with this email already exists.",
            )
            .with_field(Some("email".into())),
            RegisterError::ReservedDomain => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reserved_domain",
                "This email is at a reserved domain (.invalid, .test, .example, .localhost) \
                 where no mailbox can be; use a real address.",
            )
            .with_field(Some("email".into())),
            RegisterError::LooksLikeAReservedEmail => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "email_confusable",
                "This email looks the same as one reserved on this server; use another \
                 address.",
            )
            .with_field(Some("email".into())),
            RegisterError::Hashing(error) => error.into(),
            RegisterError::Repository(error) => error.into(),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::InvalidCredentials => {
                Self::unauthorized("invalid_credentials", "Invalid email or password.")
            }
            LoginError::AccountDisabled => account_disabled(),
            LoginError::Hashing(error) => error.into(),
            LoginError::Repository(error) => error.into(),
        }
    }
}

impl From<FindUserError> for ApiError {
    /// Only reached for the caller's own account: a token whose user or session is gone.
    fn from(error: FindUserError) -> Self {
        match error {
            FindUserError::NotFound => Self::unauthorized(
                "invalid_token",
                "The access token is invalid or has expired.",
            ),
            FindUserError::Disabled => account_disabled(),
            FindUserError::Repository(error) => error.into(),
        }
    }
}

impl From<ChangePasswordError> for ApiError {
    fn from(error: ChangePasswordError) -> Self {
        match error {
            ChangePasswordError::WrongPassword => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_password",
                "The current password is not right.",
            )
            .with_field(Some("current_password".into())),
            ChangePasswordError::NotFound => Self::unauthorized(
                "invalid_token",
                "The access token is invalid or has expired.",
            ),
            ChangePasswordError::Hashing(error) => error.into(),
            ChangePasswordError::Repository(error) => error.into(),
        }
    }
}

impl From<EraseAccountError> for ApiError {
    fn from(error: EraseAccountError) -> Self {
        match error {
            EraseAccountError::WrongPassword => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_password",
                "The password is not right.",
            )
            .with_field(Some("password".into())),
            EraseAccountError::NotFound => Self::unauthorized(
                "invalid_token",
                "The access token is invalid or has expired.",
            ),
            EraseAccountError::AdminCannotErase => Self::new(
                StatusCode::FORBIDDEN,
                "admin_cannot_erase",
                "An admin account cannot erase itself: its email would be free for anyone to \
                 register as admin. Ask the operator to take your email off NB_ADMIN_EMAILS \
                 (and restart), then erase the account.",
            ),
            EraseAccountError::Hashing(error) => error.into(),
            EraseAccountError::Repository(error) => error.into(),
        }
    }
}

impl From<CreateKeyError> for ApiError {
    fn from(error: CreateKeyError) -> Self {
        match error {
            CreateKeyError::TooManyActiveKeys { max_active } => Self::new(
                StatusCode::CONFLICT,
                "key_limit_reached",
                format!(
                    "An account may hold {max_active} active keys; revoke one before creating \
                     another."
                ),
            ),
            CreateKeyError::ExpiryInThePast => {
                Self::invalid_field("expires_at", "expires_at must be in the future")
            }
            CreateKeyError::Randomness(error) => Self::internal(error),
            CreateKeyError::Repository(error) => error.into(),
        }
    }
}

fn invalid_api_key() -> ApiError {
    ApiError::unauthorized(
        "invalid_api_key",
        "The API key is invalid or has been revoked.",
    )
}

fn key_expired() -> ApiError {
    ApiError::unauthorized(
        "key_expired",
        "The API key has expired (it was rolled or set to expire); use its successor.",
    )
}

fn account_disabled() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "account_disabled",
        "This account has been disabled by the operator.",
    )
}

fn no_such_key() -> ApiError {
    ApiError::not_found("key_not_found", "No such API key.")
}

impl From<RollKeyError> for ApiError {
    fn from(error: RollKeyError) -> Self {
        match error {
            RollKeyError::Refused(RollRefusal::NotFound) => no_such_key(),
            RollKeyError::Refused(RollRefusal::AlreadyRolled) => Self::new(
                StatusCode::CONFLICT,
                "key_already_rolled",
                "This key was already rolled; roll its successor (the key whose rolled_from \
                 names it) instead.",
            ),
            RollKeyError::Refused(RollRefusal::Expired) => Self::new(
                StatusCode::CONFLICT,
                "key_expired",
                "This key has expired and cannot be rolled; create a new key instead.",
            ),
            RollKeyError::Refused(RollRefusal::TooManyActiveKeys { max_active }) => Self::new(
                StatusCode::CONFLICT,
                "key_limit_reached",
                format!(
                    "An account may hold {max_active} active keys, and a key in its grace \
                     period is active: revoke one, or roll with grace_seconds 0."
                ),
            ),
            RollKeyError::Randomness(error) => Self::internal(error),
            RollKeyError::Repository(error) => error.into(),
        }
    }
}

impl From<FindKeyError> for ApiError {
    fn from(error: FindKeyError) -> Self {
        match error {
            FindKeyError::NotFound => no_such_key(),
            FindKeyError::Randomness(error) => Self::internal(error),
            FindKeyError::Repository(error) => error.into(),
        }
    }
}

impl From<UpdateKeyError> for ApiError {
    fn from(error: UpdateKeyError) -> Self {
        match error {
            UpdateKeyError::NotFound => no_such_key(),
            UpdateKeyError::ExpiryInThePast => {
                Self::invalid_field("expires_at", "expires_at must be in the future")
            }
            UpdateKeyError::Repository(error) => error.into(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::NotAdmin => Self::new(
                StatusCode::FORBIDDEN,
                "admin_only",
                "Only the operator's admin accounts may do this.",
            ),
            AdminError::NotFound => Self::not_found("user_not_found", "No such account."),
            AdminError::DisablingSelf => {
                Self::invalid_field("disabled", "An admin cannot disable their own account.")
            }
            AdminError::Repository(error) => error.into(),
        }
    }
}

impl From<ReserveError> for ApiError {
    fn from(error: ReserveError) -> Self {
        let standings = Standings::of_refusal(&error);
        match error {
            ReserveError::Exceeded(standing) => refused_until_reset(
                "quota_exceeded",
                format!(
                    "This {} may make {} images a {} and has {} left; the quota resets",
                    standing.scope.as_str(),
                    standing.limit,
                    standing.period.as_str(),
                    standing.remaining(),
                ),
                (standing.resets_at, standing.seconds_to_reset()),
                standings,
            ),
            ReserveError::OverBudget(standing) => refused_until_reset(
                "budget_exceeded",
                format!(
                    "This {} may spend ${} a {} and has ${} left; the budget resets",
                    standing.scope.as_str(),
                    standing.budget,
                    standing.period.as_str(),
                    standing.remaining(),
                ),
                (standing.resets_at, standing.seconds_to_reset()),
                standings,
            ),
            ReserveError::KeyRevoked => invalid_api_key(),
            ReserveError::KeyExpired => key_expired(),
            ReserveError::AccountDisabled => account_disabled(),
            ReserveError::Repository(error) => error.into(),
        }
    }
}

/// 429 for a spent quota or budget: `what` (a sentence ending in "resets"), when it resets,
/// `Retry-After` to then, and the headers of where it stands.
fn refused_until_reset(
    code: &'static str,
    what: String,
    (resets_at, seconds): (time::OffsetDateTime, u64),
    standings: Standings,
) -> ApiError {
    let at = resets_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        code,
        format!("{what} at {at} (see Retry-After)."),
    )
    .with_retry_after(seconds)
    .with_standings(standings)
}

impl From<RevokeKeyError> for ApiError {
    fn from(error: RevokeKeyError) -> Self {
        match error {
            RevokeKeyError::NotFound => no_such_key(),
            RevokeKeyError::Repository(error) => error.into(),
        }
    }
}

impl From<AuthenticateKeyError> for ApiError {
    fn from(error: AuthenticateKeyError) -> Self {
        match error {
            AuthenticateKeyError::InvalidKey => invalid_api_key(),
            AuthenticateKeyError::Expired => key_expired(),
            AuthenticateKeyError::AccountDisabled => account_disabled(),
            AuthenticateKeyError::Repository(error) => error.into(),
        }
    }
}

impl From<InvalidGenerationRequest> for ApiError {
    fn from(error: InvalidGenerationRequest) -> Self {
        match &error {
            // Gone for good: a retry or another size cannot help, another model can.
            InvalidGenerationRequest::Retired(_) => {
                Self::new(StatusCode::GONE, "model_retired", format!("{error}."))
                    .with_field(Some(error.field().into()))
            }
            _ => Self::invalid_field(error.field(), error.to_string()),
        }
    }
}

impl From<InvalidInputImages> for ApiError {
    fn from(error: InvalidInputImages) -> Self {
        if error.is_too_large() {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("{error}."),
            )
            .with_field(Some(error.field().into()))
        } else {
            Self::invalid_field(error.field(), format!("{error}."))
        }
    }
}

impl From<nb_domain::generation::InvalidOutputEncoding> for ApiError {
    fn from(error: nb_domain::generation::InvalidOutputEncoding) -> Self {
        Self::invalid_field(error.field(), error.to_string())
    }
}

impl From<InvalidImageCount> for ApiError {
    fn from(error: InvalidImageCount) -> Self {
        Self::invalid_field("n", error.to_string())
    }
}

/// When the provider gives no wait time, how long clients are asked to wait.
const DEFAULT_RETRY_AFTER_SECONDS: u64 = 30;

impl From<nb_domain::webhooks::WebhookError> for ApiError {
    fn from(error: nb_domain::webhooks::WebhookError) -> Self {
        use nb_domain::webhooks::WebhookError;
        match error {
            WebhookError::NotFound => {
                Self::not_found("webhook_not_found", "No such webhook endpoint.")
            }
            WebhookError::InvalidUrl(error) => Self::invalid_field("url", format!("{error}.")),
            WebhookError::InvalidEvents(error) => {
                Self::invalid_field("events", format!("{error}."))
            }
            WebhookError::DescriptionTooLong => {
                Self::invalid_field("description", format!("{error}."))
            }
            WebhookError::NotConfigured => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhooks_not_configured",
                "Webhooks are not configured on this server: the operator must set \
                 NB_ENCRYPTION_KEY (the key that seals their secrets, the same on every instance).",
            ),
            WebhookError::Randomness(error) => Self::internal(error.to_string()),
            WebhookError::Repository(error) => error.into(),
        }
    }
}

impl From<HistoryError> for ApiError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::NotFound => {
                Self::not_found("generation_not_found", "No such generation.")
            }
            HistoryError::NotFinished => Self::new(
                StatusCode::CONFLICT,
                "generation_not_finished",
                "The generation is queued or running: cancel it, or delete it once it has \
                 finished.",
            ),
            HistoryError::NotCancelable { status } => Self::new(
                StatusCode::CONFLICT,
                "not_cancelable",
                format!(
                    "The generation is {}: only a queued generation can be canceled.",
                    status.as_str()
                ),
            ),
            HistoryError::Storage(error) => storage_error(error, "Nothing was changed:"),
            HistoryError::Repository(error) => error.into(),
        }
    }
}

/// The image store's failures: 503 while it is unreachable (retry later), 507 when it is
/// full (the operator must act), 502 otherwise. `context` starts the message.
fn storage_error(error: StorageError, context: &str) -> ApiError {
    let answer = match &error {
        StorageError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("{context} the image store is unavailable; please try again shortly."),
        )
        .with_retry_after(STORAGE_RETRY_AFTER_SECONDS),
        StorageError::Full(_) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            format!("{context} the image store is full; the operator must free space."),
        ),
        StorageError::Failed(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "storage_failed",
            format!("{context} the image store failed; please try again."),
        ),
    };
    answer.with_cause(error)
}

/// How long clients are asked to wait when the image store is unavailable.
const STORAGE_RETRY_AFTER_SECONDS: u64 = 5;

impl From<GenerateError> for ApiError {
    fn from(error: GenerateError) -> Self {
        match error {
            GenerateError::Quota(error) => error.into(),
            GenerateError::Provider(error) => error.into(),
            GenerateError::Storage(error) => storage_error(error, "The image was generated but"),
            GenerateError::Repository(error) => error.into(),
            GenerateError::Conversation(error) => error.into(),
            GenerateError::Conversion(error) => Self::new(
                StatusCode::BAD_GATEWAY,
                "conversion_failed",
                "The image was made but could not be converted to the format asked for; \
                 ask for another output_format, or none.",
            )
            .with_cause(error),
        }
    }
}

impl From<ConversationError> for ApiError {
    fn from(error: ConversationError) -> Self {
        let field = Some("previous_generation_id".to_owned());
        match error {
            ConversationError::NotFound => {
                Self::not_found("generation_not_found", format!("{error}.")).with_field(field)
            }
            ConversationError::Unusable(_) | ConversationError::TooLong { .. } => {
                Self::invalid_field("previous_generation_id", format!("{error}."))
            }
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::NotConfigured => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "generation_not_configured",
                "Image generation is not configured on this server: the operator must set \
                 GOOGLE_API_KEY.",
            ),
            ProviderError::Unsupported { field, message } => Self::invalid_field(field, message),
            ProviderError::ContentRejected { reason } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "content_rejected",
                format!("The image provider returned no image: {reason}."),
            ),
            ProviderError::Busy { retry_after } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                "Too many images are being generated right now; please retry after the time in \
                 Retry-After.",
            )
            .with_retry_after(retry_after.as_secs().max(1)),
            ProviderError::RateLimited { retry_after } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_rate_limited",
                "The image provider is busy; please retry after the time in Retry-After.",
            )
            .with_retry_after(
                retry_after.map_or(DEFAULT_RETRY_AFTER_SECONDS, |wait| {
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                }),
            ),
            ProviderError::ModelNotFound { model } => Self::new(
                StatusCode::BAD_GATEWAY,
                "model_unavailable",
                format!(
                    "The image provider does not offer the model {model} (it may have been \
                     retired); the operator should update NB_IMAGE_MODELS."
                ),
            ),
            ProviderError::CredentialsRejected => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_auth_failed",
                "The image provider rejected this server's credentials; the operator must fix \
                 GOOGLE_API_KEY.",
            ),
            ProviderError::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "The image provider did not answer in time; please try again.",
            ),
            ProviderError::Upstream(detail) => {
                tracing::warn!(detail = %detail, "upstream failure");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    "The image provider failed; please try again.",
                )
            }
            ProviderError::Refused { status } => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!(
                    "The image provider refused the request ({status}); the same request would \
                     be refused again."
                ),
            ),
        }
    }
}

impl From<ThrottleError> for ApiError {
    fn from(error: ThrottleError) -> Self {
        let (action, decision) = match error {
            ThrottleError::Limited { action, decision } => (action, decision),
            ThrottleError::Limiter(RateLimitError::Unavailable(cause)) => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate_limiter_unavailable",
                    "The store that counts rate limits is unavailable; please try again shortly.",
                )
                .with_retry_after(1)
                .with_cause(RateLimitError::Unavailable(cause));
            }
            ThrottleError::Limiter(RateLimitError::Repository(error)) => return error.into(),
        };
        crate::metrics::record_rate_limited(action.as_str());
        let retry_after = whole_seconds(decision.retry_after).max(1);
        let refusal = match action {
            LimitedAction::AuthByAddress
            | LimitedAction::AuthByEmailAndAddress
            | LimitedAction::AuthByEmail => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Too many sign-in or registration attempts; retry after the time in Retry-After.",
            ),
            LimitedAction::GenerationsByKey => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "This API key may make {} generation requests a minute; retry after the \
                     time in Retry-After.",
                    decision.limit
                ),
            ),
            LimitedAction::GenerationsByAccount => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "This account's keys together may make no more generation requests this \
                 minute; retry after the time in Retry-After.",
            ),
        };
        refusal.with_retry_after(retry_after)
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This Idempotency-Key was already used for a different request; use a new key \
                 for a new request.",
            )
            .with_field(Some("Idempotency-Key".into())),
            IdempotencyError::InProgress => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "A request with this Idempotency-Key is still running; retry later to get its \
                 answer.",
            )
            .with_retry_after(1),
            IdempotencyError::Repository(error) => ApiError::from(error),
        }
    }
}
