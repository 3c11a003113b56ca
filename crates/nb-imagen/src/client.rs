//! The HTTP client: one pooled `reqwest::Client`, retries, timeouts and error mapping.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nb_domain::generation::{ImageRequest, ProvidedImage, ProviderError};
use nb_domain::ports::ImageProvider;
use nb_domain::settings::InvalidSetting;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_with::{DurationSeconds, serde_as};
use tokio::time::Instant;

use crate::answer_scanner::{AnswerScanner, ScannedAnswer};
use crate::connections::Connections;
use crate::key_pool::KeyPool;
use crate::response::{ErrorEnvelope, parse_generate_content, parse_predict};
use crate::spool::{SPOOL_AFTER_BYTES, SPOOL_PIECE_BYTES, SpoolFolder, Spools};
use crate::vertex::{ServiceAccountTokens, VertexSettings};
use crate::wire::{GenerateContentRequest, PredictRequest, RequestBody, images_in_order};

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const API_VERSION: &str = "v1beta";
/// Answers larger than this are refused: a 4K PNG in base64 is about 30 MB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Google's API key. `Debug` never shows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct GoogleApiKey(SecretString);

impl GoogleApiKey {
    pub fn new(key: String) -> Self {
        Self(SecretString::from(key))
    }
}

/// `GOOGLE_API_KEYS`: several keys, comma-separated, or the path of a file holding them (one
/// per line or comma-separated), for secrets managers that mount files. `Debug` never shows
/// them.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct GoogleApiKeys(SecretString);

impl fmt::Debug for GoogleApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GoogleApiKeys(…)")
    }
}

impl GoogleApiKeys {
    pub fn new(keys: String) -> Self {
        Self(SecretString::from(keys))
    }

    /// The keys, read from the file when the value names one.
    fn resolve(&self) -> Result<Vec<GoogleApiKey>, InvalidSetting> {
        let value = self.0.expose_secret().trim();
        let path = std::path::Path::new(value);
        let text = if !value.contains(',') && (value.starts_with('/') || value.starts_with('.')) {
            std::fs::read_to_string(path).map_err(|error| {
                InvalidSetting::new(
                    "api_keys",
                    format!("names a file that cannot be read ({})", error.kind()),
                )
            })?
        } else {
            value.to_owned()
        };
        let keys: Vec<GoogleApiKey> = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(|key| GoogleApiKey::new(key.to_owned()))
            .collect();
        if keys.is_empty() {
            return Err(InvalidSetting::new("api_keys", "holds no key"));
        }
        Ok(keys)
    }
}

/// How to reach Google and how patient to be: `[upstream]` in the configuration.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeminiSettings {
    /// Without it (or `api_keys`), generation with live keys answers 503 (test keys work).
    pub api_key: Option<GoogleApiKey>,
    /// A pool of keys, used round-robin (instead of `api_key`, never with it).
    pub api_keys: Option<GoogleApiKeys>,
    /// The API's address, without the version.
    pub base_url: String,
    /// One HTTP attempt, from sending to the last byte of the answer.
    #[serde(rename = "attempt_timeout_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub attempt_timeout: Duration,
    /// Everything, retries and waits included.
    #[serde(rename = "deadline_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub deadline: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; each retry doubles it, with full jitter. Not configurable.
    #[serde(skip)]
    pub initial_backoff: Duration,
    /// Speak HTTP/2 from the first byte on `http://` base URLs (h2c proxies and fakes). Over
    /// HTTPS, HTTP/2 is negotiated anyway (Google offers it), multiplexing calls on a few
    /// connections.
    pub http2_prior_knowledge: bool,
    /// Calls one HTTP/2 connection carries at once before another is opened (Google's front
    /// ends allow about 100 streams per connection).
    pub streams_per_connection: usize,
}

impl Default for GeminiSettings {
    fn default() -> Self {
        Self {
            api_key: None,
            api_keys: None,
            base_url: DEFAULT_BASE_URL.into(),
            attempt_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(120),
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            http2_prior_knowledge: false,
            streams_per_connection: 100,
        }
    }
}

impl GeminiSettings {
    /// The defaults, with `api_key`.
    pub fn new(api_key: GoogleApiKey) -> Self {
        Self {
            api_key: Some(api_key),
            ..Self::default()
        }
    }

    /// The keys of the pool: `api_keys`, or `api_key` as a pool of one; none when neither is
    /// set. Both set is an error naming both.
    pub fn keys(&self) -> Result<Vec<GoogleApiKey>, InvalidSetting> {
        match (&self.api_key, &self.api_keys) {
            (Some(_), Some(_)) => Err(InvalidSetting::new(
                "api_keys",
                "GOOGLE_API_KEY and GOOGLE_API_KEYS are both set: keep one (GOOGLE_API_KEYS holds every key)",
            )),
            (Some(key), None) => Ok(vec![key.clone()]),
            (None, Some(keys)) => keys.resolve(),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Whether a key is set.
    pub fn has_keys(&self) -> bool {
        self.api_key.is_some() || self.api_keys.is_some()
    }

    /// What serde cannot say about single values.
    pub fn check(&self) -> Result<(), InvalidSetting> {
        self.keys()?;
        let base = reqwest::Url::parse(self.base_url.trim_end_matches('/')).ok();
        let usable = base.as_ref().is_some_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.query().is_none()
                && url.fragment().is_none()
        });
        if !usable {
            return Err(InvalidSetting::new(
                "base_url",
                "must be an http:// or https:// URL with a host and no query",
            ));
        }
        for (key, timeout) in [
            ("attempt_timeout_seconds", self.attempt_timeout),
            ("deadline_seconds", self.deadline),
        ] {
            if timeout.is_zero() {
                return Err(InvalidSetting::new(key, "must be at least 1"));
            }
        }
        if self.streams_per_connection == 0 {
            return Err(InvalidSetting::new(
                "streams_per_connection",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Used when `GOOGLE_API_KEY` is not set: every request is `NotConfigured`, with no network
/// call.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnconfiguredImageProvider;

#[async_trait]
impl ImageProvider for UnconfiguredImageProvider {
    async fn generate(&self, _: &ImageRequest) -> Result<ProvidedImage, ProviderError> {
        Err(ProviderError::NotConfigured)
    }
}

/// Talks to Google's Generative Language API.
#[derive(Clone)]
pub struct GeminiImageClient {
    connections: Arc<Connections>,
    target: Target,
    settings: GeminiSettings,
    /// Where large images are spooled; `None`: held in memory.
    spool: Option<SpoolFolder>,
}

/// Which front door, with its credentials.
#[derive(Clone)]
enum Target {
    /// The Gemini API, with a pool of API keys.
    GeminiApi(Arc<KeyPool>),
    /// Vertex AI: the project's models, with a service account's tokens.
    Vertex {
        models_url: String,
        tokens: Arc<ServiceAccountTokens>,
    },
}

/// The credential one attempt carries.
struct Credential {
    /// The pool key's index (Gemini API).
    key_index: Option<usize>,
    name: reqwest::header::HeaderName,
    value: HeaderValue,
}

impl fmt::Debug for GeminiImageClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiImageClient")
            .field("settings", &self.settings)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("no Google API key is set")]
    NoApiKey,
    #[error("the Google API key contains characters that cannot be sent in an HTTP header")]
    InvalidApiKey,
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("Vertex AI needs a service account key file (GOOGLE_APPLICATION_CREDENTIALS)")]
    NoCredentials,
    #[error(transparent)]
    KeyFile(#[from] crate::vertex::KeyFileError),
}

/// One attempt's outcome.
enum Attempt {
    Done(Result<ProvidedImage, ProviderError>),
    /// Google rejected the key used (invalid, or not allowed to call the API).
    KeyRejected,
    /// Worth trying again, after `retry_after` if the provider said so.
    Retry {
        error: ProviderError,
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    GenerateContent,
    Predict,
}

impl GeminiImageClient {
    pub fn new(settings: GeminiSettings) -> Result<Self, ClientBuildError> {
        let keys = settings.keys().map_err(|_| ClientBuildError::NoApiKey)?;
        if keys.is_empty() {
            return Err(ClientBuildError::NoApiKey);
        }
        let headers = keys
            .iter()
            .map(|key| {
                let mut header = HeaderValue::from_str(key.0.expose_secret())
                    .map_err(|_| ClientBuildError::InvalidApiKey)?;
                header.set_sensitive(true);
                Ok(header)
            })
            .collect::<Result<Vec<_>, ClientBuildError>>()?;
        let headers_for_client = HeaderMap::new();
        let headers = headers;
        let prior_knowledge = settings.http2_prior_knowledge;
        let build = move || {
            let mut builder = reqwest::Client::builder();
            if prior_knowledge {
                builder = builder.http2_prior_knowledge();
            }
            builder
                .default_headers(headers_for_client.clone())
                .user_agent(concat!("nanobanana/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
        };
        let first = build().map_err(ClientBuildError::Http)?;
        let connections = Connections::new(first, Box::new(build), settings.streams_per_connection);
        Ok(Self {
            connections: Arc::new(connections),
            target: Target::GeminiApi(Arc::new(KeyPool::new(headers))),
            settings,
            spool: None,
        })
    }

    /// Spools large images to `folder` as they arrive (see [`SpoolFolder`]) when the request
    /// allows it, instead of holding them whole.
    pub fn with_spool(mut self, folder: SpoolFolder) -> Self {
        self.spool = Some(folder);
        self
    }

    /// A client of Vertex AI's models in `vertex`'s project, with the timeouts and retries
    /// of `settings` (its API keys are not used).
    pub fn vertex(
        settings: GeminiSettings,
        vertex: &VertexSettings,
    ) -> Result<Self, ClientBuildError> {
        let path = vertex
            .credentials_file
            .as_deref()
            .ok_or(ClientBuildError::NoCredentials)?;
        let build = || {
            reqwest::Client::builder()
                .user_agent(concat!("nanobanana/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
        };
        let token_http = build().map_err(ClientBuildError::Http)?;
        let tokens =
            ServiceAccountTokens::from_file(path, token_http).map_err(ClientBuildError::KeyFile)?;
        let first = build().map_err(ClientBuildError::Http)?;
        let connections = Connections::new(first, Box::new(build), settings.streams_per_connection);
        Ok(Self {
            connections: Arc::new(connections),
            target: Target::Vertex {
                models_url: vertex.models_url(),
                tokens: Arc::new(tokens),
            },
            settings,
            spool: None,
        })
    }

    /// The pool of keys (for `/readyz`); none for Vertex AI.
    pub fn key_pool(&self) -> Option<Arc<KeyPool>> {
        match &self.target {
            Target::GeminiApi(keys) => Some(keys.clone()),
            Target::Vertex { .. } => None,
        }
    }

    /// The credential for the next attempt.
    async fn credential(&self) -> Result<Credential, ProviderError> {
        match &self.target {
            Target::GeminiApi(keys) => {
                let key = keys.pick().map_err(|_| credentials_rejected())?;
                Ok(Credential {
                    key_index: Some(key.index),
                    name: reqwest::header::HeaderName::from_static("x-goog-api-key"),
                    value: key.header,
                })
            }
            Target::Vertex { tokens, .. } => Ok(Credential {
                key_index: None,
                name: reqwest::header::AUTHORIZATION,
                value: tokens.authorization().await?,
            }),
        }
    }

    fn endpoint(&self, model: &str, method: Method) -> String {
        let verb = match method {
            Method::GenerateContent => "generateContent",
            Method::Predict => "predict",
        };
        match &self.target {
            Target::GeminiApi(_) => format!(
                "{}/{API_VERSION}/models/{model}:{verb}",
                self.settings.base_url.trim_end_matches('/')
            ),
            Target::Vertex { models_url, .. } => format!("{models_url}/{model}:{verb}"),
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .settings
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry));
        // Full jitter: anywhere between half and all of the ceiling.
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    async fn attempt(
        &self,
        url: &str,
        body: &RequestBody,
        method: Method,
        model: &str,
        credential: &Credential,
        spool: Option<&SpoolFolder>,
    ) -> Attempt {
        let lease = self.connections.lease();
        let sent = lease
            .http()
            .post(url)
            .header(credential.name.clone(), credential.value.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, body.len())
            // Images are base64-encoded a piece at a time as they are sent, never whole.
            .body(reqwest::Body::wrap_stream(body.stream()))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Attempt::Done(Err(ProviderError::Timeout)),
            Err(error) => {
                tracing::warn!(error = %error.without_url(), "the provider could not be reached");
                return Attempt::Retry {
                    error: ProviderError::Upstream("the provider could not be reached".into()),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            // Read while it streams in: the image is decoded chunk by chunk (and spooled to
            // disk a piece at a time when that is allowed).
            let spool = spool.filter(|_| method == Method::GenerateContent);
            return match read_answer(response, spool).await {
                Ok((answer, mut spools)) => Attempt::Done(match method {
                    Method::GenerateContent => parse_generate_content(answer, spools.as_mut()),
                    Method::Predict => parse_predict(answer).map(ProvidedImage::from),
                }),
                Err(error) => error.into_attempt(),
            };
        }
        let body = match read_capped(response).await {
            Ok(body) => body,
            Err(error) => return error.into_attempt(),
        };
        let envelope = ErrorEnvelope::parse(&body);
        tracing::warn!(
            status = status.as_u16(),
            google_status = envelope.status.as_deref(),
            google_message = envelope.message.as_deref(),
            "the provider answered with an error"
        );
        match status {
            StatusCode::BAD_REQUEST if envelope.has_reason("API_KEY_INVALID") => {
                Attempt::KeyRejected
            }
            // Imagen refuses a prompt its safety filter blocks with a 400.
            // Google's own message stays in the log: only its status reaches the client.
            StatusCode::BAD_REQUEST if method == Method::Predict => {
                let reason = format!(
                    "the provider refused the prompt ({})",
                    envelope.status.as_deref().unwrap_or("INVALID_ARGUMENT")
                );
                Attempt::Done(Err(ProviderError::ContentRejected { reason }))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Attempt::KeyRejected,
            StatusCode::NOT_FOUND => Attempt::Done(Err(ProviderError::ModelNotFound {
                model: model.to_owned(),
            })),
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                error: ProviderError::RateLimited {
                    retry_after: envelope.retry_delay,
                },
                retry_after: envelope.retry_delay,
            },
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::SERVICE_UNAVAILABLE => Attempt::Retry {
                error: ProviderError::Upstream(format!("the provider answered {status}")),
                retry_after: None,
            },
            StatusCode::GATEWAY_TIMEOUT => Attempt::Retry {
                error: ProviderError::Timeout,
                retry_after: None,
            },
            _ if status.is_client_error() => Attempt::Done(Err(ProviderError::Refused {
                status: status.as_u16(),
            })),
            _ => Attempt::Done(Err(ProviderError::Upstream(format!(
                "the provider answered {status}"
            )))),
        }
    }
}

fn credentials_rejected() -> ProviderError {
    tracing::error!(
        "Google rejected every configured API key: check GOOGLE_API_KEY(S) and that the API is enabled for them"
    );
    ProviderError::CredentialsRejected
}

/// Why an answer's body could not be read whole.
enum BodyError {
    /// The connection broke mid-answer: worth another attempt.
    CutShort,
    /// Final: too large, or no answer in time.
    Final(ProviderError),
}

impl BodyError {
    fn into_attempt(self) -> Attempt {
        match self {
            // The connection broke mid-answer: a transport failure like a refused connection.
            Self::CutShort => {
                tracing::warn!("the provider's answer was cut short");
                Attempt::Retry {
                    error: ProviderError::Upstream("the provider's answer was cut short".into()),
                    retry_after: None,
                }
            }
            Self::Final(error) => Attempt::Done(Err(error)),
        }
    }
}

/// The body's next chunk, `None` at its end; `read` counts the bytes so far, up to
/// [`MAX_RESPONSE_BYTES`].
async fn next_chunk(
    response: &mut reqwest::Response,
    read: &mut usize,
) -> Result<Option<bytes::Bytes>, BodyError> {
    let chunk = match response.chunk().await {
        Ok(Some(chunk)) => chunk,
        Ok(None) => return Ok(None),
        Err(error) if error.is_timeout() => {
            return Err(BodyError::Final(ProviderError::Timeout));
        }
        Err(_) => return Err(BodyError::CutShort),
    };
    *read += chunk.len();
    if *read > MAX_RESPONSE_BYTES {
        let too_large = ProviderError::Upstream("the provider's answer is too large".into());
        return Err(BodyError::Final(too_large));
    }
    Ok(Some(chunk))
}

/// Hands the body to `sink` chunk by chunk as it arrives, up to [`MAX_RESPONSE_BYTES`].
async fn read_body(
    mut response: reqwest::Response,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), BodyError> {
    let mut read = 0;
    while let Some(chunk) = next_chunk(&mut response, &mut read).await? {
        sink(&chunk);
    }
    Ok(())
}

/// A successful answer, scanned as it streams in (see [`AnswerScanner`]); with a spool
/// folder, its images are written there a piece at a time as they are decoded.
async fn read_answer(
    mut response: reqwest::Response,
    spool: Option<&SpoolFolder>,
) -> Result<(ScannedAnswer, Option<Spools>), BodyError> {
    let expected_len = response.content_length().map_or(0, |n| n as usize);
    let scanner = AnswerScanner::new(expected_len.min(MAX_RESPONSE_BYTES));
    let Some(folder) = spool else {
        let mut scanner = scanner;
        read_body(response, |chunk| scanner.push(chunk)).await?;
        return Ok((scanner.finish(), None));
    };
    let mut scanner = scanner.spilling(SPOOL_AFTER_BYTES, SPOOL_PIECE_BYTES);
    let mut spools = Spools::new(folder);
    let mut read = 0;
    while let Some(chunk) = next_chunk(&mut response, &mut read).await? {
        scanner.push(&chunk);
        for (index, piece) in scanner.take_spills() {
            spools.write(index, piece).await.map_err(BodyError::Final)?;
        }
    }
    Ok((scanner.finish(), Some(spools)))
}

/// An error answer, whole (they are small).
async fn read_capped(response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    let expected_len = response.content_length().map_or(16 * 1024, |n| n as usize);
    let mut body = Vec::with_capacity(expected_len.min(MAX_RESPONSE_BYTES));
    read_body(response, |chunk| body.extend_from_slice(chunk)).await?;
    Ok(body)
}

#[async_trait]
impl ImageProvider for GeminiImageClient {
    #[tracing::instrument(skip_all, fields(model = %request.model))]
    async fn generate(&self, request: &ImageRequest) -> Result<ProvidedImage, ProviderError> {
        let model = request.model.spec().google_id();
        if let Some(ratio) = request
            .aspect_ratio
            .filter(|ratio| !request.model.spec().aspect_ratios.contains(ratio))
        {
            return Err(ProviderError::Unsupported {
                field: "size",
                message: format!("{model} does not offer the aspect ratio {ratio}; pick another"),
            });
        }
        let (method, body) = if request.model.is_imagen() {
            if !request.images.is_empty() || !request.history.is_empty() {
                return Err(ProviderError::Unsupported {
                    field: "model",
                    message: format!("{model} cannot edit images; pick a Gemini model"),
                });
            }
            (
                Method::Predict,
                serde_json::to_vec(&PredictRequest::new(
                    &request.text,
                    request.aspect_ratio,
                    request.image_size,
                ))
                .map(RequestBody::json),
            )
        } else {
            let content = GenerateContentRequest::new(
                &request.text,
                request.aspect_ratio,
                request.image_size,
                &request.images,
                &request.history,
            );
            // Vertex AI makes the image in the format asked for; the Gemini API has no such
            // field (the gateway converts).
            let content = match &self.target {
                Target::Vertex { .. } => content.with_output(request.output),
                Target::GeminiApi(_) => content,
            };
            let images = images_in_order(&request.history, &request.images);
            (
                Method::GenerateContent,
                RequestBody::generate_content(&content, &images),
            )
        };
        let body = body.map_err(|error| ProviderError::Upstream(error.to_string()))?;
        let url = self.endpoint(model, method);
        let deadline = Instant::now() + self.settings.deadline;
        // Large images go to disk as they arrive, unless the image is needed whole.
        let spool = self.spool.as_ref().filter(|_| request.may_spool);

        let mut retries = 0;
        loop {
            let credential = self.credential().await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt_timeout = self.settings.attempt_timeout.min(remaining);
            let started = Instant::now();
            let attempt = tokio::time::timeout(
                attempt_timeout,
                self.attempt(&url, &body, method, model, &credential, spool),
            )
            .await
            .unwrap_or(Attempt::Done(Err(ProviderError::Timeout)));
            let outcome = match &attempt {
                Attempt::Done(Ok(_)) => "ok",
                Attempt::KeyRejected => "upstream_auth_failed",
                Attempt::Done(Err(error)) | Attempt::Retry { error, .. } => error.code(),
            };
            metrics::histogram!(
                "upstream_request_duration_seconds",
                "model" => model.to_owned(),
                "outcome" => outcome
            )
            .record(started.elapsed().as_secs_f64());
            if let Some(index) = credential.key_index {
                metrics::counter!(
                    "upstream_key_requests_total",
                    "key" => index.to_string(),
                    "outcome" => outcome
                )
                .increment(1);
            }
            let (error, retry_after) = match (attempt, &self.target, credential.key_index) {
                (Attempt::Done(Ok(mut provided)), Target::Vertex { .. }, _) => {
                    provided.encoded_as_asked = request
                        .output
                        .is_some_and(|output| provided.image.format() == output.format);
                    return Ok(provided);
                }
                (Attempt::Done(result), ..) => return result,
                // Out of the pool, and the request goes on with the next key at once; the last
                // key that serves is never taken out (the operator may fix it without a
                // restart): the request fails instead.
                (Attempt::KeyRejected, Target::GeminiApi(keys), Some(index))
                    if keys.another_usable(index) =>
                {
                    keys.reject(index);
                    continue;
                }
                (Attempt::KeyRejected, Target::Vertex { tokens, .. }, _) => {
                    // The next call fetches a new token.
                    tokens.forget().await;
                    return Err(credentials_rejected());
                }
                (Attempt::KeyRejected, ..) => return Err(credentials_rejected()),
                (Attempt::Retry { error, retry_after }, ..) => (error, retry_after),
            };
            let mut another_key = false;
            if let (
                ProviderError::RateLimited { retry_after },
                Target::GeminiApi(keys),
                Some(index),
            ) = (&error, &self.target, credential.key_index)
            {
                keys.rest(index, *retry_after);
                another_key = keys.another_usable(index);
            }
            if retries >= self.settings.max_retries {
                return Err(error);
            }
            // Another key serves at once; the same key after the wait Google asked for (or a
            // backoff).
            let wait = if another_key {
                Duration::ZERO
            } else {
                retry_after.unwrap_or_else(|| self.backoff(retries))
            };
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            retries += 1;
            metrics::counter!("upstream_retries_total", "model" => model.to_owned()).increment(1);
            tracing::warn!(retry = retries, key_index = credential.key_index, wait_ms = wait.as_millis() as u64, error = %error, "retrying the provider");
            tokio::time::sleep(wait).await;
        }
    }
}
