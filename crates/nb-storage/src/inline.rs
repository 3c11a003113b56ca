use async_trait::async_trait;
use base64::Engine as _;
use nb_domain::generation::{
    FetchedImage, GeneratedImage, ListedObject, ObjectKey, StorageError, StoredImage,
};
use nb_domain::ports::ObjectStorage;

/// Stores nothing: the URL is `data:<mime>;base64,<image>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineStorage;

#[async_trait]
impl ObjectStorage for InlineStorage {
    async fn put(
        &self,
        _: &ObjectKey,
        image: &GeneratedImage,
    ) -> Result<StoredImage, StorageError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(image.bytes());
        let url = format!("data:{};base64,{encoded}", image.format().mime_type());
        Ok(StoredImage {
            url,
            url_is_lasting: false,
        })
    }

    /// Nothing is ever stored.
    async fn fetch(&self, _: &ObjectKey) -> Result<Option<FetchedImage>, StorageError> {
        Ok(None)
    }

    /// The image was in its answer, and nowhere since.
    async fn url(&self, _: &ObjectKey) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    async fn delete(&self, _: &ObjectKey) -> Result<(), StorageError> {
        Ok(())
    }

    async fn list(&self, _: &str) -> Result<Vec<ListedObject>, StorageError> {
        Ok(Vec::new())
    }
}
