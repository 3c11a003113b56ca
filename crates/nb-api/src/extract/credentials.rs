//! Who is calling: access tokens (JWT, for account routes) and API keys (for generation).
//!
//! Each kind of route accepts only its own kind of credential: an API key sent to an account
//! route, or an access token sent to a generation route, is a 401 that says which to use.
//! Account routes also take the console's session cookie (with a CSRF header on writes);
//! API keys only ever come in `Authorization`.
//!
//! `Authorization` is read as RFC 9110 §11 says: the scheme `Bearer` in any case, one or
//! more spaces, then a token68. (actix-web-httpauth's extractor accepts only `Bearer` spelt
//! exactly so, which refuses the `bearer` our own login answer names as `token_type`.)

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use nb_domain::accounts::{SessionId, User, UserId};
use nb_domain::api_keys::{AuthenticatedApiKey, KeyMode};

use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::IssuedAccessToken;

fn missing_credentials() -> ApiError {
    ApiError::unauthorized(
        "missing_credentials",
        "Send your credentials in an `Authorization: Bearer <token>` header.",
    )
}

/// `Authorization: Bearer <token68>`, the scheme in any case, one or more spaces before the
/// token.
pub fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(missing_credentials)?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(missing_credentials)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing_credentials());
    }
    let token = rest.trim_matches(' ');
    let body = token.trim_end_matches('=');
    let is_token68 = !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if is_token68 {
        Ok(token.to_owned())
    } else {
        Err(missing_credentials())
    }
}

/// The console's session cookie: the access token, HttpOnly (scripts never see it).
pub const SESSION_COOKIE: &str = "nb_session";
/// The console's CSRF token (double submit): readable by the console's script, which sends it
/// back in [`CSRF_HEADER`] on every state-changing request made with the session cookie.
pub const CSRF_COOKIE: &str = "nb_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The access token of an account route: `Authorization: Bearer …` when sent, else the
/// session cookie — and then, on anything but GET and HEAD, only with an `X-CSRF-Token`
/// header equal to the CSRF cookie (a page on another site cannot read the cookie, so it
/// cannot send it; SameSite=Strict keeps both cookies off cross-site requests anyway).
fn access_token(req: &HttpRequest) -> Result<String, ApiError> {
    if req.headers().contains_key(AUTHORIZATION) {
        return bearer_token(req);
    }
    let Some(session) = req.cookie(SESSION_COOKIE) else {
        return Err(missing_credentials());
    };
    if !req.method().is_safe() {
        let expected = req.cookie(CSRF_COOKIE);
        let presented = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok());
        let matches = match (&expected, presented) {
            (Some(expected), Some(presented)) => {
                !expected.value().is_empty()
                    && same_secret(expected.value().as_bytes(), presented.as_bytes())
            }
            _ => false,
        };
        if !matches {
            return Err(ApiError::new(
                actix_web::http::StatusCode::FORBIDDEN,
                "csrf_check_failed",
                "A request made with the session cookie must send the `nb_csrf` cookie's value \
                 in an `X-CSRF-Token` header.",
            ));
        }
    }
    Ok(session.value().to_owned())
}

/// The cookies of a console session: the access token (HttpOnly) and a fresh CSRF token,
/// both `SameSite=Strict`, `Path=/`, for the token's lifetime; `Secure` when the request came
/// over HTTPS (directly or as the proxy says).
pub fn session_cookies(
    req: &HttpRequest,
    token: &IssuedAccessToken,
    csrf_token: String,
) -> [actix_web::cookie::Cookie<'static>; 2] {
    use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
    let secure = req.connection_info().scheme() == "https";
    let max_age = CookieDuration::seconds(i64::try_from(token.expires_in).unwrap_or(i64::MAX));
    let session = Cookie::build(SESSION_COOKIE, token.token.clone())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path("/")
        .max_age(max_age)
        .finish();
    let csrf = Cookie::build(CSRF_COOKIE, csrf_token)
        .http_only(false)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path("/")
        .max_age(max_age)
        .finish();
    [session, csrf]
}

/// Cookies that remove the console's session from the browser.
pub fn cleared_session_cookies() -> [actix_web::cookie::Cookie<'static>; 2] {
    use actix_web::cookie::{Cookie, SameSite};
    [SESSION_COOKIE, CSRF_COOKIE].map(|name| {
        let mut cookie = Cookie::build(name, "")
            .same_site(SameSite::Strict)
            .path("/")
            .finish();
        cookie.make_removal();
        cookie
    })
}

/// Constant-time comparison (`subtle`), so the token cannot be guessed byte by byte from
/// timings.
pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.ct_eq(expected).into()
}

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("AppState is not registered on the app"))
}

/// The signed-in user of an account route, from `Authorization: Bearer <access token>`, as
/// long as the token's session lives.
#[derive(Debug, Clone)]
pub struct SignedInUser(pub User);

/// The signed-in user and the session their token stands for (for logout).
#[derive(Debug, Clone)]
pub struct SignedInSession {
    pub user: User,
    pub session: SessionId,
}

impl FromRequest for SignedInSession {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credentials = access_token(req).and_then(|token| Ok((token, app_state(req)?)));
        Box::pin(async move {
            let (token, state) = credentials?;
            if KeyMode::of_credential(&token).is_some() {
                return Err(ApiError::unauthorized(
                    "wrong_credential_type",
                    "This route takes an access token from /v1/auth/login, not an API key.",
                ));
            }
            signed_in(&state, &token).await
        })
    }
}

/// The session and user of an access token.
async fn signed_in(state: &AppState, token: &str) -> Result<SignedInSession, ApiError> {
    let (user_id, session) = state.access_tokens.verify(token).ok_or_else(|| {
        ApiError::unauthorized(
            "invalid_token",
            "The access token is invalid or has expired.",
        )
    })?;
    let user = state.accounts.signed_in_user(user_id, session).await?;
    Ok(SignedInSession { user, session })
}

impl FromRequest for SignedInUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let signed_in = SignedInSession::from_request(req, payload);
        Box::pin(async move { Ok(Self(signed_in.await?.user)) })
    }
}

/// The API key of a generation route, from `Authorization: Bearer nb_live_…` (or
/// `nb_test_…`).
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyCaller(pub AuthenticatedApiKey);

impl FromRequest for ApiKeyCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credentials = bearer_token(req).and_then(|token| Ok((token, app_state(req)?)));
        Box::pin(async move {
            let (token, state) = credentials?;
            if KeyMode::of_credential(&token).is_none() {
                return Err(ApiError::unauthorized(
                    "wrong_credential_type",
                    "This route takes an API key (nb_live_… or nb_test_…), not an access token.",
                ));
            }
            Ok(Self(state.api_keys.authenticate(&token).await?))
        })
    }
}

/// Routes that take either credential (history): an access token stands for the whole
/// account, an API key for that key alone.
#[derive(Debug, Clone)]
pub enum Caller {
    Account(User),
    Key(AuthenticatedApiKey),
}

impl Caller {
    pub fn user_id(&self) -> UserId {
        match self {
            Self::Account(user) => user.id,
            Self::Key(key) => key.user_id,
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credentials = access_token(req).and_then(|token| Ok((token, app_state(req)?)));
        Box::pin(async move {
            let (token, state) = credentials?;
            if KeyMode::of_credential(&token).is_some() {
                Ok(Self::Key(state.api_keys.authenticate(&token).await?))
            } else {
                Ok(Self::Account(signed_in(&state, &token).await?.user))
            }
        })
    }
}
