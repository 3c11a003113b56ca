//! `/v1/auth/*`: registration, login, and the signed-in user.

use actix_web::{HttpRequest, HttpResponse, web};
use nb_domain::user::{EmailAddress, Password, User};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{IssuedAccessToken, SignedInUser};
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::AppState;

#[derive(Deserialize)]
pub(crate) struct RegisterRequest {
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize)]
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

#[derive(Serialize)]
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

#[derive(Serialize)]
pub(crate) struct RegisterResponse {
    user: UserResponse,
    #[serde(flatten)]
    token: AccessTokenResponse,
}

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

pub(crate) async fn me(SignedInUser(user): SignedInUser) -> web::Json<UserResponse> {
    web::Json(user.into())
}
