//! `Idempotency-Key`: what is kept ([`model`]), where ([`ports`]), and the service that claims,
//! completes and releases entries ([`service`]).

pub mod model;
pub mod ports;
pub mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
