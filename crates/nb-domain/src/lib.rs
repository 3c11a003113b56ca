//! NanoBanana's domain: what an account, an API key, a generation and usage are, the rules
//! that govern them, and the ports through which the outside world is reached.
//!
//! Nothing here performs I/O or knows about HTTP or SQL: adapters implement the traits in
//! [`ports`], and `nb-http` wires them into the services in [`accounts`], [`api_keys`] and
//! [`generation`].

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod encoding;
pub mod erasure;
pub mod error;
pub mod generation;
pub mod idempotency;
pub mod pagination;
pub mod ports;
pub mod quota;
pub mod rate_limit;
pub mod text;
pub mod usage;
pub mod user;

pub use error::RepositoryError;
