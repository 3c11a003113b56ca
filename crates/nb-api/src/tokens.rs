//! Access tokens: HS256 JWTs that stand for a session (account routes and the console's
//! cookie). Signing and checking them is the HTTP adapter's business: the domain knows
//! sessions, not their encoding.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nb_domain::accounts::{Session, SessionId, UserId};
use nb_domain::system::Clock;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

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
    /// Keys the CSRF tokens of console sessions: derived from the signing secret, so every
    /// instance with the same secret computes the same token for a session.
    csrf_key: Hmac<Sha256>,
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// Tokens signed with `secret` (at least 32 bytes: the configuration checks it), valid
    /// for `ttl`, told time by `clock`.
    pub fn new(secret: &[u8], ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            clock,
            csrf_key: Hmac::<Sha256>::new_from_slice(
                &[b"nanobanana csrf\0".as_slice(), secret].concat(),
            )
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length")),
        }
    }

    /// The CSRF token of a console session: an HMAC of its id, so it is bound to that session
    /// (a token set by someone else, for their own session, does not pass) and needs no
    /// storage.
    pub fn csrf_token(&self, session: SessionId) -> String {
        let mut mac = self.csrf_key.clone();
        mac.update(session.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A token for a session, valid until the session expires.
    pub fn issue(
        &self,
        session: &Session,
    ) -> Result<IssuedAccessToken, jsonwebtoken::errors::Error> {
        let issued_at = self.clock.now().unix_timestamp();
        let expires_at = session.expires_at.unix_timestamp();
        let claims = AccessTokenClaims {
            sub: session.user_id.to_string(),
            sid: session.id.to_string(),
            iat: issued_at,
            nbf: issued_at,
            exp: expires_at,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
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
