//! API keys: what they are ([`model`]), how key operations fail ([`error`]), the service that
//! issues, lists, revokes and checks them ([`service`]), and a caching decorator over their
//! repository for the hot path of every generation ([`cache`]).

mod cache;
mod error;
mod model;
mod service;

pub use cache::{CachingApiKeyRepository, DEFAULT_KEY_CACHE_TTL, LAST_USED_WRITE_INTERVAL};
pub use error::{
    AuthenticateKeyError, CreateKeyError, FindKeyError, RevokeKeyError, UpdateKeyError,
};
pub use model::{
    API_KEY_LENGTH, API_KEY_PREFIX, ApiKeyHash, ApiKeyId, ApiKeyName, ApiKeyRecord, ApiKeySecret,
    ApiKeyView, AuthenticatedApiKey, CreatedApiKey, DISPLAY_PREFIX_LENGTH, InvalidApiKeyName,
    InvalidKeyLimits, InvalidKeyMode, KeyAccess, KeyChanges, KeyLimits, KeyMode, KeySettings,
    KeyUsage, LimitChanges, MAX_KEY_NAME_CHARS, MalformedApiKey, NewApiKey, TEST_API_KEY_PREFIX,
};
pub use service::{ApiKeyPorts, ApiKeyService, DEFAULT_ROLL_GRACE, KeyPolicy};
