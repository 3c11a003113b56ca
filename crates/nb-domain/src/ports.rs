//! Every port in one place: what the domain needs from the outside world, as narrow traits.
//! Each is defined beside the feature it serves; this module only gathers them for adapters.
//!
//! Each method's doc says what it MUST return on each outcome; adapters are tested against
//! those contracts (see `nb-db`'s contract suite and the rate-limiter contract in
//! `nb-testkit`).

pub use crate::accounts::ports::*;
pub use crate::admin::ports::*;
pub use crate::api_keys::ports::*;
pub use crate::generation::jobs::ports::*;
pub use crate::generation::ports::*;
pub use crate::idempotency::ports::*;
pub use crate::quota::ports::*;
pub use crate::rate_limit::ports::*;
pub use crate::readiness::*;
pub use crate::system::*;
pub use crate::webhooks::ports::*;
