//! NanoBanana's domain: what an account, an API key, a generation and usage are, the rules
//! that govern them, and the ports through which the outside world is reached.
//!
//! Nothing here performs I/O or knows about HTTP or SQL. Each feature is a module with its
//! model, its ports (the traits adapters implement) and its service (what the HTTP adapter
//! calls); [`ports`] gathers every port. The `nanobanana` binary wires adapters into the
//! services.
//!
//! Inside this crate, code imports a name from the module that defines it, never through a
//! feature's re-exports: the module graph stays free of cycles.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod encoding;
pub mod error;
pub mod generation;
pub mod idempotency;
pub mod money;
pub mod pagination;
pub mod ports;
pub mod quota;
pub mod rate_limit;
pub mod readiness;
pub mod settings;
pub mod system;
pub mod text;
pub mod usage;
pub mod webhooks;

pub use error::RepositoryError;
