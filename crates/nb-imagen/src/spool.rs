//! Spooling: a large image is decoded from Google's answer into a file as it arrives, a piece
//! at a time, so that memory does not grow with the image (a 4K image is 10–20 MB; 64 at
//! once would be a gigabyte). The storage adapter then links the file into place (local
//! disk) or uploads it in parts (S3), and the file is removed when the last handle to it is
//! dropped — also when the answer turns out to be no image, or another attempt is made.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use nb_domain::generation::{ProviderError, SpoolFile, SpooledImage};

/// Images up to this size are held in memory (a 1K image is 1–2 MB: 64 of them are no
/// trouble, and a spool file would cost a write and a read of each); larger ones (2K and 4K:
/// 4–20 MB) are spooled.
pub const SPOOL_AFTER_BYTES: usize = 2 * 1024 * 1024;
/// How many decoded bytes are held before they are written out, once an image is spooled.
pub const SPOOL_PIECE_BYTES: usize = 1024 * 1024;
/// How much of the start of an image is kept in memory: its format and dimensions are read
/// from it.
const HEAD_BYTES: usize = 64 * 1024;

/// Where answers' images are spooled: a folder on the same file system as the images when
/// they are stored on local disk (so that a spooled file is linked into place, not copied).
#[derive(Debug, Clone)]
pub struct SpoolFolder {
    path: PathBuf,
}

impl SpoolFolder {
    /// Creates the folder (this user's alone) if it is missing.
    pub fn new(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A spooled file, removed when dropped.
#[derive(Debug)]
struct TemporaryFile(tempfile::TempPath);

#[async_trait::async_trait]
impl SpoolFile for TemporaryFile {
    fn path(&self) -> &Path {
        &self.0
    }

    async fn read(&self) -> std::io::Result<Bytes> {
        tokio::fs::read(&self.0).await.map(Bytes::from)
    }
}

/// One image being written.
struct Spooling {
    /// `None` while a write runs on the blocking pool.
    file: Option<std::fs::File>,
    path: tempfile::TempPath,
    head: Vec<u8>,
    len: u64,
}

/// The images of one answer being spooled, by the index of their string in the answer.
pub(crate) struct Spools {
    folder: PathBuf,
    images: HashMap<usize, Spooling>,
}

fn spool_failed(error: &std::io::Error) -> ProviderError {
    tracing::error!(%error, "could not spool the provider's image to disk");
    ProviderError::Upstream("the image could not be spooled to disk".into())
}

impl Spools {
    pub fn new(folder: &SpoolFolder) -> Self {
        Self {
            folder: folder.path.clone(),
            images: HashMap::new(),
        }
    }

    /// Appends `bytes` to image `index`'s file (created on its first piece), on the blocking
    /// pool.
    pub async fn write(&mut self, index: usize, bytes: Vec<u8>) -> Result<(), ProviderError> {
        let spooling = match self.images.get_mut(&index) {
            Some(spooling) => spooling,
            None => {
                let folder = self.folder.clone();
                let (file, path) = tokio::task::spawn_blocking(move || {
                    tempfile::Builder::new()
                        .prefix(".spool-")
                        .tempfile_in(folder)
                        .map(tempfile::NamedTempFile::into_parts)
                })
                .await
                .map_err(|_| ProviderError::Upstream("the spooling task stopped".into()))?
                .map_err(|error| spool_failed(&error))?;
                self.images.entry(index).or_insert(Spooling {
                    file: Some(file),
                    path,
                    head: Vec::new(),
                    len: 0,
                })
            }
        };
        if spooling.head.len() < HEAD_BYTES {
            let room = HEAD_BYTES - spooling.head.len();
            spooling
                .head
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
        spooling.len += bytes.len() as u64;
        let Some(mut file) = spooling.file.take() else {
            return Err(ProviderError::Upstream(
                "an earlier spooled write failed".into(),
            ));
        };
        let written = tokio::task::spawn_blocking(move || file.write_all(&bytes).map(|()| file))
            .await
            .map_err(|_| ProviderError::Upstream("the spooling task stopped".into()))?
            .map_err(|error| spool_failed(&error))?;
        spooling.file = Some(written);
        Ok(())
    }

    /// Image `index`, spooled whole once `tail` (its last bytes, under a piece) is written.
    /// `None` when nothing of it was spooled.
    pub fn finish(
        &mut self,
        index: usize,
        tail: &[u8],
    ) -> Option<Result<SpooledImage, ProviderError>> {
        let mut spooling = self.images.remove(&index)?;
        let mut file = spooling.file.take()?;
        Some((|| {
            // A tail is under a piece: written here, it costs less than a trip to the pool.
            file.write_all(tail).map_err(|error| spool_failed(&error))?;
            drop(file);
            spooling.len += tail.len() as u64;
            if spooling.head.len() < HEAD_BYTES {
                let room = HEAD_BYTES - spooling.head.len();
                spooling
                    .head
                    .extend_from_slice(&tail[..room.min(tail.len())]);
            }
            SpooledImage::new(
                Bytes::from(spooling.head),
                spooling.len,
                Arc::new(TemporaryFile(spooling.path)),
            )
            .map_err(|not_an_image| ProviderError::Upstream(not_an_image.to_string()))
        })())
    }
}
