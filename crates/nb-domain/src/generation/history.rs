//! The record of every generation: listed newest first with filters, read one at a time,
//! and deleted by their owner (the image goes; the row stays as history, marked deleted).
//! Also the sweep that removes stored images no generation row names (their row was never
//! written because the database failed at the last step).

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

use super::error::StorageError;
use super::model::{GenerationId, ObjectKey};
use super::stored::{
    GenerationStatus, GenerationView, HistoryFilter, HistoryScope, ORPHAN_GRACE, SWEPT_DAYS,
    StoredGeneration, SweepReport, day_prefix, input_day_prefix,
};
use crate::error::RepositoryError;
use crate::generation::ports::{HistoryRepository, ObjectStorage};
use crate::pagination::{Page, PageRequest};
use crate::system::Clock;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("no such generation")]
    NotFound,
    /// The generation is queued or running: it can be deleted once it has finished.
    #[error("the generation has not finished yet")]
    NotFinished,
    /// Only a queued job can be canceled.
    #[error("a {} generation cannot be canceled", status.as_str())]
    NotCancelable { status: GenerationStatus },
    #[error("the image could not be deleted from storage")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The ports a [`HistoryService`] works through.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Trait objects without Debug.
pub struct HistoryPorts {
    pub generations: Arc<dyn HistoryRepository>,
    pub storage: Arc<dyn ObjectStorage>,
    pub clock: Arc<dyn Clock>,
}

#[derive(Clone)]
pub struct HistoryService {
    ports: HistoryPorts,
}

impl fmt::Debug for HistoryService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryService").finish_non_exhaustive()
    }
}

/// The history of generations as the HTTP adapter uses it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// One page of the scope's generations, newest first. A key sees only its own, whatever
    /// `filter.key_id` asks.
    async fn list(
        &self,
        scope: HistoryScope,
        mut filter: HistoryFilter,
        page: PageRequest,
    ) -> Result<Page<GenerationView>, HistoryError>;

    async fn get(
        &self,
        scope: HistoryScope,
        id: GenerationId,
    ) -> Result<GenerationView, HistoryError>;

    /// Deletes the image (from storage first, so a failure leaves the row as it was and the
    /// delete can be retried) and marks the generation deleted. Repeatable.
    async fn delete(
        &self,
        scope: HistoryScope,
        id: GenerationId,
    ) -> Result<GenerationView, HistoryError>;
}

impl HistoryService {
    pub fn new(ports: HistoryPorts) -> Self {
        Self { ports }
    }

    async fn find(
        &self,
        scope: HistoryScope,
        id: GenerationId,
    ) -> Result<StoredGeneration, HistoryError> {
        self.ports
            .generations
            .find_generation(scope.user_id, id)
            .await?
            .filter(|generation| scope.key_id.is_none_or(|key| generation.key_id == key))
            .ok_or(HistoryError::NotFound)
    }

    /// The generation with a URL that works now: the recorded one, or a fresh one from the
    /// storage (a new presigned URL); none once deleted or when it has no image.
    async fn view(&self, generation: StoredGeneration) -> Result<GenerationView, HistoryError> {
        let url = match (&generation.status, &generation.object_key, &generation.url) {
            (GenerationStatus::Succeeded, _, Some(url)) => Some(url.clone()),
            (GenerationStatus::Succeeded, Some(key), None) => self.ports.storage.url(key).await?,
            _ => None,
        };
        Ok(GenerationView { generation, url })
    }

    /// Removes stored images of the last [`SWEPT_DAYS`] UTC days that no generation names
    /// and that are older than [`ORPHAN_GRACE`].
    pub async fn sweep_orphans(&self) -> Result<SweepReport, HistoryError> {
        let now = self.ports.clock.now();
        let today = now.date();
        let mut report = SweepReport::default();
        for back in 0..SWEPT_DAYS {
            let day = today - time::Duration::days(back);
            let listed = self.ports.storage.list(&day_prefix(day)).await?;
            let settled: Vec<ObjectKey> = listed
                .into_iter()
                .filter(|object| now - object.last_modified >= ORPHAN_GRACE)
                .map(|object| object.key)
                .collect();
            report.examined += settled.len();
            if !settled.is_empty() {
                let named = self.ports.generations.named_object_keys(&settled).await?;
                for key in settled.iter().filter(|key| !named.contains(key)) {
                    self.remove_orphan(key, &mut report).await?;
                }
            }
            // Input images kept to continue a generation belong to it while its row lives.
            let inputs: Vec<ObjectKey> = self
                .ports
                .storage
                .list(&input_day_prefix(day))
                .await?
                .into_iter()
                .filter(|object| now - object.last_modified >= ORPHAN_GRACE)
                .map(|object| object.key)
                .collect();
            report.examined += inputs.len();
            if inputs.is_empty() {
                continue;
            }
            let owners: Vec<GenerationId> = inputs
                .iter()
                .filter_map(ObjectKey::input_owner)
                .collect::<std::collections::HashSet<_>>()
                .into_iter()
                .collect();
            let live = self.ports.generations.live_generation_ids(&owners).await?;
            for key in &inputs {
                if !key.input_owner().is_some_and(|owner| live.contains(&owner)) {
                    self.remove_orphan(key, &mut report).await?;
                }
            }
        }
        Ok(report)
    }

    async fn remove_orphan(
        &self,
        key: &ObjectKey,
        report: &mut SweepReport,
    ) -> Result<(), HistoryError> {
        self.ports.storage.delete(key).await?;
        report.removed += 1;
        tracing::warn!(
            object_key = key.as_str(),
            "removed an image no generation names"
        );
        Ok(())
    }
}

#[async_trait]
impl History for HistoryService {
    async fn list(
        &self,
        scope: HistoryScope,
        mut filter: HistoryFilter,
        page: PageRequest,
    ) -> Result<Page<GenerationView>, HistoryError> {
        if let Some(key_id) = scope.key_id {
            if filter.key_id.is_some_and(|asked| asked != key_id) {
                return Ok(Page {
                    items: Vec::new(),
                    next: None,
                });
            }
            filter.key_id = Some(key_id);
        }
        let page = self
            .ports
            .generations
            .list_generations(scope.user_id, &filter, page)
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for generation in page.items {
            items.push(self.view(generation).await?);
        }
        Ok(Page {
            items,
            next: page.next,
        })
    }

    async fn get(
        &self,
        scope: HistoryScope,
        id: GenerationId,
    ) -> Result<GenerationView, HistoryError> {
        let generation = self.find(scope, id).await?;
        self.view(generation).await
    }

    #[tracing::instrument(skip(self, scope), fields(generation_id = %id))]
    async fn delete(
        &self,
        scope: HistoryScope,
        id: GenerationId,
    ) -> Result<GenerationView, HistoryError> {
        let mut generation = self.find(scope, id).await?;
        if !generation.status.is_finished() {
            return Err(HistoryError::NotFinished);
        }
        if generation.status != GenerationStatus::Deleted {
            if let Some(key) = &generation.object_key {
                self.ports.storage.delete(key).await?;
            }
            // The images it was sent, kept to continue it, go with it.
            for key in generation.turn.iter().flat_map(|turn| &turn.input_keys) {
                self.ports.storage.delete(key).await?;
            }
            let at = self.ports.clock.now();
            self.ports
                .generations
                .mark_generation_deleted(scope.user_id, id, at)
                .await?;
            generation.status = GenerationStatus::Deleted;
            generation.deleted_at = Some(at);
            generation.url = None;
            tracing::info!("generation deleted");
        }
        self.view(generation).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::model::UserId;
    use crate::api_keys::model::ApiKeyId;
    use crate::api_keys::model::KeyMode;
    use crate::generation::ports::{MockHistoryRepository, MockObjectStorage};
    use crate::generation::stored::ListedObject;
    use crate::system::MockClock;
    use std::time::Duration;
    use time::OffsetDateTime;
    use time::macros::{date, datetime};
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);
    const ADA: UserId = UserId(Uuid::from_u128(1));
    const ADAS_KEY: ApiKeyId = ApiKeyId(Uuid::from_u128(2));
    const OTHER_KEY: ApiKeyId = ApiKeyId(Uuid::from_u128(3));
    const GEN: GenerationId = GenerationId(Uuid::from_u128(9));

    fn stored(key_id: ApiKeyId) -> StoredGeneration {
        StoredGeneration {
            id: GEN,
            user_id: ADA,
            key_id,
            mode: KeyMode::Live,
            prompt: "a banana".into(),
            size: "1024x1024".into(),
            style: "natural".into(),
            model: "gemini-3.1-flash-image".into(),
            status: GenerationStatus::Succeeded,
            error_code: None,
            object_key: Some(ObjectKey::from_stored("images/2026/11/25/gen_x.png".into())),
            url: None,
            mime_type: Some("image/png".into()),
            bytes: Some(10),
            latency: Duration::from_millis(5),
            created_at: NOW,
            deleted_at: None,
            aspect_ratio: Some("1:1".into()),
            resolution: Some("1K".into()),
            width: Some(1024),
            height: Some(1024),
            usage: None,
            cost: crate::money::Usd::ZERO,
            previous: None,
            turn: None,
        }
    }

    fn service(generations: MockHistoryRepository, storage: MockObjectStorage) -> HistoryService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);
        HistoryService::new(HistoryPorts {
            generations: Arc::new(generations),
            storage: Arc::new(storage),
            clock: Arc::new(clock),
        })
    }

    #[tokio::test]
    async fn a_key_sees_only_its_own_generations() {
        let mut generations = MockHistoryRepository::new();
        generations
            .expect_find_generation()
            .returning(|_, _| Ok(Some(stored(OTHER_KEY))));
        let mut storage = MockObjectStorage::new();
        storage.expect_delete().never();
        let key_scope = HistoryScope {
            user_id: ADA,
            key_id: Some(ADAS_KEY),
        };
        let service = service(generations, storage);
        assert!(matches!(
            service.get(key_scope, GEN).await,
            Err(HistoryError::NotFound)
        ));
        assert!(matches!(
            service.delete(key_scope, GEN).await,
            Err(HistoryError::NotFound)
        ));
        // Asking a key's history for another key's: nothing, without a query.
        let filter = HistoryFilter {
            key_id: Some(OTHER_KEY),
            ..HistoryFilter::default()
        };
        let page = service
            .list(key_scope, filter, PageRequest::first(10))
            .await
            .unwrap();
        assert!(page.items.is_empty());
    }

    #[tokio::test]
    async fn presigned_urls_are_made_afresh_and_deleted_images_have_none() {
        let mut generations = MockHistoryRepository::new();
        generations
            .expect_find_generation()
            .returning(|_, _| Ok(Some(stored(ADAS_KEY))));
        generations
            .expect_mark_generation_deleted()
            .withf(|user, id, at| *user == ADA && *id == GEN && *at == NOW)
            .times(1)
            .returning(|_, _, _| Ok(true));
        let mut storage = MockObjectStorage::new();
        storage
            .expect_url()
            .returning(|_| Ok(Some("https://bucket/presigned".into())));
        storage.expect_delete().times(1).returning(|_| Ok(()));
        let account = HistoryScope {
            user_id: ADA,
            key_id: None,
        };
        let service = service(generations, storage);
        let view = service.get(account, GEN).await.unwrap();
        assert_eq!(view.url.as_deref(), Some("https://bucket/presigned"));
        let deleted = service.delete(account, GEN).await.unwrap();
        assert_eq!(deleted.generation.status, GenerationStatus::Deleted);
        assert_eq!(deleted.url, None);
    }

    #[tokio::test]
    async fn a_storage_failure_leaves_the_generation_as_it_was() {
        let mut generations = MockHistoryRepository::new();
        generations
            .expect_find_generation()
            .returning(|_, _| Ok(Some(stored(ADAS_KEY))));
        generations.expect_mark_generation_deleted().never();
        let mut storage = MockObjectStorage::new();
        storage
            .expect_delete()
            .returning(|_| Err(StorageError::Failed("bucket unreachable".into())));
        let account = HistoryScope {
            user_id: ADA,
            key_id: None,
        };
        let result = service(generations, storage).delete(account, GEN).await;
        assert!(matches!(result, Err(HistoryError::Storage(_))));
    }

    #[tokio::test]
    async fn the_sweep_removes_only_settled_images_no_generation_names() {
        let named = ObjectKey::from_stored("images/2026/11/25/gen_named.png".into());
        let orphan = ObjectKey::from_stored("images/2026/11/25/gen_orphan.png".into());
        let fresh = ObjectKey::from_stored("images/2026/11/25/gen_fresh.png".into());
        let mut storage = MockObjectStorage::new();
        let listed = vec![
            ListedObject {
                key: named.clone(),
                last_modified: NOW - Duration::from_secs(3600),
            },
            ListedObject {
                key: orphan.clone(),
                last_modified: NOW - Duration::from_secs(3600),
            },
            ListedObject {
                key: fresh.clone(),
                last_modified: NOW - Duration::from_secs(60),
            },
        ];
        storage
            .expect_list()
            .withf(|prefix| prefix == "images/2026/11/25/")
            .returning(move |_| Ok(listed.clone()));
        storage
            .expect_list()
            .withf(|prefix| prefix == "images/2026/11/24/")
            .returning(|_| Ok(Vec::new()));
        let removed = orphan.clone();
        storage
            .expect_delete()
            .withf(move |key| *key == removed)
            .times(1)
            .returning(|_| Ok(()));
        // Inputs: one of a live generation, one whose generation has no live row.
        let live = GenerationId(Uuid::from_u128(7));
        let gone = GenerationId(Uuid::from_u128(8));
        let kept_input = ObjectKey::from_stored(format!("inputs/2026/11/25/{live}/0.png"));
        let orphan_input = ObjectKey::from_stored(format!("inputs/2026/11/25/{gone}/0.png"));
        assert_eq!(orphan_input.input_owner(), Some(gone));
        let inputs = vec![
            ListedObject {
                key: kept_input.clone(),
                last_modified: NOW - Duration::from_secs(3600),
            },
            ListedObject {
                key: orphan_input.clone(),
                last_modified: NOW - Duration::from_secs(3600),
            },
        ];
        storage
            .expect_list()
            .withf(|prefix| prefix == "inputs/2026/11/25/")
            .returning(move |_| Ok(inputs.clone()));
        storage
            .expect_list()
            .withf(|prefix| prefix == "inputs/2026/11/24/")
            .returning(|_| Ok(Vec::new()));
        let removed_input = orphan_input.clone();
        storage
            .expect_delete()
            .withf(move |key| *key == removed_input)
            .times(1)
            .returning(|_| Ok(()));
        let mut generations = MockHistoryRepository::new();
        let kept = named.clone();
        generations
            .expect_named_object_keys()
            .withf(move |keys| keys.len() == 2 && !keys.contains(&fresh))
            .returning(move |_| Ok(vec![kept.clone()]));
        generations
            .expect_live_generation_ids()
            .withf(move |ids| ids.len() == 2 && ids.contains(&gone))
            .returning(move |_| Ok(vec![live]));
        let report = service(generations, storage).sweep_orphans().await.unwrap();
        assert_eq!(
            report,
            SweepReport {
                examined: 4,
                removed: 2
            }
        );
        assert_eq!(day_prefix(date!(2026 - 01 - 05)), "images/2026/01/05/");
    }
}
