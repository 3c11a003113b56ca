//! What every handler can reach: the domain services, wired to their adapters.

use nb_domain::accounts::AccountService;
use nb_domain::api_keys::ApiKeyService;

use crate::auth::AccessTokens;

#[derive(Debug, Clone)]
pub struct AppState {
    pub accounts: AccountService,
    pub api_keys: ApiKeyService,
    pub access_tokens: AccessTokens,
}
