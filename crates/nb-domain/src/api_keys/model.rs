//! What an API key is: how it looks, what is stored of it, and who it says is calling.
//!
//! A key is `nb_live_` followed by 32 lowercase hex characters (128 bits from the OS CSPRNG).
//! Only its SHA-256 is stored, with a short display prefix; the full key exists in memory
//! once, when it is created, and is handed to the caller that single time.

use std::fmt;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::text::has_hidden_characters;
use crate::user::UserId;

pub const API_KEY_PREFIX: &str = "nb_live_";
pub(crate) const API_KEY_RANDOM_BYTES: usize = 16;
/// `nb_live_` + 32 hex characters.
pub const API_KEY_LENGTH: usize = API_KEY_PREFIX.len() + 2 * API_KEY_RANDOM_BYTES;
/// How much of a key is kept for display: `nb_live_` and 4 hex characters.
pub const DISPLAY_PREFIX_LENGTH: usize = 12;
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// An API key's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyId(pub Uuid);

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A full API key. `Debug` and `Display` show only its display prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a NanoBanana API key")]
pub struct MalformedApiKey;

impl ApiKeySecret {
    pub(crate) fn from_random_bytes(bytes: &[u8; API_KEY_RANDOM_BYTES]) -> Self {
        Self(format!("{API_KEY_PREFIX}{}", hex::encode(bytes)))
    }

    /// Accepts exactly `nb_live_` followed by 32 lowercase hex characters.
    pub fn parse(raw: &str) -> Result<Self, MalformedApiKey> {
        let random_part = raw.strip_prefix(API_KEY_PREFIX).ok_or(MalformedApiKey)?;
        let well_formed = random_part.len() == 2 * API_KEY_RANDOM_BYTES
            && random_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(MalformedApiKey)
        }
    }

    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LENGTH]
    }

    /// The whole key. Call only to hand it to its owner, once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

/// The lowercase hex SHA-256 of a full key: what is stored and looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key's optional label: trimmed, at most 100 characters, no control or invisible
/// formatting characters (zero-width, bidirectional overrides); blank means none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiKeyName(Option<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "name must be at most {MAX_KEY_NAME_CHARS} characters, with no control or invisible characters"
)]
pub struct InvalidApiKeyName;

impl ApiKeyName {
    pub fn parse(raw: Option<&str>) -> Result<Self, InvalidApiKeyName> {
        let Some(trimmed) = raw.map(str::trim).filter(|name| !name.is_empty()) else {
            return Ok(Self(None));
        };
        if trimmed.chars().count() > MAX_KEY_NAME_CHARS || has_hidden_characters(trimmed) {
            return Err(InvalidApiKeyName);
        }
        Ok(Self(Some(trimmed.to_owned())))
    }

    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn into_inner(self) -> Option<String> {
        self.0
    }
}

/// A stored key as its owner sees it: never the key itself, never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: Option<String>,
    pub prefix: String,
    pub is_active: bool,
    pub last_used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// What creating a key asks a repository to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub key_hash: ApiKeyHash,
}

/// A key just created: the only value that ever holds the full key after creation.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    pub record: ApiKeyRecord,
    pub secret: ApiKeySecret,
}

/// Who is calling, once a presented key has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedApiKey {
    pub key_id: ApiKeyId,
    pub user_id: UserId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format_is_prefix_and_32_lowercase_hex() {
        let secret = ApiKeySecret::from_random_bytes(&[0xab; 16]);
        assert_eq!(
            secret.expose_secret(),
            format!("nb_live_{}", "ab".repeat(16))
        );
        assert_eq!(secret.expose_secret().len(), API_KEY_LENGTH);
        assert_eq!(secret.display_prefix(), "nb_live_abab");
    }

    #[test]
    fn parse_accepts_only_well_formed_keys() {
        let good = format!("nb_live_{}", "0123456789abcdef".repeat(2));
        assert!(ApiKeySecret::parse(&good).is_ok());
        for bad in [
            String::new(),
            "nb_live_".into(),
            format!("nb_test_{}", "a".repeat(32)),
            format!("nb_live_{}", "A".repeat(32)),
            format!("nb_live_{}", "g".repeat(32)),
            format!("nb_live_{}", "a".repeat(31)),
            format!("nb_live_{}", "a".repeat(33)),
        ] {
            assert_eq!(ApiKeySecret::parse(&bad), Err(MalformedApiKey), "{bad:?}");
        }
    }

    #[test]
    fn hash_is_the_sha256_hex_of_the_whole_key() {
        let secret = ApiKeySecret::parse(&format!("nb_live_{}", "0".repeat(32))).unwrap();
        // sha256("nb_live_00000000000000000000000000000000"), computed with coreutils.
        assert_eq!(
            secret.hash().as_str(),
            "473131699e2e8655ae2db62511a61035a6fbaeedef5154b64906146ad9098118"
        );
    }

    #[test]
    fn debug_shows_only_the_display_prefix() {
        let secret = ApiKeySecret::from_random_bytes(&[0xcd; 16]);
        let shown = format!("{secret:?}");
        assert!(shown.contains("nb_live_cdcd"));
        assert!(!shown.contains(secret.expose_secret()));
    }

    #[test]
    fn names_are_trimmed_and_blank_means_none() {
        assert_eq!(ApiKeyName::parse(None).unwrap().as_deref(), None);
        assert_eq!(ApiKeyName::parse(Some("   ")).unwrap().as_deref(), None);
        assert_eq!(
            ApiKeyName::parse(Some(" ci ")).unwrap().as_deref(),
            Some("ci")
        );
        assert!(ApiKeyName::parse(Some(&"x".repeat(101))).is_err());
        assert!(ApiKeyName::parse(Some("bad\nname")).is_err());
        assert!(ApiKeyName::parse(Some("\u{202e}gpj.exe")).is_err());
        assert!(ApiKeyName::parse(Some("zero\u{200b}width")).is_err());
    }
}
