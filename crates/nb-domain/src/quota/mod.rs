//! Quotas: what a quota is and where one stands ([`model`]), the rules of a reservation
//! ([`reservation`]), and where counters are kept ([`ports`]).

pub mod model;
pub mod ports;
pub mod reservation;

pub use model::*;
pub use ports::*;
pub use reservation::*;
