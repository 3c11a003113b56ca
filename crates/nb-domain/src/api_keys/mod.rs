//! API keys: what they are ([`model`]), where they are kept ([`ports`]), how key operations
//! fail ([`error`]), the service that issues, lists, revokes and checks them ([`service`]),
//! and a caching decorator over their repository for the hot path of every generation
//! ([`cache`]).

pub mod cache;
pub mod error;
pub mod model;
pub mod ports;
pub mod service;

pub use cache::*;
pub use error::*;
pub use model::*;
pub use ports::*;
pub use service::*;
