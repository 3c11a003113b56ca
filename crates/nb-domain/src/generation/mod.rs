//! Image generation: what a request may ask for ([`model`]), how it can fail ([`error`]), the
//! ports it goes through ([`ports`]), the service that runs one ([`service`]), the record of
//! them ([`history`]), and a cap on calls in flight to the provider ([`concurrency_limit`]).

pub mod breaker;
pub mod catalog;
pub mod concurrency_limit;
pub mod error;
pub mod history;
pub mod jobs;
pub mod memory_budget;
pub mod model;
pub mod ports;
pub mod service;
pub mod stored;
pub mod tokens;

pub use breaker::*;
pub use catalog::*;
pub use concurrency_limit::*;
pub use error::*;
pub use history::*;
pub use jobs::*;
pub use memory_budget::*;
pub use model::*;
pub use ports::*;
pub use service::*;
pub use stored::*;
pub use tokens::*;
