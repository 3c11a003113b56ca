//! Who is calling: access tokens (JWT, for account routes) and API keys (for generation).
//!
//! Each kind of route accepts only its own kind of credential: an API key sent to an account
//! route, or an access token sent to a generation route, is a 401 that says which to use.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use actix_web_httpauth::extractors::bearer::BearerAuth;
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nb_domain::api_keys::{API_KEY_PREFIX, AuthenticatedApiKey};
use nb_domain::ports::Clock;
use nb_domain::user::{User, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::JwtSecret;
use crate::error::ApiError;
use crate::state::AppState;

/// Clock skew tolerated when checking `exp`.
const EXPIRY_LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub sub: String,
    pub iat: i64,
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
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        validation.leeway = EXPIRY_LEEWAY_SECONDS;
        Self {
            encoding: EncodingKey::from_secret(secret.expose_secret()),
            decoding: DecodingKey::from_secret(secret.expose_secret()),
            validation,
            ttl,
            clock,
        }
    }

    pub fn issue(&self, user_id: UserId) -> Result<IssuedAccessToken, ApiError> {
        let issued_at = self.clock.now().unix_timestamp();
        let claims = AccessTokenClaims {
            sub: user_id.to_string(),
            iat: issued_at,
            exp: issued_at.saturating_add_unsigned(self.ttl.as_secs()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(IssuedAccessToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// The user a valid, unexpired token was issued to.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        let data =
            jsonwebtoken::decode::<AccessTokenClaims>(token, &self.decoding, &self.validation)
                .ok()?;
        Uuid::parse_str(&data.claims.sub).ok().map(UserId)
    }
}

fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    BearerAuth::extract(req)
        .into_inner()
        .map(|auth| auth.token().to_owned())
        .map_err(|_| {
            ApiError::unauthorized(
                "missing_credentials",
                "Send your credentials in an `Authorization: Bearer <token>` header.",
            )
        })
}

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("AppState is not registered on the app"))
}

/// The signed-in user of an account route, from `Authorization: Bearer <access token>`.
#[derive(Debug, Clone)]
pub struct SignedInUser(pub User);

impl FromRequest for SignedInUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credentials = bearer_token(req).and_then(|token| Ok((token, app_state(req)?)));
        Box::pin(async move {
            let (token, state) = credentials?;
            if token.starts_with(API_KEY_PREFIX) {
                return Err(ApiError::unauthorized(
                    "wrong_credential_type",
                    "This route takes an access token from /v1/auth/login, not an API key.",
                ));
            }
            let user_id = state.access_tokens.verify(&token).ok_or_else(|| {
                ApiError::unauthorized(
                    "invalid_token",
                    "The access token is invalid or has expired.",
                )
            })?;
            Ok(Self(state.accounts.find_user(user_id).await?))
        })
    }
}

/// The API key of a generation route, from `Authorization: Bearer nb_live_…`.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyCaller(pub AuthenticatedApiKey);

impl FromRequest for ApiKeyCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credentials = bearer_token(req).and_then(|token| Ok((token, app_state(req)?)));
        Box::pin(async move {
            let (token, state) = credentials?;
            if !token.starts_with(API_KEY_PREFIX) {
                return Err(ApiError::unauthorized(
                    "wrong_credential_type",
                    "This route takes an API key (nb_live_…), not an access token.",
                ));
            }
            Ok(Self(state.api_keys.authenticate(&token).await?))
        })
    }
}
