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

/// A request's credential, and where it came from.
enum Presented {
    /// `Authorization: Bearer …`: an access token or an API key.
    Bearer(String),
    /// The console's session cookie: only ever an access token.
    SessionCookie(String),
}

/// The one place a request's credential is read: `Authorization: Bearer …` when sent, else
/// the session cookie. An API key is taken from `Authorization` only: a cookie holding one is
/// refused on every route, so a key can never ride along with a browser's requests.
fn presented(req: &HttpRequest) -> Result<Presented, ApiError> {
    if req.headers().contains_key(AUTHORIZATION) {
        return bearer_token(req).map(Presented::Bearer);
    }
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Err(missing_credentials());
    };
    let token = cookie.value().to_owned();
    if KeyMode::of_credential(&token).is_some() {
        return Err(ApiError::unauthorized(
            "wrong_credential_type",
            "API keys are taken from the `Authorization: Bearer` header only, never from a \
             cookie.",
        ));
    }
    Ok(Presented::SessionCookie(token))
}

/// What a session cookie must come with: on anything but GET and HEAD, the CSRF token bound
/// to its session, in `X-CSRF-Token` (`Some` of what was sent); on reads, nothing (`None`).
fn required_csrf(req: &HttpRequest) -> Option<Option<String>> {
    (!req.method().is_safe()).then(|| {
        req.headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    })
}

fn csrf_check_failed() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::FORBIDDEN,
        "csrf_check_failed",
        "A request made with the session cookie must send the `nb_csrf` cookie's value in an \
         `X-CSRF-Token` header.",
    )
}

/// The cookies of a console session: the access token (HttpOnly) and its session's CSRF
/// token (`AccessTokens::csrf_token`), both `SameSite=Strict`, `Path=/`, for the token's
/// lifetime; `Secure` when the request came over HTTPS (directly or as the proxy says).
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

/// The signed-in user, the session their token stands for (for logout), and whether it came
/// in the console's cookie (answers then renew cookies rather than hand out tokens).
#[derive(Debug, Clone)]
pub struct SignedInSession {
    pub user: User,
    pub session: SessionId,
    pub via_cookie: bool,
}

impl FromRequest for SignedInSession {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credentials = presented(req).and_then(|presented| Ok((presented, app_state(req)?)));
        let csrf = required_csrf(req);
        Box::pin(async move {
            match credentials? {
                (Presented::Bearer(token), _) if KeyMode::of_credential(&token).is_some() => {
                    Err(ApiError::unauthorized(
                        "wrong_credential_type",
                        "This route takes an access token from /v1/auth/login, not an API key.",
                    ))
                }
                (Presented::Bearer(token), state) => signed_in(&state, &token, None).await,
                (Presented::SessionCookie(token), state) => {
                    signed_in(&state, &token, Some(csrf)).await
                }
            }
        })
    }
}

/// The session and user of an access token. A token from the session cookie
/// (`cookie_csrf` is `Some`) must come, on a write, with its session's CSRF token.
async fn signed_in(
    state: &AppState,
    token: &str,
    cookie_csrf: Option<Option<Option<String>>>,
) -> Result<SignedInSession, ApiError> {
    let (user_id, session) = state.access_tokens.verify(token).ok_or_else(|| {
        ApiError::unauthorized(
            "invalid_token",
            "The access token is invalid or has expired.",
        )
    })?;
    if let Some(Some(presented)) = &cookie_csrf {
        let expected = state.access_tokens.csrf_token(session);
        let matches = presented
            .as_deref()
            .is_some_and(|presented| same_secret(presented.as_bytes(), expected.as_bytes()));
        if !matches {
            return Err(csrf_check_failed());
        }
    }
    let user = state.accounts.signed_in_user(user_id, session).await?;
    Ok(SignedInSession {
        user,
        session,
        via_cookie: cookie_csrf.is_some(),
    })
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
        let credentials = presented(req).and_then(|presented| Ok((presented, app_state(req)?)));
        let csrf = required_csrf(req);
        Box::pin(async move {
            match credentials? {
                (Presented::Bearer(token), state) if KeyMode::of_credential(&token).is_some() => {
                    Ok(Self::Key(state.api_keys.authenticate(&token).await?))
                }
                (Presented::Bearer(token), state) => {
                    Ok(Self::Account(signed_in(&state, &token, None).await?.user))
                }
                (Presented::SessionCookie(token), state) => Ok(Self::Account(
                    signed_in(&state, &token, Some(csrf)).await?.user,
                )),
            }
        })
    }
}
