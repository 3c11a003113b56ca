use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::Stream;
use nb_domain::generation::{
    FetchedImage, GeneratedImage, ListedObject, ObjectKey, SpooledImage, StorageError, StoredImage,
};
use nb_domain::ports::ObjectStorage;
use nb_domain::settings::InvalidSetting;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::serde_types::Part;
use s3::{Bucket, Region};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_with::{DurationSeconds, serde_as};
use time::OffsetDateTime;

/// S3's ceiling for presigned URLs.
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// An S3 secret access key. `Debug` never shows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct S3Secret(SecretString);

impl S3Secret {
    pub fn new(secret: String) -> Self {
        Self(SecretString::from(secret))
    }
}

/// R2 (`account_id`) or any S3-compatible endpoint (`endpoint`, which wins when both are set):
/// `[storage.s3]` in the configuration.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Signing region: `auto` for R2.
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key: String,
    pub secret_key: S3Secret,
    pub bucket: String,
    /// Base of public URLs (an R2 custom domain or `https://pub-….r2.dev`); without one,
    /// presigned GET URLs are handed out.
    #[serde(default)]
    pub public_url: Option<String>,
    /// How long a presigned URL works (at most S3's 7 days).
    #[serde(default = "default_presign_expiry", rename = "presign_expiry_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub presign_expiry: Duration,
    /// How long one request to the store may take.
    #[serde(
        default = "default_request_timeout",
        rename = "request_timeout_seconds"
    )]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub request_timeout: Duration,
}

fn default_region() -> String {
    "auto".to_owned()
}

/// Presigned URLs work for an hour unless configured otherwise.
pub const DEFAULT_PRESIGN_EXPIRY: Duration = Duration::from_secs(3600);
/// One request to the store may take 30 s unless configured otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn default_presign_expiry() -> Duration {
    DEFAULT_PRESIGN_EXPIRY
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

impl S3Settings {
    /// What serde cannot say about single values.
    pub fn check(&self) -> Result<(), InvalidSetting> {
        if self.account_id.is_none() && self.endpoint.is_none() {
            return Err(InvalidSetting::new(
                "account_id",
                "or endpoint is required for R2/S3 storage",
            ));
        }
        if self.presign_expiry.is_zero() || self.presign_expiry > MAX_PRESIGN_EXPIRY {
            return Err(InvalidSetting::new(
                "presign_expiry_seconds",
                "must be between 1 and 604800 (7 days)",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(InvalidSetting::new(
                "request_timeout_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("set R2_ACCOUNT_ID (Cloudflare R2) or R2_ENDPOINT (any S3-compatible store)")]
    NoEndpoint,
    #[error("the presigned URL expiry must be between 1 second and 7 days")]
    PresignExpiry,
    #[error("invalid S3 settings")]
    Invalid(#[source] s3::error::S3Error),
}

#[derive(Clone)]
pub struct S3Storage {
    bucket: Box<Bucket>,
    /// Uploads go over this client to presigned URLs (see [`S3Storage::put`]).
    uploads: reqwest::Client,
    public_url: Option<String>,
    presign_expiry_seconds: u32,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket.name())
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    pub fn new(settings: S3Settings) -> Result<Self, S3ConfigError> {
        let region = match (settings.endpoint, settings.account_id) {
            (Some(endpoint), _) => Region::Custom {
                region: settings.region,
                endpoint: endpoint.trim_end_matches('/').to_owned(),
            },
            (None, Some(account_id)) => Region::R2 { account_id },
            (None, None) => return Err(S3ConfigError::NoEndpoint),
        };
        let expiry = settings.presign_expiry.as_secs();
        if expiry == 0 || settings.presign_expiry > MAX_PRESIGN_EXPIRY {
            return Err(S3ConfigError::PresignExpiry);
        }
        let credentials = Credentials::new(
            Some(&settings.access_key),
            Some(settings.secret_key.0.expose_secret()),
            None,
            None,
            None,
        )
        .map_err(|error| S3ConfigError::Invalid(error.into()))?;
        // `with_request_timeout` rebuilds the HTTP client with the timeout (rust-s3's
        // `set_request_timeout` only records it: its reqwest client would keep 60 s).
        let bucket = Bucket::new(&settings.bucket, region, credentials)
            .map_err(S3ConfigError::Invalid)?
            .with_path_style()
            .with_request_timeout(settings.request_timeout)
            .map_err(S3ConfigError::Invalid)?;
        let uploads = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|error| S3ConfigError::Invalid(error.into()))?;
        Ok(Self {
            bucket,
            uploads,
            public_url: settings
                .public_url
                .map(|url| url.trim_end_matches('/').to_owned()),
            presign_expiry_seconds: u32::try_from(expiry).unwrap_or(u32::MAX),
        })
    }
}

impl S3Storage {
    /// The public URL, or a presigned GET URL made now (a local computation: no request).
    async fn url_of(&self, key: &ObjectKey) -> Result<String, StorageError> {
        match &self.public_url {
            Some(base) => Ok(format!("{base}/{}", key.as_str())),
            None => self
                .bucket
                .presign_get(key.as_str(), self.presign_expiry_seconds, None)
                .await
                .map_err(|error| StorageError::Failed(Box::new(error))),
        }
    }
}

/// Whether an answer's status says the store cannot serve now (the same request may succeed
/// later): 5xx, and 429 (R2 and S3 throttle with 503 `SlowDown`, some stores with 429).
fn status_is_transient(status: u16) -> bool {
    status >= 500 || status == 429
}

/// An answer of the store outside 2xx, as an error.
fn unexpected_status(status: u16) -> StorageError {
    let cause = format!("the store answered {status}").into();
    if status_is_transient(status) {
        StorageError::Unavailable(cause)
    } else {
        StorageError::Failed(cause)
    }
}

/// How long an upload URL is valid: it is used at once.
const UPLOAD_URL_SECONDS: u32 = 300;

fn header_value(value: &str) -> Result<HeaderValue, StorageError> {
    HeaderValue::from_str(value).map_err(|error| StorageError::Failed(Box::new(error)))
}

/// An upload that got no answer: unreachable, cut or timed out is `Unavailable`. The URL is
/// left out: its signature lets anyone write that object for a few minutes.
fn upload_error(error: reqwest::Error) -> StorageError {
    let error = error.without_url();
    if error.is_connect() || error.is_timeout() || error.is_request() || error.is_body() {
        StorageError::Unavailable(Box::new(error))
    } else {
        StorageError::Failed(Box::new(error))
    }
}

/// rust-s3's errors: unreachable, timed out or a transient status is `Unavailable`.
fn s3_error(error: S3Error) -> StorageError {
    let transient = match &error {
        S3Error::HttpFailWithBody(status, _) => status_is_transient(*status),
        S3Error::Reqwest(error) => {
            error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
        }
        S3Error::Io(_) => true,
        _ => false,
    };
    if transient {
        StorageError::Unavailable(Box::new(error))
    } else {
        StorageError::Failed(Box::new(error))
    }
}

/// Images larger than this go up in parts (a 4K image is 10–20 MB): one part that fails is
/// sent again alone, and no single request carries the whole image.
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
/// The size of every part but the last (S3 and R2 take 5 MiB to 5 GiB).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// How much of a spooled file is read at once, to checksum a part and to send it.
const FILE_READ_BYTES: usize = 1024 * 1024;

/// What one upload sends: bytes in memory, or a range of a spooled file, read as it is sent
/// (never held whole).
#[derive(Debug, Clone)]
enum UploadBody {
    Bytes(Bytes),
    File {
        path: std::path::PathBuf,
        offset: u64,
        len: u64,
    },
}

fn file_error(error: std::io::Error) -> StorageError {
    StorageError::Failed(Box::new(error))
}

/// `len` bytes of the file at `path` from `offset`, a piece at a time.
fn file_pieces(
    path: std::path::PathBuf,
    offset: u64,
    len: u64,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    futures_util::stream::try_unfold((None::<tokio::fs::File>, len), move |(file, left)| {
        let path = path.clone();
        async move {
            if left == 0 {
                return Ok(None);
            }
            let mut file = match file {
                Some(file) => file,
                None => {
                    let mut file = tokio::fs::File::open(&path).await?;
                    file.seek(std::io::SeekFrom::Start(offset)).await?;
                    file
                }
            };
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(FILE_READ_BYTES);
            let mut piece = vec![0; want];
            file.read_exact(&mut piece).await?;
            Ok(Some((Bytes::from(piece), (Some(file), left - want as u64))))
        }
    })
}

impl UploadBody {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    /// The body's CRC-32 (a spooled range is read once for it).
    async fn crc32(&self) -> Result<u32, StorageError> {
        match self {
            Self::Bytes(bytes) => Ok(crc32fast::hash(bytes)),
            Self::File { path, offset, len } => {
                // One trip to the blocking pool, one buffer.
                let (path, offset, len) = (path.clone(), *offset, *len);
                tokio::task::spawn_blocking(move || -> std::io::Result<u32> {
                    use std::io::{Read as _, Seek as _};
                    let mut file = std::fs::File::open(path)?;
                    file.seek(std::io::SeekFrom::Start(offset))?;
                    let mut range = file.take(len);
                    let mut hasher = crc32fast::Hasher::new();
                    let mut buffer = vec![0; FILE_READ_BYTES];
                    loop {
                        let read = range.read(&mut buffer)?;
                        if read == 0 {
                            return Ok(hasher.finalize());
                        }
                        hasher.update(&buffer[..read]);
                    }
                })
                .await
                .map_err(|crashed| StorageError::Failed(Box::new(crashed)))?
                .map_err(file_error)
            }
        }
    }

    fn into_body(self) -> reqwest::Body {
        match self {
            Self::Bytes(bytes) => reqwest::Body::from(bytes),
            Self::File { path, offset, len } => {
                reqwest::Body::wrap_stream(file_pieces(path, offset, len))
            }
        }
    }

    /// The body cut into parts of [`PART_BYTES`].
    fn parts(&self) -> Vec<UploadBody> {
        let len = self.len();
        (0..len)
            .step_by(PART_BYTES)
            .map(|start| {
                let end = (start + PART_BYTES as u64).min(len);
                match self {
                    Self::Bytes(bytes) => Self::Bytes(bytes.slice(start as usize..end as usize)),
                    Self::File { path, offset, .. } => Self::File {
                        path: path.clone(),
                        offset: offset + start,
                        len: end - start,
                    },
                }
            })
            .collect()
    }
}

impl S3Storage {
    /// One upload of `body` to `key` — a whole object, or with `part` a part of a multipart
    /// upload — and the ETag the store answered.
    ///
    /// A signed upload would hash the whole body twice (rust-s3 sends `Content-MD5` and the
    /// SHA-256 of the payload: 5 ms of CPU per 1.5 MB, more than everything else a generation
    /// does). Instead: a URL presigned for this key with `UNSIGNED-PAYLOAD` and the body's
    /// CRC-32 as a signed `x-amz-checksum-crc32` header (a tenth of a millisecond), which the
    /// store checks against the bytes it receives (`BadDigest` if they differ).
    async fn upload(
        &self,
        key: &ObjectKey,
        content_type: Option<&str>,
        body: UploadBody,
        part: Option<(&str, u32)>,
    ) -> Result<Option<String>, StorageError> {
        let checksum =
            base64::engine::general_purpose::STANDARD.encode(body.crc32().await?.to_be_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-amz-checksum-crc32"),
            header_value(&checksum)?,
        );
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, header_value(content_type)?);
        }
        let queries = part.map(|(upload_id, number)| {
            HashMap::from([
                ("partNumber".to_owned(), number.to_string()),
                ("uploadId".to_owned(), upload_id.to_owned()),
            ])
        });
        let url = self
            .bucket
            .presign_put(
                key.as_str(),
                UPLOAD_URL_SECONDS,
                Some(headers.clone()),
                queries,
            )
            .await
            .map_err(|error| StorageError::Failed(Box::new(error)))?;
        let stored = self
            .uploads
            .put(url)
            .headers(headers)
            // A stream has no length of its own: the store needs it.
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(body.into_body())
            .send()
            .await
            .map_err(upload_error)?;
        if !stored.status().is_success() {
            return Err(unexpected_status(stored.status().as_u16()));
        }
        Ok(stored
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|etag| etag.to_str().ok())
            .map(str::to_owned))
    }

    /// Stores `body` under `key`: one upload, or in parts over [`MULTIPART_THRESHOLD`].
    async fn store(
        &self,
        key: &ObjectKey,
        content_type: &str,
        body: UploadBody,
    ) -> Result<StoredImage, StorageError> {
        if body.len() > MULTIPART_THRESHOLD as u64 {
            self.put_in_parts(key, content_type, &body).await?;
        } else {
            self.upload(key, Some(content_type), body, None).await?;
        }
        Ok(StoredImage {
            url: self.url_of(key).await?,
            url_is_lasting: self.public_url.is_some(),
        })
    }

    /// A multipart upload of `whole` in parts of [`PART_BYTES`] (the last shorter), each
    /// checked by its CRC-32. On any failure (reading a part included) the upload is aborted,
    /// so that no part is left behind (stored, and billed, until a lifecycle rule would remove
    /// it).
    async fn put_in_parts(
        &self,
        key: &ObjectKey,
        content_type: &str,
        whole: &UploadBody,
    ) -> Result<(), StorageError> {
        let started = self
            .bucket
            .initiate_multipart_upload(key.as_str(), content_type)
            .await
            .map_err(s3_error)?;
        let upload_id = started.upload_id;
        let completed = match self.upload_parts(key, &upload_id, whole.parts()).await {
            Ok(parts) => self
                .bucket
                .complete_multipart_upload(key.as_str(), &upload_id, parts)
                .await
                .map(drop)
                .map_err(s3_error),
            Err(error) => Err(error),
        };
        if let Err(error) = completed {
            if let Err(abort) = self.bucket.abort_upload(key.as_str(), &upload_id).await {
                tracing::warn!(
                    error = %abort,
                    "could not abort a failed multipart upload: its parts stay until the bucket's lifecycle rule removes them"
                );
            }
            return Err(error);
        }
        Ok(())
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        bodies: Vec<UploadBody>,
    ) -> Result<Vec<Part>, StorageError> {
        let mut parts = Vec::with_capacity(bodies.len());
        for (index, body) in bodies.into_iter().enumerate() {
            let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let etag = self
                .upload(key, None, body, Some((upload_id, number)))
                .await?
                .ok_or_else(|| {
                    StorageError::Failed("the store answered a part without its ETag".into())
                })?;
            parts.push(Part {
                part_number: number,
                etag,
            });
        }
        Ok(parts)
    }
}

#[async_trait]
impl ObjectStorage for S3Storage {
    #[tracing::instrument(skip_all, fields(key = key.as_str(), bucket = self.bucket.name()))]
    async fn put(
        &self,
        key: &ObjectKey,
        image: &GeneratedImage,
    ) -> Result<StoredImage, StorageError> {
        let body = UploadBody::Bytes(image.bytes().clone());
        self.store(key, image.format().mime_type(), body).await
    }

    /// Read from the file as it is sent (each part, or the whole image under 8 MiB, is read
    /// twice: once for its CRC-32, once to send it), never held whole.
    #[tracing::instrument(skip_all, fields(key = key.as_str(), bucket = self.bucket.name()))]
    async fn put_spooled(
        &self,
        key: &ObjectKey,
        image: &SpooledImage,
    ) -> Result<StoredImage, StorageError> {
        let body = UploadBody::File {
            path: image.file().path().to_owned(),
            offset: 0,
            len: image.len(),
        };
        self.store(key, image.format().mime_type(), body).await
    }

    #[tracing::instrument(skip_all, fields(key = key.as_str(), bucket = self.bucket.name()))]
    async fn fetch(&self, key: &ObjectKey) -> Result<Option<FetchedImage>, StorageError> {
        let response = match self.bucket.get_object(key.as_str()).await {
            Ok(response) if response.status_code() == 404 => return Ok(None),
            Ok(response) if (200..300).contains(&response.status_code()) => response,
            Ok(response) => return Err(unexpected_status(response.status_code())),
            Err(S3Error::HttpFailWithBody(404, _)) => return Ok(None),
            Err(error) => return Err(s3_error(error)),
        };
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let last_modified = header("last-modified")
            .and_then(|date| {
                OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc2822).ok()
            })
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(Some(FetchedImage {
            content_type: header("content-type")
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            last_modified,
            bytes: response.bytes().clone(),
        }))
    }

    async fn url(&self, key: &ObjectKey) -> Result<Option<String>, StorageError> {
        self.url_of(key).await.map(Some)
    }

    /// S3 answers 204 whether or not the object existed.
    #[tracing::instrument(skip_all, fields(key = key.as_str(), bucket = self.bucket.name()))]
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self.bucket.delete_object(key.as_str()).await {
            Ok(response) if (200..300).contains(&response.status_code()) => Ok(()),
            Ok(response) if response.status_code() == 404 => Ok(()),
            Ok(response) => Err(unexpected_status(response.status_code())),
            Err(S3Error::HttpFailWithBody(404, _)) => Ok(()),
            Err(error) => Err(s3_error(error)),
        }
    }

    #[tracing::instrument(skip_all, fields(prefix, bucket = self.bucket.name()))]
    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, StorageError> {
        let pages = self
            .bucket
            .list(prefix.to_owned(), None)
            .await
            .map_err(s3_error)?;
        pages
            .into_iter()
            .flat_map(|page| page.contents)
            .map(|object| {
                let last_modified = OffsetDateTime::parse(
                    &object.last_modified,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|error| StorageError::Failed(Box::new(error)))?;
                Ok(ListedObject {
                    key: ObjectKey::from_stored(object.key),
                    last_modified,
                })
            })
            .collect()
    }
}
