//! Vertex AI: where a Google Cloud project's models are called, and the OAuth 2.0 access
//! tokens of a service account (the JWT-bearer grant google-auth makes: a JWT signed RS256
//! with the key file's private key, `aud` the key file's `token_uri`, posted to it), cached and
//! refreshed before they expire. Neither the key nor a token is ever logged.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nb_domain::generation::ProviderError;
use nb_domain::settings::InvalidSetting;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Google's token endpoint, what google-auth uses when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The scope asked for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A token is refreshed this long before it expires (google-auth's threshold: 3 min 45 s).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(225);

/// `[vertex]`: the project and region models with `provider = "vertex"` are called in.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VertexSettings {
    /// `VERTEX_PROJECT`: the Google Cloud project id.
    pub project: Option<String>,
    /// `VERTEX_LOCATION`: `global` (the default) or a region such as `us-central1`.
    pub location: String,
    /// `GOOGLE_APPLICATION_CREDENTIALS`: the service account's JSON key file.
    pub credentials_file: Option<PathBuf>,
    /// `VERTEX_BASE_URL`: replaces the derived `https://{location}-aiplatform.googleapis.com`
    /// (private endpoints, proxies, tests).
    pub base_url: Option<String>,
}

impl Default for VertexSettings {
    fn default() -> Self {
        Self {
            project: None,
            location: "global".to_owned(),
            credentials_file: None,
            base_url: None,
        }
    }
}

impl VertexSettings {
    /// Whether Vertex AI is configured at all.
    pub fn is_set(&self) -> bool {
        self.project.is_some() || self.credentials_file.is_some()
    }

    /// What serde cannot say: a project and a key file go together, and names are plain.
    pub fn check(&self) -> Result<(), InvalidSetting> {
        if !self.is_set() {
            return Ok(());
        }
        let plain = |value: &str| {
            !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        match &self.project {
            Some(project) if plain(project) => {}
            Some(_) => return Err(InvalidSetting::new("project", "must be a project id")),
            None => {
                return Err(InvalidSetting::new(
                    "project",
                    "is required with GOOGLE_APPLICATION_CREDENTIALS",
                ));
            }
        }
        if !plain(&self.location) {
            return Err(InvalidSetting::new("location", "must be a location id"));
        }
        if self.credentials_file.is_none() {
            return Err(InvalidSetting::new(
                "credentials_file",
                "is required with VERTEX_PROJECT (a service account's JSON key file)",
            ));
        }
        if let Some(base) = &self.base_url {
            let url = reqwest::Url::parse(base).ok();
            if !url
                .is_some_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            {
                return Err(InvalidSetting::new("base_url", "must be an http(s) URL"));
            }
        }
        Ok(())
    }

    /// Where the project's models are: `{base}/v1/projects/{project}/locations/{location}`.
    pub fn models_url(&self) -> String {
        let base = match &self.base_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None if self.location == "global" => "https://aiplatform.googleapis.com".to_owned(),
            None => format!("https://{}-aiplatform.googleapis.com", self.location),
        };
        format!(
            "{base}/v1/projects/{}/locations/{}/publishers/google/models",
            self.project.as_deref().unwrap_or_default(),
            self.location
        )
    }
}

/// The fields of a service account's JSON key file this client uses.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: SecretString,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the service account key file {path}: {kind}")]
    Read {
        path: String,
        kind: std::io::ErrorKind,
    },
    #[error("the service account key file {path} is not a service account's JSON key")]
    NotAKey { path: String },
    #[error("the private key in the service account key file {path} is not an RSA PEM key")]
    BadPrivateKey { path: String },
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    expires_in: Option<u64>,
}

struct CachedToken {
    header: HeaderValue,
    refresh_at: Instant,
}

/// A service account's access tokens, one at a time, shared by every call.
pub struct ServiceAccountTokens {
    client_email: String,
    key_id: Option<String>,
    signing_key: jsonwebtoken::EncodingKey,
    token_uri: String,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    pub fn from_file(path: &std::path::Path, http: reqwest::Client) -> Result<Self, KeyFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| KeyFileError::Read {
            path: shown.clone(),
            kind: error.kind(),
        })?;
        let key: KeyFile = serde_json::from_str(&text)
            .ok()
            .filter(|key: &KeyFile| {
                key.kind
                    .as_deref()
                    .is_none_or(|kind| kind == "service_account")
            })
            .ok_or_else(|| KeyFileError::NotAKey {
                path: shown.clone(),
            })?;
        let signing_key =
            jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose_secret().as_bytes())
                .map_err(|_| KeyFileError::BadPrivateKey { path: shown })?;
        Ok(Self {
            client_email: key.client_email,
            key_id: key.private_key_id,
            signing_key,
            token_uri: key
                .token_uri
                .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
            http,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// `Authorization: Bearer <token>`, from the cache while it is fresh (one fetch at a
    /// time: callers arriving meanwhile wait for it).
    pub async fn authorization(&self) -> Result<HeaderValue, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.header.clone());
        }
        let fresh = self.fetch().await?;
        let header = fresh.header.clone();
        *cached = Some(fresh);
        Ok(header)
    }

    /// Forgets the cached token (Google refused it): the next call fetches another.
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<CachedToken, ProviderError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: &self.client_email,
            scope: CLOUD_PLATFORM_SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        let assertion = jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .map_err(|_| ProviderError::CredentialsRejected)?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let answer = self
            .http
            .post(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(error = %error.without_url(), "the OAuth token endpoint could not be reached");
                ProviderError::Upstream("the OAuth token endpoint could not be reached".into())
            })?;
        let status = answer.status();
        if !status.is_success() {
            tracing::error!(
                status = status.as_u16(),
                client_email = %self.client_email,
                "Google refused the service account's token request: check GOOGLE_APPLICATION_CREDENTIALS and the account's roles"
            );
            return Err(if status.is_server_error() {
                ProviderError::Upstream(format!("the OAuth token endpoint answered {status}"))
            } else {
                ProviderError::CredentialsRejected
            });
        }
        let token: TokenAnswer = answer.json().await.map_err(|_| {
            ProviderError::Upstream("the OAuth token endpoint's answer is not a token".into())
        })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.access_token.expose_secret()))
                .map_err(|_| ProviderError::Upstream("an access token that is not text".into()))?;
        value.set_sensitive(true);
        tracing::debug!(
            lifetime_s = lifetime.as_secs(),
            "fetched a Vertex AI access token"
        );
        Ok(CachedToken {
            header: value,
            refresh_at: Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_derived_from_the_location_unless_a_base_is_given() {
        let mut settings = VertexSettings {
            project: Some("banana-prod".into()),
            ..VertexSettings::default()
        };
        assert_eq!(
            settings.models_url(),
            "https://aiplatform.googleapis.com/v1/projects/banana-prod/locations/global/publishers/google/models"
        );
        settings.location = "us-central1".into();
        assert_eq!(
            settings.models_url(),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/banana-prod/locations/us-central1/publishers/google/models"
        );
        settings.base_url = Some("http://127.0.0.1:9/".into());
        assert!(
            settings
                .models_url()
                .starts_with("http://127.0.0.1:9/v1/projects/banana-prod/locations/us-central1/")
        );
    }

    #[test]
    fn a_service_accounts_key_is_never_printed() {
        let file = std::env::temp_dir().join(format!("nb-sa-{}.json", std::process::id()));
        let key = include_str!("../../nanobanana/tests/fixtures/vertex-test-service-account.json");
        std::fs::write(&file, key).unwrap();
        let tokens = ServiceAccountTokens::from_file(&file, reqwest::Client::new()).unwrap();
        let shown = format!("{tokens:?}");
        std::fs::remove_file(&file).unwrap();
        assert!(shown.contains("nanobanana-test@test-project.iam.gserviceaccount.com"));
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains("MIIE"),
            "{shown}"
        );
    }

    #[test]
    fn a_project_needs_a_key_file_and_the_other_way_round() {
        let project_only = VertexSettings {
            project: Some("p".into()),
            ..VertexSettings::default()
        };
        assert_eq!(project_only.check().unwrap_err().key, "credentials_file");
        let key_only = VertexSettings {
            credentials_file: Some("/k.json".into()),
            ..VertexSettings::default()
        };
        assert_eq!(key_only.check().unwrap_err().key, "project");
        assert!(VertexSettings::default().check().is_ok());
    }
}
