//! The operator's view of accounts: what it shows and changes ([`model`]), where it is kept
//! ([`ports`]), and the service admin routes call ([`service`]).

pub mod model;
pub mod ports;
pub mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
