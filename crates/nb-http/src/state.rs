//! What every handler can reach: the domain services, wired to their adapters.

use nb_domain::accounts::AccountService;
use nb_domain::api_keys::ApiKeyService;
use nb_domain::generation::{AllowedModels, GenerationService};
use std::sync::Arc;

use nb_domain::ports::ReadinessCheck;
use nb_storage::LocalStorage;

use crate::auth::AccessTokens;
use crate::config::{Limits, MetricsToken};
use crate::rate_limit::RateLimits;

#[derive(Clone)]
pub struct AppState {
    pub accounts: AccountService,
    pub api_keys: ApiKeyService,
    pub generations: GenerationService,
    pub access_tokens: AccessTokens,
    pub image_models: AllowedModels,
    /// The storage served at `/images` when images are kept on local disk.
    pub local_images: Option<LocalStorage>,
    pub readiness: Arc<dyn ReadinessCheck>,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub metrics_token: Option<MetricsToken>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
