//! Where images go: implementations of the domain's `ObjectStorage` port.
//!
//! - [`S3Storage`]: Cloudflare R2 or any S3-compatible store (rust-s3, path-style requests),
//!   answering with `<public base URL>/<key>` or, without a public URL, a presigned GET URL.
//! - [`LocalStorage`]: files under the data folder, served by the app itself.
//! - [`InlineStorage`]: no storage at all, a `data:` URL holding the image.

mod inline;
mod local;
mod s3;
#[cfg(feature = "testing")]
pub mod testing;

pub use inline::InlineStorage;
pub use local::LocalStorage;
pub use s3::{
    DEFAULT_PRESIGN_EXPIRY, DEFAULT_REQUEST_TIMEOUT, MAX_PRESIGN_EXPIRY, S3ConfigError, S3Secret,
    S3Settings, S3Storage,
};
