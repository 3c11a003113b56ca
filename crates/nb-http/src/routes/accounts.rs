//! `/v1/auth/*`: registration, login, and the signed-in user.

use actix_web::{HttpRequest, HttpResponse, web};
use nb_domain::user::{EmailAddress, Password, User};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{IssuedAccessToken, SignedInUser};
use crate::error::{ApiError, ErrorBody};
use crate::json::JsonBody;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub(crate) struct RegisterRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UserResponse {
    id: Uuid,
    email: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id.0,
            email: user.email.as_str().to_owned(),
            created_at: user.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AccessTokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

impl From<IssuedAccessToken> for AccessTokenResponse {
    fn from(issued: IssuedAccessToken) -> Self {
        Self {
            access_token: issued.token,
            token_type: "bearer",
            expires_in: issued.expires_in,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RegisterResponse {
    user: UserResponse,
    #[serde(flatten)]
    token: AccessTokenResponse,
}

/// Create an account and get an access token.
#[utoipa::path(post, path = "/v1/auth/register", tag = "accounts", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid email or password", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    ))]
pub(crate) async fn register(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: JsonBody<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let RegisterRequest { email, password } = body.0;
    state
        .rate_limits
        .check_auth_attempt(state.rate_limits.client_ip(&request), &email)?;
    let email = EmailAddress::parse(&email)
        .map_err(|error| ApiError::invalid_field("email", error.to_string()))?;
    let password = Password::parse_new(password)
        .map_err(|error| ApiError::invalid_field("password", error.to_string()))?;
    let user = state.accounts.register(email, password).await?;
    let token = state.access_tokens.issue(user.id)?;
    Ok(HttpResponse::Created().json(RegisterResponse {
        user: user.into(),
        token: token.into(),
    }))
}

/// Exchange an email and password for an access token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = AccessTokenResponse),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    ))]
pub(crate) async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: JsonBody<LoginRequest>,
) -> Result<web::Json<AccessTokenResponse>, ApiError> {
    let LoginRequest { email, password } = body.0;
    state
        .rate_limits
        .check_auth_attempt(state.rate_limits.client_ip(&request), &email)?;
    let user = state
        .accounts
        .login(&email, Password::attempt(password))
        .await?;
    Ok(web::Json(state.access_tokens.issue(user.id)?.into()))
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/auth/me", tag = "accounts", security(("access_token" = [])),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
    ))]
pub(crate) async fn me(SignedInUser(user): SignedInUser) -> web::Json<UserResponse> {
    web::Json(user.into())
}
