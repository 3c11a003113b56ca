use async_trait::async_trait;
use base64::Engine as _;
use nb_domain::generation::{
    FetchedImage, GeneratedImage, ListedObject, ObjectKey, SpooledImage, StorageError, StoredImage,
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

    /// The file read whole: an inline answer holds the image anyway.
    async fn put_spooled(
        &self,
        key: &ObjectKey,
        image: &SpooledImage,
    ) -> Result<StoredImage, StorageError> {
        let bytes = tokio::fs::read(image.file().path())
            .await
            .map_err(|error| StorageError::Failed(Box::new(error)))?;
        let image = GeneratedImage::from_bytes(bytes.into())
            .map_err(|not_an_image| StorageError::Failed(Box::new(not_an_image)))?;
        self.put(key, &image).await
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
