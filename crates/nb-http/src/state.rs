//! What every handler can reach: the domain services, wired to their adapters.

use std::sync::Arc;

use nb_domain::accounts::AccountService;
use nb_domain::admin::AdminService;
use nb_domain::api_keys::ApiKeyService;
use nb_domain::erasure::AccountErasure;
use nb_domain::generation::{GenerationService, HistoryService, InputImageLimits};
use nb_domain::idempotency::IdempotencyService;
use nb_domain::ports::{ObjectStorage, ReadinessCheck};
use nb_domain::rate_limit::Throttle;

use crate::auth::AccessTokens;
use crate::config::{Limits, MetricsToken};
use crate::openai::OpenAiModelMap;
use crate::rate_limit::ClientAddressSource;

#[derive(Clone)]
pub struct AppState {
    pub accounts: AccountService,
    pub erasure: AccountErasure,
    pub api_keys: ApiKeyService,
    pub admin: AdminService,
    pub generations: GenerationService,
    pub history: HistoryService,
    pub idempotency: IdempotencyService,
    pub access_tokens: AccessTokens,
    /// The storage whose images this server serves at `/images/…` (local disk); `None` when
    /// images live elsewhere (R2/S3 URLs, inline `data:` URLs).
    pub served_images: Option<Arc<dyn ObjectStorage>>,
    pub readiness: Arc<dyn ReadinessCheck>,
    /// The store instances share limits and key changes in, when it is not the database
    /// (Redis): `/readyz` asks it too.
    pub shared_state: Option<Arc<dyn ReadinessCheck>>,
    /// The console's Content-Security-Policy (it names where stored images come from).
    pub console_policy: String,
    pub limits: Limits,
    /// What clients may send to edit.
    pub input_images: InputImageLimits,
    /// OpenAI model names and the models they mean.
    pub openai_models: OpenAiModelMap,
    pub throttle: Throttle,
    pub client_addresses: ClientAddressSource,
    pub metrics_token: Option<MetricsToken>,
    /// Set once the server was asked to stop: `/readyz` answers 503 from then on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
