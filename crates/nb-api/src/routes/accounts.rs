//! `/v1/auth/*`: registration, login, and the signed-in user.

use actix_web::{HttpRequest, HttpResponse, web};
use nb_domain::accounts::{EmailAddress, Password, Session, User};
use nb_domain::admin::AdminError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::credentials::{
    SignedInSession, SignedInUser, cleared_session_cookies, session_cookies,
};
use crate::extract::json::JsonBody;
use crate::routes::admin::AccountLimitsResponse;
use crate::state::AppState;
use crate::tokens::IssuedAccessToken;
use crate::views::{NO_STORE, UsageTotals};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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

/// How the new session is handed over.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionParams {
    /// `cookie`: for browsers (the console) — the access token goes into an HttpOnly,
    /// SameSite=Strict cookie with a CSRF cookie beside it, and is not in the body.
    #[param(value_type = String, required = false, example = "cookie")]
    session: Option<String>,
}

impl SessionParams {
    fn wants_cookie(&self) -> Result<bool, ApiError> {
        match self.session.as_deref() {
            None => Ok(false),
            Some("cookie") => Ok(true),
            Some(_) => Err(ApiError::invalid_field(
                "session",
                "`session` may only be `cookie`.",
            )),
        }
    }
}

/// A browser session: the token is in the cookies, not here.
#[derive(Serialize, ToSchema)]
pub(crate) struct CookieSessionResponse {
    user: UserResponse,
    /// Seconds the session (and its cookies) last.
    expires_in: u64,
}

/// The answer that starts a browser session: the cookies, and the user.
fn cookie_session(
    state: &AppState,
    request: &HttpRequest,
    mut response: actix_web::HttpResponseBuilder,
    user: User,
    session: &Session,
    token: &IssuedAccessToken,
) -> Result<HttpResponse, ApiError> {
    let csrf = state.access_tokens.csrf_token(session.id);
    for cookie in session_cookies(request, token, csrf) {
        response.cookie(cookie);
    }
    Ok(response
        .insert_header(NO_STORE)
        .json(CookieSessionResponse {
            user: user.into(),
            expires_in: token.expires_in,
        }))
}

/// A new session handed to the client (200): the console's cookies, or the access token in
/// the body.
fn session_answer(
    state: &AppState,
    request: &HttpRequest,
    user: User,
    session: &Session,
    via_cookie: bool,
) -> Result<HttpResponse, ApiError> {
    let issued = state
        .access_tokens
        .issue(session)
        .map_err(ApiError::internal)?;
    if via_cookie {
        return cookie_session(state, request, HttpResponse::Ok(), user, session, &issued);
    }
    let token: AccessTokenResponse = issued.into();
    Ok(HttpResponse::Ok().insert_header(NO_STORE).json(token))
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

/// Create an account and get an access token (or, with `?session=cookie`, a browser session).
#[utoipa::path(post, path = "/v1/auth/register", tag = "accounts", request_body = RegisterRequest,
    params(SessionParams),
    responses(
        (status = 201, description = "Registered (with `?session=cookie`: a `CookieSessionResponse` and `Set-Cookie`s)", body = RegisterResponse),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid email or password", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    ))]
pub(crate) async fn register(
    state: web::Data<AppState>,
    request: HttpRequest,
    params: web::Query<SessionParams>,
    body: JsonBody<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let wants_cookie = params.wants_cookie()?;
    let RegisterRequest { email, password } = body.0;
    let email = EmailAddress::parse(&email);
    state
        .throttle
        .auth_attempt(
            state.client_addresses.client_address(&request),
            email.as_ref().ok(),
        )
        .await?;
    let email = email.map_err(|error| ApiError::invalid_field("email", error.to_string()))?;
    let password = Password::parse_new(password)
        .map_err(|error| ApiError::invalid_field("password", error.to_string()))?;
    let user = state.accounts.register(email, password).await?;
    let session = state.accounts.start_session(user.id).await?;
    let token = state
        .access_tokens
        .issue(&session)
        .map_err(ApiError::internal)?;
    if wants_cookie {
        return cookie_session(
            &state,
            &request,
            HttpResponse::Created(),
            user,
            &session,
            &token,
        );
    }
    Ok(HttpResponse::Created()
        .insert_header(NO_STORE)
        .json(RegisterResponse {
            user: user.into(),
            token: token.into(),
        }))
}

/// Exchange an email and password for an access token (or, with `?session=cookie`, a browser
/// session).
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    params(SessionParams),
    responses(
        (status = 200, description = "Logged in (with `?session=cookie`: a `CookieSessionResponse` and `Set-Cookie`s)", body = AccessTokenResponse),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 403, description = "The right password, for an account the operator disabled (`account_disabled`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    ))]
pub(crate) async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    params: web::Query<SessionParams>,
    body: JsonBody<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let wants_cookie = params.wants_cookie()?;
    let LoginRequest { email, password } = body.0;
    let email = EmailAddress::parse(&email);
    state
        .throttle
        .auth_attempt(
            state.client_addresses.client_address(&request),
            email.as_ref().ok(),
        )
        .await?;
    let user = state
        .accounts
        .login(email.ok(), Password::attempt(password))
        .await?;
    let session = state.accounts.start_session(user.id).await?;
    session_answer(&state, &request, user, &session, wants_cookie)
}

/// End this session: the access token that was sent stops working at once, and a browser
/// session's cookies are removed. Other sessions of the account (other devices) go on.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts", security(("access_token" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
    ))]
pub(crate) async fn logout(
    state: web::Data<AppState>,
    signed_in: SignedInSession,
) -> Result<HttpResponse, ApiError> {
    state
        .accounts
        .end_session(signed_in.user.id, signed_in.session)
        .await?;
    let mut response = HttpResponse::NoContent();
    for cookie in cleared_session_cookies() {
        response.cookie(cookie);
    }
    Ok(response.finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// Change the password. Every session of the account ends (every access token issued so far
/// stops working); the answer carries a new token to carry on with — or, on a console session
/// (the cookie), renews its cookies and carries no token (the page's scripts never see one).
#[utoipa::path(post, path = "/v1/auth/password", tag = "accounts", security(("access_token" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Changed; a new access token (a console session: a `CookieSessionResponse` and new `Set-Cookie`s)", body = AccessTokenResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`), or a console session without its CSRF token (`csrf_check_failed`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong current password (`wrong_password`) or an invalid new one", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    ))]
pub(crate) async fn change_password(
    state: web::Data<AppState>,
    request: HttpRequest,
    signed_in: SignedInSession,
    body: JsonBody<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let SignedInSession {
        user, via_cookie, ..
    } = signed_in;
    let ChangePasswordRequest {
        current_password,
        new_password,
    } = body.0;
    // Guessing the current password with a stolen token is limited like logins.
    state
        .throttle
        .auth_attempt(
            state.client_addresses.client_address(&request),
            Some(&user.email),
        )
        .await?;
    let new_password = Password::parse_new(new_password)
        .map_err(|error| ApiError::invalid_field("new_password", error.to_string()))?;
    let session = state
        .accounts
        .change_password(user.id, Password::attempt(current_password), new_password)
        .await?;
    session_answer(&state, &request, user, &session, via_cookie)
}

/// The signed-in user, and whether they are an operator.
#[derive(Serialize, ToSchema)]
pub(crate) struct MeResponse {
    #[serde(flatten)]
    user: UserResponse,
    /// Whether the `/v1/admin` routes are open to this user (`NB_ADMIN_EMAILS`).
    is_admin: bool,
    /// The account's quotas and budgets over all its keys, as an operator set them (`null`:
    /// none).
    limits: AccountLimitsResponse,
    /// What all its keys made today and this calendar month (UTC), and what it cost.
    usage: UsageTotals,
}

/// The signed-in user, whether they are an admin, and their account's limits and usage.
#[utoipa::path(get, path = "/v1/auth/me", tag = "accounts", security(("access_token" = [])),
    responses(
        (status = 200, description = "The user", body = MeResponse),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
    ))]
pub(crate) async fn me(
    state: web::Data<AppState>,
    SignedInUser(user): SignedInUser,
) -> Result<web::Json<MeResponse>, ApiError> {
    let is_admin = match state.admin.require_admin(&user).await {
        Ok(()) => true,
        Err(AdminError::NotAdmin) => false,
        Err(error) => return Err(error.into()),
    };
    let account = state.admin.own_account(&user).await?;
    Ok(web::Json(MeResponse {
        user: user.into(),
        is_admin,
        limits: account.settings.limits.into(),
        usage: account.usage.into(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteAccountRequest {
    /// The account's password, once more.
    password: String,
}

/// Delete the account, for good. Its keys stop working at once; its sessions, generation
/// records (prompts) and stored images are deleted and its email is freed. The anonymous
/// daily usage counts and the operators' audit log are kept (see the README).
#[utoipa::path(delete, path = "/v1/auth/me", tag = "accounts", security(("access_token" = [])),
    operation_id = "delete_account",
    request_body = DeleteAccountRequest,
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong password (`wrong_password`)", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    ))]
pub(crate) async fn delete_account(
    state: web::Data<AppState>,
    request: HttpRequest,
    SignedInUser(user): SignedInUser,
    body: JsonBody<DeleteAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    // Guessing the password with a stolen token is limited like logins.
    state
        .throttle
        .auth_attempt(
            state.client_addresses.client_address(&request),
            Some(&user.email),
        )
        .await?;
    state
        .erasure
        .erase(user.id, Password::attempt(body.0.password))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
