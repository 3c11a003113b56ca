//! Why the server could not start.

use nb_db::ConnectError;
use nb_domain::settings::InvalidSetting;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error("cannot read or create the JWT secret file {path}")]
    JwtSecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or create the encryption key file {path}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the JWT secret in the data folder {0}: delete it to have a new one made")]
    JwtSecretTooShort(String),
    #[error("cannot prepare password hashing")]
    PasswordHashing(#[source] nb_domain::accounts::PasswordHashingError),
    #[error("cannot set up the image provider")]
    ImageProvider(#[source] nb_imagen::ClientBuildError),
    #[error("images are to be stored in R2/S3, but its settings are missing")]
    NoS3Settings,
    #[error("cannot set up image storage")]
    Storage(#[source] nb_storage::S3ConfigError),
    #[error("NB_OPENAI_MODEL_MAP: {0}")]
    OpenAiModelMap(#[source] InvalidSetting),
    #[error("the model catalog (NB_MODELS_FILE, NB_IMAGE_MODELS): {0}")]
    ModelCatalog(#[source] InvalidSetting),
    #[error(transparent)]
    Redis(#[from] nb_redis::InvalidRedisUrl),
    #[error("{0:?} is not an email address")]
    NotAnEmail(String),
    #[error("the database failed")]
    Repository(#[source] nb_domain::RepositoryError),
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}
