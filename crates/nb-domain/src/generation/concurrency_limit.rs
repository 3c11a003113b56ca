//! A cap on concurrent calls to any [`ImageProvider`], so that a burst cannot exhaust the
//! provider's quota (or this instance's sockets): requests over the cap wait in line for a
//! bounded time, then get `ProviderError::Busy` without reaching the provider.

use std::sync::Arc;
use std::time::Duration;

use crate::generation::error::ProviderError;

use crate::generation::model::{ImageRequest, ProvidedImage};
use crate::generation::ports::ImageProvider;
use async_trait::async_trait;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct ConcurrencyLimitedProvider<P> {
    inner: P,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl<P> ConcurrencyLimitedProvider<P> {
    pub fn new(inner: P, max_in_flight: usize, queue_timeout: Duration) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            queue_timeout,
        }
    }
}

#[async_trait]
impl<P: ImageProvider> ImageProvider for ConcurrencyLimitedProvider<P> {
    async fn generate(&self, request: &ImageRequest) -> Result<ProvidedImage, ProviderError> {
        let slot = tokio::time::timeout(self.queue_timeout, self.slots.acquire()).await;
        let Ok(Ok(_slot)) = slot else {
            metrics::counter!("upstream_queue_timeouts_total").increment(1);
            return Err(ProviderError::Busy {
                retry_after: self.queue_timeout,
            });
        };
        self.inner.generate(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::model::{AllowedModels, GeneratedImage};
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers after the test releases it, counting calls in flight.
    struct Gate {
        in_flight: AtomicUsize,
        release: tokio::sync::Notify,
    }

    #[derive(Clone)]
    struct GatedProvider(Arc<Gate>);

    #[async_trait]
    impl ImageProvider for GatedProvider {
        async fn generate(&self, _: &ImageRequest) -> Result<ProvidedImage, ProviderError> {
            let gate = &self.0;
            let released = gate.release.notified();
            gate.in_flight.fetch_add(1, Ordering::SeqCst);
            released.await;
            gate.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(
                GeneratedImage::from_bytes(Bytes::from_static(b"\x89PNG\r\n\x1a\n"))
                    .unwrap()
                    .into(),
            )
        }
    }

    fn request() -> ImageRequest {
        let model = AllowedModels::new(["gemini-3.1-flash-image".to_owned()])
            .unwrap()
            .default_model()
            .clone();
        ImageRequest {
            model,
            text: "x".into(),
            aspect_ratio: None,
            image_size: None,
            images: Vec::new(),
            history: Vec::new(),
            output: None,
            may_spool: false,
        }
    }

    #[tokio::test]
    async fn calls_over_the_cap_wait_then_are_busy() {
        let gate = Arc::new(Gate {
            in_flight: AtomicUsize::new(0),
            release: tokio::sync::Notify::new(),
        });
        let limited = Arc::new(ConcurrencyLimitedProvider::new(
            GatedProvider(gate.clone()),
            2,
            Duration::from_millis(50),
        ));
        let first = tokio::spawn({
            let limited = limited.clone();
            async move { limited.generate(&request()).await }
        });
        let second = tokio::spawn({
            let limited = limited.clone();
            async move { limited.generate(&request()).await }
        });
        while gate.in_flight.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let third = limited.generate(&request()).await;
        assert!(
            matches!(third, Err(ProviderError::Busy { .. })),
            "{third:?}"
        );
        assert_eq!(gate.in_flight.load(Ordering::SeqCst), 2);
        gate.release.notify_waiters();
        assert!(first.await.unwrap().is_ok() && second.await.unwrap().is_ok());
        // A slot is free again.
        let fourth = tokio::spawn({
            let limited = limited.clone();
            async move { limited.generate(&request()).await }
        });
        while gate.in_flight.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        gate.release.notify_waiters();
        assert!(fourth.await.unwrap().is_ok());
    }
}
