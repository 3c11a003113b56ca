//! Per-minute rate limits: what is counted ([`model`]), the port counts go through
//! ([`ports`]), and the deployment's limits applied to requests ([`throttle`]).

pub mod model;
pub mod ports;
pub mod throttle;

pub use model::*;
pub use ports::*;
pub use throttle::*;
