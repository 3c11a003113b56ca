//! Sends each request to the front door its model's catalog entry names: the Gemini API or
//! Vertex AI. A model on a provider that is not configured is `NotConfigured` (503), with no
//! network call.

use std::sync::Arc;

use async_trait::async_trait;
use nb_domain::generation::{ImageRequest, ProvidedImage, ProviderError, UpstreamProvider};
use nb_domain::ports::ImageProvider;

#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct ProviderRouter {
    pub gemini_api: Arc<dyn ImageProvider>,
    pub vertex: Option<Arc<dyn ImageProvider>>,
}

#[async_trait]
impl ImageProvider for ProviderRouter {
    async fn generate(&self, request: &ImageRequest) -> Result<ProvidedImage, ProviderError> {
        match request.model.spec().provider {
            UpstreamProvider::GeminiApi => self.gemini_api.generate(request).await,
            UpstreamProvider::Vertex => match &self.vertex {
                Some(vertex) => vertex.generate(request).await,
                None => Err(ProviderError::NotConfigured),
            },
        }
    }
}
