use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use nb_domain::generation::{
    FetchedImage, GeneratedImage, ImageFormat, ListedObject, ObjectKey, SpooledImage, StorageError,
    StoredImage,
};
use nb_domain::ports::ObjectStorage;
use time::OffsetDateTime;

/// Files under a root folder (the data folder): key `images/2026/11/25/gen_….png` is the file
/// `<root>/images/2026/11/25/gen_….png`, served at `<public base URL>/images/2026/…`.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    public_base_url: String,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>, public_base_url: &str) -> Self {
        Self {
            root: root.into(),
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The file behind a key, refusing anything that could leave the root or name a hidden
    /// (or still partial) file.
    fn path_of(&self, key: &str) -> Option<PathBuf> {
        let plain_segments = key.split('/').all(|segment| {
            !segment.is_empty() && !segment.starts_with('.') && !segment.contains('\\')
        });
        let relative = Path::new(key);
        let plain = relative
            .components()
            .all(|part| matches!(part, Component::Normal(_)));
        (plain && plain_segments).then(|| self.root.join(relative))
    }
}

impl LocalStorage {
    fn url_of(&self, key: &ObjectKey) -> String {
        format!("{}/{}", self.public_base_url, key.as_str())
    }

    /// Makes the file for `key` with `make` (given a temporary name beside the target) and
    /// renames it into place, so a reader never sees a half-written image and a failed write
    /// leaves nothing under the key.
    async fn place(
        &self,
        key: &ObjectKey,
        make: impl FnOnce(&Path) -> std::io::Result<()> + Send + 'static,
    ) -> Result<StoredImage, StorageError> {
        let path = self.path_of(key.as_str()).ok_or_else(|| {
            StorageError::Failed(format!("unsafe object key {:?}", key.as_str()).into())
        })?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let folder = path
                .parent()
                .ok_or_else(|| std::io::Error::other("no parent folder"))?;
            create_private_folder(folder)?;
            let temporary = folder.join(format!(".{}.partial", uuid::Uuid::new_v4().simple()));
            let placed = make(&temporary).and_then(|()| std::fs::rename(&temporary, &path));
            if placed.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            placed
        })
        .await
        .map_err(|crashed| StorageError::Failed(Box::new(crashed)))?
        .map_err(storage_error)?;
        Ok(StoredImage {
            url: self.url_of(key),
            url_is_lasting: true,
        })
    }
}

/// The data folder and the folders under it are this user's alone (0700), whatever the umask;
/// existing folders keep their mode.
fn create_private_folder(folder: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(folder)
}

/// A new file readable by this user alone (0600), whatever the umask.
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// A copy of `from` readable by this user alone, made by the kernel (never read into memory).
fn copy_private_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut target = options.open(to)?;
    std::io::copy(&mut std::fs::File::open(from)?, &mut target)?;
    Ok(())
}

/// A full disk (or quota) is `Full`: the operator must free space; anything else `Failed`.
fn storage_error(error: std::io::Error) -> StorageError {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StorageError::Full(Box::new(error)),
        _ => StorageError::Failed(Box::new(error)),
    }
}

#[async_trait]
impl ObjectStorage for LocalStorage {
    #[tracing::instrument(skip_all, fields(key = key.as_str()))]
    async fn put(
        &self,
        key: &ObjectKey,
        image: &GeneratedImage,
    ) -> Result<StoredImage, StorageError> {
        let bytes = image.bytes().clone();
        self.place(key, move |temporary| write_private_file(temporary, &bytes))
            .await
    }

    /// Links the spooled file into place (the spool folder is on the same file system:
    /// the data folder), or copies it when it is elsewhere.
    #[tracing::instrument(skip_all, fields(key = key.as_str()))]
    async fn put_spooled(
        &self,
        key: &ObjectKey,
        image: &SpooledImage,
    ) -> Result<StoredImage, StorageError> {
        let spooled = image.file().clone();
        self.place(key, move |temporary| {
            std::fs::hard_link(spooled.path(), temporary)
                .or_else(|_| copy_private_file(spooled.path(), temporary))
        })
        .await
    }

    /// Reads the file whole. The content type is that of the bytes themselves: a file that
    /// is not a PNG, JPEG or WebP image is not served, whatever its name.
    #[tracing::instrument(skip_all, fields(key = key.as_str()))]
    async fn fetch(&self, key: &ObjectKey) -> Result<Option<FetchedImage>, StorageError> {
        let Some(path) = self.path_of(key.as_str()) else {
            return Ok(None);
        };
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let file = std::fs::File::open(&path)?;
            let metadata = file.metadata()?;
            if !metadata.is_file() {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            let modified = metadata.modified()?;
            let mut bytes = Vec::with_capacity(metadata.len().try_into().unwrap_or(0));
            std::io::Read::read_to_end(&mut &file, &mut bytes)?;
            Ok((bytes, modified))
        })
        .await
        .map_err(|crashed| StorageError::Failed(Box::new(crashed)))?;
        let (bytes, modified) = match read {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(storage_error(error)),
        };
        let Some(format) = ImageFormat::sniff(&bytes) else {
            tracing::warn!("a file under the images folder is not an image: not served");
            return Ok(None);
        };
        Ok(Some(FetchedImage {
            bytes: Bytes::from(bytes),
            content_type: format.mime_type().to_owned(),
            last_modified: OffsetDateTime::from(modified),
        }))
    }

    async fn url(&self, key: &ObjectKey) -> Result<Option<String>, StorageError> {
        Ok(Some(self.url_of(key)))
    }

    #[tracing::instrument(skip_all, fields(key = key.as_str()))]
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let path = self.path_of(key.as_str()).ok_or_else(|| {
            StorageError::Failed(format!("unsafe object key {:?}", key.as_str()).into())
        })?;
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(path))
            .await
            .map_err(|crashed| StorageError::Failed(Box::new(crashed)))?;
        match removed {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(storage_error(error)),
        }
    }

    /// The files under the prefix's folder (a prefix ends with `/`: `images/2026/11/25/`),
    /// partial writes left out.
    #[tracing::instrument(skip_all, fields(prefix))]
    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, StorageError> {
        let folder_key = prefix.trim_end_matches('/');
        let Some(folder) = self.path_of(folder_key) else {
            return Ok(Vec::new());
        };
        let folder_key = folder_key.to_owned();
        let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<ListedObject>> {
            // Every object under the folder, its subfolders included (as S3 lists a prefix).
            let mut listed = Vec::new();
            let mut folders = vec![(folder, folder_key)];
            while let Some((folder, folder_key)) = folders.pop() {
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                };
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let metadata = entry.metadata()?;
                    if name.starts_with('.') {
                        continue;
                    }
                    let key = format!("{folder_key}/{name}");
                    if metadata.is_dir() {
                        folders.push((entry.path(), key));
                    } else if metadata.is_file() {
                        listed.push(ListedObject {
                            key: ObjectKey::from_stored(key),
                            last_modified: OffsetDateTime::from(metadata.modified()?),
                        });
                    }
                }
            }
            Ok(listed)
        })
        .await
        .map_err(|crashed| StorageError::Failed(Box::new(crashed)))?;
        listed.map_err(storage_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_root() {
        let storage = LocalStorage::new("/data", "http://x");
        assert_eq!(
            storage.path_of("images/a.png"),
            Some(PathBuf::from("/data/images/a.png"))
        );
        for bad in [
            "",
            "../etc/passwd",
            "images/../../x",
            "/etc/passwd",
            "images/./a.png",
            "a//b",
            "a\\b",
            "images/.x.partial",
        ] {
            assert_eq!(storage.path_of(bad), None, "{bad}");
        }
    }
}
