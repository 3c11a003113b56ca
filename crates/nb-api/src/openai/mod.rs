//! The OpenAI-compatible surface: `POST /v1/images/generations`, `POST /v1/images/edits`,
//! `GET /v1/models` and `GET /v1/models/{model}`, in OpenAI's request, response and error
//! shapes, so the official SDKs (and everything built on them) work by changing `base_url`
//! and the key. The same services as the native routes do the work: same keys, limits,
//! storage, history and usage.
//!
//! What each OpenAI field does here is in the README ("Use it from the OpenAI SDKs").

pub mod answer;
pub mod error;
pub mod images;
pub mod model_map;
pub mod models;
pub mod multipart;
pub mod stream;
