//! What every handler can reach: the domain services, wired to their adapters.

use nb_domain::accounts::AccountService;
use nb_domain::api_keys::ApiKeyService;
use nb_domain::generation::{AllowedModels, GenerationService};
use nb_storage::LocalStorage;

use crate::auth::AccessTokens;

#[derive(Debug, Clone)]
pub struct AppState {
    pub accounts: AccountService,
    pub api_keys: ApiKeyService,
    pub generations: GenerationService,
    pub access_tokens: AccessTokens,
    pub image_models: AllowedModels,
    /// The storage served at `/images` when images are kept on local disk.
    pub local_images: Option<LocalStorage>,
}
