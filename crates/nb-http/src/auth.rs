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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nb_domain::api_keys::{AuthenticatedApiKey, KeyMode};
use nb_domain::ports::Clock;
use nb_domain::user::{Session, SessionId, User, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::JwtSecret;
use crate::error::ApiError;
use crate::state::AppState;

/// Clock skew tolerated when checking `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// The user.
    pub sub: String,
    /// The session the token stands for: ending it ends the token.
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// A freshly signed access token. `Debug` hides the token.
pub struct IssuedAccessToken {
    pub token: String,
    pub expires_in: u64,
}

impl fmt::Debug for IssuedAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedAccessToken")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Signs and checks HS256 access tokens.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    pub fn new(secret: &JwtSecret, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Self {
            encoding: EncodingKey::from_secret(secret.expose_secret()),
            decoding: DecodingKey::from_secret(secret.expose_secret()),
            validation,
            ttl,
            clock,
        }
    }

    /// A token for a session, valid until the session expires.
    pub fn issue(&self, session: &Session) -> Result<IssuedAccessToken, ApiError> {
        let issued_at = self.clock.now().unix_timestamp();
        let expires_at = session.expires_at.unix_timestamp();
        let claims = AccessTokenClaims {
            sub: session.user_id.to_string(),
            sid: session.id.to_string(),
            iat: issued_at,
            nbf: issued_at,
            exp: expires_at,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(IssuedAccessToken {
            token,
            expires_in: u64::try_from(expires_at - issued_at).unwrap_or(0),
        })
    }

    /// The user and session of a token that is well signed, not expired, already valid
    /// (`nbf`) and not issued in the future (`iat`), each within the leeway.
    pub fn verify(&self, token: &str) -> Option<(UserId, SessionId)> {
        let data =
            jsonwebtoken::decode::<AccessTokenClaims>(token, &self.decoding, &self.validation)
                .ok()?;
        let now = self.clock.now().unix_timestamp();
        if data.claims.iat > now.saturating_add_unsigned(LEEWAY_SECONDS) {
            return None;
        }
        let user = Uuid::parse_str(&data.claims.sub).ok().map(UserId)?;
        let session = Uuid::parse_str(&data.claims.sid).ok().map(SessionId)?;
        Some((user, session))
    }

    /// How long tokens (and their sessions) last.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

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
pub(crate) fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
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
