//! The Google image-model client: implements the domain's `ImageProvider` port over Google's
//! Generative Language REST API.
//!
//! Models named `imagen-*` go to `models/{model}:predict`; every other model (the Gemini
//! "Nano Banana" family) to `models/{model}:generateContent`. Request bodies match what the
//! official SDKs send field for field (Google rejects unknown fields); responses are parsed
//! leniently (camelCase or snake_case, any base64 flavour). Failures are retried with
//! exponential backoff and jitter on 429/500/503/504 and connection errors, honouring
//! Google's `RetryInfo.retryDelay`, within a per-attempt timeout and an overall deadline.
//!
//! Test-mode keys get [`TestModeImages`] instead: deterministic images made locally.

mod answer_scanner;
mod client;
mod connections;
mod key_pool;
mod response;
mod router;
mod spool;
mod test_mode;
mod vertex;
mod wire;

pub use test_mode::{MAGIC_MARKERS, TestModeImages};

pub use client::{
    ClientBuildError, DEFAULT_BASE_URL, GeminiImageClient, GeminiSettings, GoogleApiKey,
    GoogleApiKeys, UnconfiguredImageProvider,
};
pub use key_pool::{DEFAULT_REST, KeyPool};
pub use router::ProviderRouter;
pub use spool::{SPOOL_AFTER_BYTES, SPOOL_PIECE_BYTES, SpoolFolder};
pub use vertex::{KeyFileError, ServiceAccountTokens, VertexSettings};
