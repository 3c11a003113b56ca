//! Per-minute rate limits: what is counted ([`model`]), the port counts go through
//! ([`ports`]), leasing a shared allowance so that an instance decides most requests alone
//! ([`lease`]), and the deployment's limits applied to requests ([`throttle`]).

pub mod lease;
pub mod model;
pub mod ports;
pub mod throttle;

pub use lease::*;
pub use model::*;
pub use ports::*;
pub use throttle::*;
