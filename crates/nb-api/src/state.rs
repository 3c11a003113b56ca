//! What every handler can reach: the domain's services and the few ports the HTTP layer
//! asks directly (readiness, the images it serves), as trait objects; the composition root
//! wires the adapters behind them.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use nb_domain::accounts::{Accounts, Erasure};
use nb_domain::admin::Administration;
use nb_domain::api_keys::ApiKeys;
use nb_domain::generation::{Generations, History, InputImageLimits, Jobs, ObjectStorage};
use nb_domain::idempotency::Idempotency;
use nb_domain::rate_limit::Throttling;
use nb_domain::readiness::{ReadinessCheck, UpstreamKeys};
use nb_domain::webhooks::Webhooks;
use secrecy::SecretString;

use crate::body_budget::BodyBudget;
use crate::client_address::ClientAddressSource;
use crate::openai::model_map::OpenAiModelMap;
use crate::settings::ServerSettings;
use crate::tokens::AccessTokens;

#[derive(Clone)]
pub struct AppState {
    pub accounts: Arc<dyn Accounts>,
    pub erasure: Arc<dyn Erasure>,
    pub api_keys: Arc<dyn ApiKeys>,
    pub admin: Arc<dyn Administration>,
    pub generations: Arc<dyn Generations>,
    pub history: Arc<dyn History>,
    /// Asynchronous generations (`Prefer: respond-async`).
    pub jobs: Arc<dyn Jobs>,
    pub webhooks: Arc<dyn Webhooks>,
    pub idempotency: Arc<dyn Idempotency>,
    pub throttle: Arc<dyn Throttling>,
    pub access_tokens: AccessTokens,
    /// The storage whose images this server serves at `/images/…` (local disk); `None` when
    /// images live elsewhere (R2/S3 URLs, inline `data:` URLs).
    pub served_images: Option<Arc<dyn ObjectStorage>>,
    pub readiness: Arc<dyn ReadinessCheck>,
    /// The store instances share limits and key changes in, when it is not the database
    /// (Redis): `/readyz` asks it too.
    pub shared_state: Option<Arc<dyn ReadinessCheck>>,
    /// The upstream's pool of API keys, when one is configured: `/readyz` reports it.
    pub upstream_keys: Option<Arc<dyn UpstreamKeys>>,
    /// The console's Content-Security-Policy (it names where stored images come from).
    pub console_policy: String,
    pub server: ServerSettings,
    /// The bytes of request bodies held at once (`NB_MAX_BODY_BYTES_IN_FLIGHT`).
    pub body_budget: BodyBudget,
    /// What clients may send to edit.
    pub input_images: InputImageLimits,
    /// The most images one OpenAI request may ask for (`n`, `NB_MAX_IMAGES_PER_REQUEST`).
    pub max_images_per_request: u8,
    /// OpenAI model names and the models they mean.
    pub openai_models: OpenAiModelMap,
    pub client_addresses: ClientAddressSource,
    /// When set, `GET /metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    /// Set once the server was asked to stop: `/readyz` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}
