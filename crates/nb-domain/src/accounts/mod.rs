//! Accounts: who a user is and how they prove it ([`model`]), where accounts and sessions are
//! kept ([`ports`]), registration, login, sessions and password changes ([`service`]), and
//! erasure at the owner's request ([`erasure`]).

pub mod erasure;
pub mod model;
pub mod ports;
pub mod service;

pub use erasure::*;
pub use model::*;
pub use ports::*;
pub use service::*;
